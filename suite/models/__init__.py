"""Model references and where their weights come from (packaged GGUF, hub id, local dir)."""

from .sources import ModelSource, known_models, resolve_model

__all__ = ["ModelSource", "known_models", "resolve_model"]
