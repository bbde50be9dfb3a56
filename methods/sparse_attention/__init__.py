"""Sparse attention: which keys each query attends changes, the weights and the KV cache do
not (StreamingLLM, MInference, Quest, TidalDecode), through one registered attention function."""
