"""Real architecture configs ("shape models") for latency and memory with random weights."""
