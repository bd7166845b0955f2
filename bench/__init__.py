"""Benchmarks of mbrl_ros (long runs; run as ``python -m bench.<name>``)."""
