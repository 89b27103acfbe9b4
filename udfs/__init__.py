"""Spark bindings: pandas UDFs that wrap recllm inference."""
