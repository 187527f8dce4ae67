"""The operator's surface: health, metrics, status, scripts and benchmarks."""
