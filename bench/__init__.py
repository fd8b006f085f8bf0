"""Benchmarks of the webhook pipeline: see bench/README.md (`uv run python -m bench.run`)."""
