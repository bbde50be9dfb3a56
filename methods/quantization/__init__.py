"""Weight-only quantization: RTN, GPTQ, AWQ, all stored packed (``QuantLinear``)."""
