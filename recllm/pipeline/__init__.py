"""The nightly data stages before the model: ingest, item features, objectives and prompt tables."""
