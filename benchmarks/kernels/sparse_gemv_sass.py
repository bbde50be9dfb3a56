"""Compile the sparse GEMV's launches for sm_90 on a machine without a GPU and count SASS.

    python benchmarks/kernels/sparse_gemv_sass.py --shape down --configs default "kind=compact,bn=128"
    python benchmarks/kernels/sparse_gemv_sass.py --shape q_o --dump /tmp/sass     # also write the listings

Why: timing needs a GPU, but whether the weight loads are 16-byte vectors, how many
instructions a live row costs, how many barriers and registers a program carries can be
read from the machine code anywhere. The call is made on ``meta`` tensors with the kernels
swapped for a recorder, so the launches (kernels, constexprs, grid) are exactly the ones
``sparse_gemv_triton`` makes; each is then compiled with ``triton.compile`` for the target
and its cubin read back with ``cuobjdump -res-usage`` and ``nvdisasm``.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from sparsebench.kernels.sparse_gemv import triton as kt
from sparsebench.kernels.sparse_gemv.config import GemvConfig, default_config

SHAPES = {"q_o": (4096, 4096), "k_v": (4096, 1024), "gate_up": (4096, 14336), "gate_up_fused": (4096, 28672),
          "down": (14336, 4096)}
KERNELS = [name for name in dir(kt) if name.startswith("_") and name.endswith("_kernel")]


class _Recorder:
    """Stands in for a ``@triton.jit`` kernel: ``k[grid](*args, **kw)`` records the launch."""

    def __init__(self, fn: Any, log: list) -> None:
        self.fn, self.log = fn, log

    def __getitem__(self, grid: tuple) -> Any:
        return lambda *args, **kw: self.log.append((self.fn, grid, args, kw))


def record_launches(k: int, n: int, rows: int, cfg: GemvConfig, sparsity: float = 0.5, sms: int = 132) -> list:
    """The launches one call makes at ``[rows, k] x [k, n]`` (bf16, scalar threshold) on a GPU
    of ``sms`` multiprocessors (an H100 SXM / H200 has 132)."""
    log: list = []
    saved = {name: getattr(kt, name) for name in KERNELS}
    saved_sm = kt.sm_count
    try:
        kt.sm_count = lambda device: sms
        for name, fn in saved.items():
            setattr(kt, name, _Recorder(fn, log))
        x = torch.empty(rows, k, dtype=torch.bfloat16, device="meta")
        w_t = torch.empty(k, n, dtype=torch.bfloat16, device="meta")
        kt.sparse_gemv_triton(x, w_t, sparsity, config=cfg)
    finally:
        for name, fn in saved.items():
            setattr(kt, name, fn)
        kt.sm_count = saved_sm
    return log


def compile_launch(fn: Any, args: tuple, kw: dict, arch: int) -> Any:
    """``triton.compile`` of one recorded launch, specialized as the JIT would for these args."""
    import triton
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.nvidia.compiler import CUDABackend

    params = fn.params
    sig, consts, attrs = {}, {}, {}
    it = iter(args)
    for i, p in enumerate(params):
        if p.is_constexpr:
            sig[p.name] = "constexpr"
            consts[p.name] = kw[p.name]
            continue
        val = next(it) if p.name not in kw else kw[p.name]
        ty, spec = native_specialize_impl(CUDABackend, val, False, not p.do_not_specialize,
                                          not p.do_not_specialize_on_alignment)
        sig[p.name] = ty
        if ty == "constexpr":
            consts[p.name] = val
        elif spec and "D" in spec:
            attrs[(i,)] = [["tt.divisibility", 16]]
    options = {k: kw[k] for k in ("num_warps", "num_stages", "launch_pdl") if k in kw}
    src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
    return triton.compile(src, target=triton.backends.compiler.GPUTarget("cuda", arch, 32), options=options)


def _tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def sass_of(cubin: bytes) -> tuple[str, str]:
    """(``nvdisasm -c`` listing, ``cuobjdump -res-usage`` text) of a cubin."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        sass = subprocess.run([_tool("nvdisasm"), "-c", f.name], check=True, capture_output=True, text=True).stdout
        res = subprocess.run([_tool("cuobjdump"), "-res-usage", f.name], check=True, capture_output=True,
                             text=True).stdout
    return sass, res


