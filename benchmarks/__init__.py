"""Measured benchmarks (not timed tests): each module prints JSON with medians over
repeats and a baseline measured in the same run. Run them all with
``python -m benchmarks.run_all``; see docs/benchmarks.md."""
