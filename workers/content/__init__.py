"""Content generation: prompt building, LLM providers, SEO/quality analysis, the
generated-content store, and the plain functions the content tasks wrap (``pipeline``)."""
