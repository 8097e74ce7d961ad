"""The slow suite."""
