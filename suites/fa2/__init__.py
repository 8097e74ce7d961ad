"""The fa2 suite."""
