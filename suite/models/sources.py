"""Model sources: one interface for the packaged default model, hub ids and local directories.

``resolve_model(name)`` decides which source a name refers to without loading anything,
so a bad name fails fast with a clear message before any work starts.
"""

from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from ..errors import UsageError, unknown_name

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelSource(ABC):
    """Something that can produce ``(model, tokenizer)``."""

    name: str  # canonical name written into the spec
    random_weights = False  # True for shape models: no accuracy may be measured on them

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Provenance written into the record (package + hash, hub id + revision, path)."""

    @abstractmethod
    def load(self, dtype: Any, device: str) -> tuple[Any, Any]:
        """Load the model in eval mode on ``device`` with ``dtype``, and its tokenizer."""

    def check(self) -> None:  # noqa: B027 - optional hook, most sources need no check
        """Cheap availability check run before any work (raise ``UsageError`` if unusable)."""

    def _finish(self, model: Any, device: str) -> Any:
        model.eval()
        model.requires_grad_(False)
        return model.to(device)


class LocalDir(ModelSource):
    """A transformers-format directory on disk (for example one written by ``--save-model``)."""

    def __init__(self, path: Path):
        self.path = path.expanduser().resolve()
        self.name = str(self.path)

    def describe(self) -> dict[str, Any]:
        return {"kind": "local", "path": self.name}

    def load(self, dtype: Any, device: str) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(self.path, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(self.path)
        return self._finish(model, device), tokenizer


class HubModel(ModelSource):
    """A hub id such as ``meta-llama/Llama-3.2-1B``, loaded from the local HF cache when offline."""

    def __init__(self, repo_id: str, revision: str | None = None):
        self.repo_id = repo_id
        self.revision = revision
        self.name = repo_id

    def describe(self) -> dict[str, Any]:
        return {"kind": "hub", "id": self.repo_id, "revision": self.revision}

    def check(self) -> None:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(self.repo_id, "config.json", revision=self.revision)
        if isinstance(cached, str):
            return
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        if offline or not _hub_reachable():
            raise UsageError(
                f"The hub model '{self.repo_id}' is not in the local Hugging Face cache and the hub "
                f"is {'disabled (HF_HUB_OFFLINE)' if offline else 'not reachable'}. Download it where the "
                "hub is reachable and copy the cache (HF_HOME), or pass a local model directory, "
                "or use the embedded default model with --model llama."
            )

    def load(self, dtype: Any, device: str) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
        errors = []
        for local_only in (True,) if offline else (True, False):
            try:
                kw = {"revision": self.revision, "local_files_only": local_only}
                model = AutoModelForCausalLM.from_pretrained(self.repo_id, dtype=dtype, **kw)
                tokenizer = AutoTokenizer.from_pretrained(self.repo_id, **kw)
                return self._finish(model, device), tokenizer
            except OSError as exc:
                errors.append(str(exc).splitlines()[0])
        raise UsageError(
            f"Could not load the hub model '{self.repo_id}': it is not in the local Hugging Face "
            f"cache and the hub could not be reached ({errors[-1]}). Download it where the hub is "
            "reachable (huggingface-cli download ...) and copy the cache, or pass a local "
            "directory, or use the embedded default model with --model llama."
        )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick DNS + TCP probe of the hub endpoint (instead of the client's minute of retries)."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def known_models() -> dict[str, str]:
    """Alias -> one-line description, for ``sparsebench ls models``."""
    from .packaged import PACKAGED
    from .shape import shape_names

    out = {}
    for model in PACKAGED.values():
        for alias in model.aliases:
            out[alias] = model.description
    for name in shape_names():
        out[name] = "real architecture config, random weights (latency and memory only)"
    return out


def resolve_model(name: str, revision: str | None = None) -> ModelSource:
    """Map a user's model name to a source, or raise a ``UsageError`` that says what is allowed."""
    from .packaged import PACKAGED, PackagedGGUF
    from .shape import PREFIX, ShapeModel

    if name.startswith(PREFIX):
        return ShapeModel(name)
    for model in PACKAGED.values():
        if name in model.aliases:
            return PackagedGGUF(model)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise UsageError(
                f"The model path '{name}' exists but is not a transformers model directory "
                "(a folder with config.json and weights). Pass such a folder, a hub id "
                f"(org/name), or one of the embedded models: {', '.join(sorted(known_models()))}."
            )
        return LocalDir(path)
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
    if looks_like_path:
        raise UsageError(
            f"The model directory '{name}' does not exist. Pass an existing transformers model "
            f"directory, a hub id (org/name), or one of: {', '.join(sorted(known_models()))}."
        )
    if HUB_ID.match(name):
        return HubModel(name, revision)
    raise unknown_name("model", name, known_models())
