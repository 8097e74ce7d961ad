"""Model suites run by the harness: slow, fa2, quantization (and benchmark), over every model."""