def _ops(lines: list[str]) -> collections.Counter:
    ops: collections.Counter = collections.Counter()
    for line in lines:
        m = re.match(r"\s*/\*[0-9a-f]+\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
        if m:
            ops[m.group(2)] += 1
    return ops


def loops(sass: str) -> list[list[str]]:
    """The body of every loop (a label up to the backward branch to it), innermost first."""
    lines = sass.splitlines()
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := re.match(r"^(\.L_x_\d+):", line))}
    out = []
    for i, line in enumerate(lines):
        m = re.search(r"BRA `\((\.L_x_\d+)\)", line)
        if m and labels.get(m.group(1), i) < i:
            out.append(lines[labels[m.group(1)]:i + 1])
    return sorted(out, key=len)


def loop_summary(body: list[str]) -> dict[str, Any]:
    """Per iteration of one loop: instructions, barriers, cp.async waits, loads and math."""
    ops = _ops(body)
    waits = sorted(re.findall(r"DEPBAR.LE SB0, (0x[0-9a-f]+)", "\n".join(body)))
    keep = ("LDG", "LDS", "STS", "HMMA", "FFMA")
    return {"instructions": sum(ops.values()), "bar_sync": ops.get("BAR.SYNC.DEFER_BLOCKING", 0),
            "cp_async_waits": waits, **{op: c for op, c in sorted(ops.items()) if op.startswith(keep)}}


def summarize(sass: str, res: str) -> dict[str, Any]:
    """Instruction counts that matter for a bandwidth-bound kernel (static counts, whole kernel)."""
    ops = _ops(sass.splitlines())
    regs = re.search(r"REG:(\d+)", res)
    shared = re.search(r"SHARED:(\d+)", res)
    loads = {op: c for op, c in ops.items() if op.startswith(("LDG", "LDGSTS", "LDS", "LD.", "ATOM", "RED", "UTMALDG",
                                                               "LDSM"))}
    return {"regs": int(regs.group(1)) if regs else None, "static_smem": int(shared.group(1)) if shared else None,
            "instructions": sum(ops.values()), "loads": dict(sorted(loads.items())),
            "stores": {op: c for op, c in sorted(ops.items()) if op.startswith(("STG", "STS"))},
            "spills": sum(c for op, c in ops.items() if op.startswith(("STL", "LDL"))),
            "fences": sum(c for op, c in ops.items() if op.startswith("MEMBAR")),
            "barriers": sum(c for op, c in ops.items() if op.startswith(("BAR", "MEMBAR", "FENCE"))),
            "mma": sum(c for op, c in ops.items() if op.startswith(("HMMA", "HGMMA"))),
            "ffma": ops.get("FFMA", 0), "predicated": sum(1 for line in sass.splitlines() if re.search(r"\s@!?P\d", line))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=list(SHAPES), default="down")
    p.add_argument("--rows", type=int, default=1)
    p.add_argument("--configs", nargs="+", default=["default"], help="spec strings, or 'default'")
    p.add_argument("--arch", type=int, default=90)
    p.add_argument("--dump", default=None, help="folder to write each launch's SASS listing into")
    args = p.parse_args(argv)
    k, n = SHAPES[args.shape]
    for spec in args.configs:
        cfg = default_config(n, k) if spec == "default" else GemvConfig.parse(spec)
        print(f"== {args.shape} {k}->{n} rows={args.rows}: {cfg.label()}")
        for i, (fn, grid, largs, kw) in enumerate(record_launches(k, n, args.rows, cfg)):
            compiled = compile_launch(fn, largs, kw, args.arch)
            sass, res = sass_of(compiled.asm["cubin"])
            smem = getattr(compiled.metadata, "shared", None)
            print(f"  [{i}] {fn.__name__} grid={tuple(grid)} warps={kw.get('num_warps')} smem={smem}: "
                  f"{summarize(sass, res)}")
            for body in loops(sass):
                if len(body) > 40:  # the streaming loops (short ones are reductions and scans)
                    print(f"      loop: {loop_summary(body)}")
            if args.dump:
                out = Path(args.dump)
                out.mkdir(parents=True, exist_ok=True)
                name = re.sub(r"[^A-Za-z0-9=,_-]", "_", f"{args.shape}-{cfg.label()}-{i}-{fn.__name__}")
                (out / f"{name}.sass").write_text(sass)
                (out / f"{name}.ttgir").write_text(compiled.asm["ttgir"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
