"""Re-embedding: deterministic chunking, the offline embedding model, the Redis vector
store, and the plain functions the embedding tasks wrap (``pipeline``)."""
