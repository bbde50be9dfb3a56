"""Load a model saved by a quantization method (``--save-model``) back, packed or dequantized.

    from sparsebench.methods.quantization.load import load_quantized
    model = load_quantized("out/")                    # QuantLinear layers, packed
    model = load_quantized("out/", dequantize=True)   # plain nn.Linear, fp weights

``python -m sparsebench.methods.quantization.load SRC DST`` writes a dequantized copy that
plain transformers loads (``save_pretrained`` safetensors).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from .base import load_grid
from .qlinear import QuantLinear, set_submodule


def load_quantized(path: str | Path, dequantize: bool = False, device: str = "cpu",
                   dtype: torch.dtype = torch.float32) -> nn.Module:
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    manifest_file = path / "quantization.json"
    if not manifest_file.is_file():
        raise FileNotFoundError(f"{path} has no quantization.json: not a model saved by a sparsebench "
                                "quantization method")
    manifest = json.loads(manifest_file.read_text())
    grid = load_grid(manifest)
    config = AutoConfig.from_pretrained(path)
    with torch.device(device):  # real (not meta) init: non-persistent buffers such as RoPE's are built
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    for name, m in manifest["modules"].items():
        set_submodule(model, name, QuantLinear(m["in"], m["out"], grid, m["bias"], device=device, compute_dtype=dtype))
    state = load_file(str(path / "quantized.safetensors"), device=device)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or result.unexpected_keys:
        raise ValueError(f"{path}: quantized.safetensors does not match the manifest: missing {missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    if dequantize:
        for name in manifest["modules"]:
            q = model.get_submodule(name)
            lin = nn.Linear(q.in_features, q.out_features, bias=q.bias is not None, device=device, dtype=dtype)
            with torch.no_grad():
                lin.weight.copy_(q.dequantized().to(dtype))
                if q.bias is not None:
                    lin.bias.copy_(q.bias)
            set_submodule(model, name, lin)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sparsebench.methods.quantization.load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="directory written by --save-model with a quantization method")
    p.add_argument("dst", help="new directory for the dequantized transformers copy")
    args = p.parse_args(argv)
    dst = Path(args.dst)
    if dst.exists() and any(dst.iterdir()):
        p.error(f"{dst} exists and is not empty")
    model = load_quantized(args.src, dequantize=True)
    model.save_pretrained(dst, safe_serialization=True)
    from transformers import AutoTokenizer

    try:
        AutoTokenizer.from_pretrained(args.src).save_pretrained(dst)
    except (OSError, ValueError):
        pass
    print(f"wrote a dequantized copy to {dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
