"""Shared by the GPU kernel tests: run a module call captured in a CUDA graph."""

import torch


def graph_replay(call):
    """Capture ``call()`` in a CUDA graph, replay it once, return its (static) output."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = call()
    graph.replay()
    torch.cuda.synchronize()
    return out
