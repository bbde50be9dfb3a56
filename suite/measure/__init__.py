"""Collectors for latency, memory, model size and sparsity: the only code that times anything."""
