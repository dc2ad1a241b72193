"""benchmarks package of the CLIS toolkit."""
