"""Worker Mesh core: settings, errors, Redis key layout and the embedded Redis.

This is the bottom layer: every other package (events, chains, workers, gpu_pool,
monitoring) may import it; it imports none of them.
"""

__version__ = "0.1.0"
