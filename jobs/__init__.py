"""Entry points: `python -m jobs.<name> --ds YYYY-MM-DD --config FILE`."""
