"""`mesh demo`: the whole mesh on one machine, on generated customers and content."""
