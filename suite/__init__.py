"""sparsebench: one harness, one results store, one leaderboard for LLM efficiency methods.

Importing this package is kept lean on purpose: it must not import torch.cuda state,
MLflow, or any plugin. Those are loaded only when a command needs them.
"""

__version__ = "0.1.0"
