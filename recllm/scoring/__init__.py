"""Nightly scoring: the stage's DataFrame plans (driver) and batch scoring (executors)."""
