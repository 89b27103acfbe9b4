"""Upstream data: the synthetic shop, public dataset loaders, and landing days into the raw tables."""
