"""The quantization suite."""
