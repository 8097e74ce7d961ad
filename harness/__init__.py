"""harness: CI and regression tracking for ML model correctness and performance."""

from __future__ import annotations

__version__ = "0.1.0"
