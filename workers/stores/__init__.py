"""Stores: artifacts (local directory or S3), latest results and customer profiles
(Redis). Each adapter translates its client's errors into ``mesh.errors``."""
