"""Offline evaluation: metrics, baselines, the evaluation stage, the benchmark and prompt sensitivity."""
