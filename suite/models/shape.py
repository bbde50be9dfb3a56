"""Shape models: a real architecture config built with random weights on the device.

Latency and memory of a large model do not depend on its trained values, so a Llama-3.1-8B
config with random weights gives true figures without the weights. Accuracy does, so the
harness never evaluates tasks on a shape model and the record says so.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from ..errors import unknown_name
from .sources import ModelSource

PREFIX = "shape:"


def shape_names() -> list[str]:
    folder = resources.files(__package__) / "shapes"
    return sorted(PREFIX + e.name.removesuffix(".yaml") for e in folder.iterdir() if e.name.endswith(".yaml"))


class ShapeModel(ModelSource):
    random_weights = True

    def __init__(self, name: str):
        if name not in shape_names():
            raise unknown_name("shape model", name, shape_names())
        self.name = name
        short = name.removeprefix(PREFIX)
        self.fields: dict[str, Any] = yaml.safe_load(
            (resources.files(__package__) / "shapes" / f"{short}.yaml").read_text()
        )

    def describe(self) -> dict[str, Any]:
        return {"kind": "shape", "config": self.fields, "random_weights": True,
                "note": "random weights from a real config: latency and memory only, no accuracy"}

    def config(self) -> Any:
        from transformers import AutoConfig

        fields = dict(self.fields)
        return AutoConfig.for_model(fields.pop("model_type"), **fields)

    def load(self, dtype: Any, device: str) -> tuple[Any, Any]:
        import torch
        from transformers import AutoModelForCausalLM

        torch.manual_seed(0)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(self.config(), dtype=dtype)
        return self._finish(model, device), None
