"""Reproducible benchmarks; each script writes JSON + Markdown (+ PNG with matplotlib) to bench/results/."""
