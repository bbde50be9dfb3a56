"""Launch configurations of the Triton sparse GEMV, the per-shape defaults, and the plan.

Pure Python (no triton import): ``describe()`` and the benchmark read it without compiling.

A ``GemvConfig`` names a kernel variant and its tiles:

* ``kind``: ``mask`` streams every block of ``BLOCK_K`` inputs and predicates the weight
  loads of dead rows off (no memory traffic for them, no branch in the loop, so Triton can
  software-pipeline it); ``compact`` first packs the indices of the surviving inputs of the
  program's K range (a prefix sum, no host synchronisation) and then walks only live rows.
* ``bn`` / ``bk`` / ``w`` / ``s``: BLOCK_N, BLOCK_K, warps, pipeline stages of the K loop.
* ``p``: programs to aim for (through split-K); 0 means four per SM. ``mk``: the fewest
  blocks of inputs one split walks (default 2).
* ``r``: how the split-K partial sums meet: ``fused`` (the last program of a column tile
  to finish adds them, counted by an integer atomic: one launch, deterministic order) or
  ``launch`` (a second small kernel).
* ``dot``: one activation row on tensor cores (rows padded to 16); more rows always are.
* ``pre``: (compact kind) pack the live inputs of each K split once, in a small kernel
  launched first, into one list that every column tile of the split reads, instead of each
  program packing its own copy before it starts streaming (one launch more, less latency
  at the start of each program). With one 2-byte row the list entries carry x's bits beside
  the index either way, so the gather loop needs no dependent x load.
* ``xp``: (mask kind, one bf16/fp16 row, even K) read x as 32-bit pairs, which the software
  pipeline can fetch ahead asynchronously; 2-byte loads stall each block until x arrives.
* ``ch``: (compact kind) inputs packed per prefix-sum step (0: ``max(64, 1024 // rows)``).
  Each step is a dependent x load and a scan before the first weight load, so a plan
  with one K split (``p=1``: no partials, no arrival atomics, y stored directly) wants
  its whole K in one or two steps (``ch=4096`` at K = 4096).
* ``xa``: (compact kind, K a multiple of 8) tell the compiler that each split's K range
  starts and ends on a multiple of 8 (it does: splits are whole ``BLOCK_K`` blocks), so the
  packing step loads x in 16-byte vectors and its prefix sum runs 8 inputs per thread
  in registers; without it x arrives in 2-byte loads and the scan shuffles each of them.
  With several steps, each step's x is loaded before the scan of the one before it.
* ``rz``: (fused reduction) the last split resets its arrival counter with a relaxed
  atomic: the default (acq_rel) puts a GPU-scope fence (``MEMBAR.ALL.GPU``) after the y
  stores, which holds the grid's end until they are acknowledged; the next call reads
  the counter only after this kernel has finished, so no ordering is needed there.

Defaults come per shape class (``shape_class``) from ``DEFAULTS``; the environment
variable ``SPARSEBENCH_GEMV_CONFIG`` overrides them, either one spec for every class
(``"kind=mask,bn=256,bk=32,w=4,s=3,p=0,r=fused,dot=0"``, keys left out take the
``GemvConfig`` defaults) or per class (``"wide:bn=512,bk=16;narrow:bn=128"``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from ..launch import cdiv, is_pow2, next_pow2

KINDS = ("mask", "compact")
REDUCES = ("fused", "launch")
SHAPE_CLASSES = ("narrow", "square", "wide", "deep")
ENV = "SPARSEBENCH_GEMV_CONFIG"
# spec key -> field name
_KEYS = {"kind": "kind", "bn": "block_n", "bk": "block_k", "w": "num_warps", "s": "num_stages",
         "p": "programs", "r": "reduce", "dot": "dot", "xp": "pairs", "mk": "min_k_blocks",
         "pre": "prepass", "ch": "chunk", "rz": "relaxed_reset",
         "xa": "aligned_scan"}
REDUCE_NONE, REDUCE_LAUNCH, REDUCE_FUSED = 0, 1, 2


@dataclass(frozen=True)
class GemvConfig:
    """One kernel variant and its launch shape (see the module docstring for the keys)."""

    kind: str = "mask"
    block_n: int = 256
    block_k: int = 32
    num_warps: int = 4
    num_stages: int = 3
    programs: int = 0
    reduce: str = "fused"
    dot: bool = False
    pairs: bool = True
    min_k_blocks: int = 2  # a split walks at least this many blocks of inputs
    prepass: bool = False  # compact kind: one small launch packs each split's list for all tiles
    chunk: int = 0  # compact kind: inputs packed per scan step (0: the rule in plan())
    relaxed_reset: bool = False  # fused reduction: reset the arrival counter without a fence
    aligned_scan: bool = False  # compact kind: split bounds hinted as multiples of 8 (K % 8 == 0)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.reduce not in REDUCES:
            raise ValueError(f"reduce must be one of {REDUCES}, got {self.reduce!r}")
        for name in ("block_n", "block_k", "num_warps"):
            if not is_pow2(getattr(self, name)):
                raise ValueError(f"{name} must be a power of two, got {getattr(self, name)}")
        if self.chunk and not is_pow2(self.chunk):
            raise ValueError(f"chunk must be 0 or a power of two, got {self.chunk}")
        if self.num_stages < 1 or self.programs < 0 or self.min_k_blocks < 1:
            raise ValueError(f"bad stages/programs/min_k_blocks in {self}")

    def label(self) -> str:
        """The spec string that ``parse`` reads back (what the benchmark prints)."""
        return (f"kind={self.kind},bn={self.block_n},bk={self.block_k},w={self.num_warps},"
                f"s={self.num_stages},p={self.programs},r={self.reduce},dot={int(self.dot)},"
                f"xp={int(self.pairs)}" + (f",mk={self.min_k_blocks}" if self.min_k_blocks != 2 else "")
                + (",pre=1" if self.prepass else "") + (f",ch={self.chunk}" if self.chunk else "")
                + (",rz=1" if self.relaxed_reset else "") + (",xa=1" if self.aligned_scan else ""))

    @classmethod
    def parse(cls, spec: str) -> GemvConfig:
        """``"bn=256,bk=32,..."`` -> config; keys left out keep the dataclass defaults."""
        values: dict[str, object] = {}
        try:
            for part in filter(None, (p.strip() for p in spec.split(","))):
                key, val = (s.strip() for s in part.split("="))
                name = _KEYS[key]
                values[name] = val if name in ("kind", "reduce") else (
                    bool(int(val)) if name in ("dot", "pairs", "prepass", "relaxed_reset", "aligned_scan") else int(val))
            return cls(**values)  # type: ignore[arg-type]
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{ENV}={spec!r}: expected e.g. '{cls().label()}' ({exc})") from None

    @classmethod
    def from_env(cls) -> GemvConfig | None:
        """The one config the environment sets for every class, or None (see ``overrides``)."""
        spec = os.environ.get(ENV, "").strip()
        return cls.parse(spec) if spec and ":" not in spec else None


# From the H200 sweeps of 2026-12-01 at 50% sparsity (second one:
# results/kernels/20261201T102904-*): mask with narrow tiles for the small layers (k/v with
# 264 programs), live-row compaction with tensor-core accumulation for the large ones.
DEFAULTS: dict[str, GemvConfig] = {
    "narrow": GemvConfig(block_n=64, block_k=64, num_warps=4, num_stages=4, programs=264),  # k/v 4096->1024
    # square and wide: the winners of the H200 sweep results/kernels/20261202T151839-sparse_gemv-55670e.json
    # at 50% (q/o 1.24x over cuBLAS against 1.11x for the earlier default; gate/up, one split, 1.39x against 1.29x)
    "square": GemvConfig(kind="compact", block_n=64, block_k=128, num_warps=4, num_stages=4, programs=256, dot=True,
                         chunk=2048, relaxed_reset=True, aligned_scan=True),  # q/o 4096->4096
    "wide": GemvConfig(kind="compact", block_n=64, block_k=128, num_warps=4, num_stages=4, programs=1, dot=True,
                       chunk=1024, aligned_scan=True),  # gate/up
    "deep": GemvConfig(kind="compact", block_n=128, block_k=64, num_warps=4, num_stages=3, dot=True),  # down
}


def shape_class(n: int, k: int) -> str:
    """``narrow`` few outputs (N <= 2048), ``wide`` N >= 2K, ``deep`` K >= 2N, else ``square``."""
    if n <= 2048:
        return "narrow"
    if n >= 2 * k:
        return "wide"
    if k >= 2 * n:
        return "deep"
    return "square"


def overrides(spec: str | None = None) -> dict[str, GemvConfig]:
    """Per-class configs set by ``spec`` (default: the environment); missing classes absent."""
    spec = (os.environ.get(ENV, "") if spec is None else spec).strip()
    if not spec:
        return {}
    if ":" not in spec:
        one = GemvConfig.parse(spec)
        return dict.fromkeys(SHAPE_CLASSES, one)
    out = {}
    for entry in filter(None, (e.strip() for e in spec.split(";"))):
        cls_name, _, body = entry.partition(":")
        if cls_name.strip() not in SHAPE_CLASSES:
            raise ValueError(f"{ENV}: unknown shape class {cls_name!r}; known: {', '.join(SHAPE_CLASSES)}")
        out[cls_name.strip()] = GemvConfig.parse(body)
    return out


_OVERRIDES = overrides()


def default_config_for_class(c: str) -> GemvConfig:
    return _OVERRIDES.get(c, DEFAULTS[c])


def default_config(n: int, k: int) -> GemvConfig:
    """The config a call without ``config=`` uses for a ``[k] -> [n]`` layer."""
    return default_config_for_class(shape_class(n, k))


@dataclass(frozen=True)
class Plan:
    """Everything a launch needs, derived from the operands' shape and a config."""

    block_m: int  # rows of the accumulator: 1 (FMA path) or 16 (tensor cores)
    rows: int  # next power of two of M: rows of x the compaction looks at
    block_n: int
    block_k: int
    k_per_split: int
    splits: int
    n_tiles: int
    reduce: int  # REDUCE_NONE / REDUCE_LAUNCH / REDUCE_FUSED
    reduce_rows: int  # split partials summed per step (a [reduce_rows, block_n] tile)
    chunk: int  # inputs compacted per step (compact kind)
    use_dot: bool
    fold: int  # FMA path: accumulator rows (the threads one column is spread over)
    pairs: bool  # mask kind, one 2-byte row: x read as 32-bit pairs (pipelined like the weights)
    pack: bool  # compact kind, one 2-byte row, K <= 65536: list entries carry index and x bits
    prepass: bool  # compact kind: a separate launch packs one list per split (GemvConfig.prepass)
    config: GemvConfig

    @property
    def grid(self) -> tuple[int, int]:
        return (self.n_tiles, self.splits)


def plan(m: int, n: int, k: int, sm_count: int, cfg: GemvConfig, elem_bytes: int = 2,
         x_aligned: bool = True) -> Plan:
    """Tiles and split-K for an ``[m, k] x [k, n]`` launch on ``sm_count`` SMs (``x_aligned``:
    x starts on a 4-byte boundary, as needed to read it in pairs)."""
    use_dot = m > 1 or cfg.dot
    block_n = min(cfg.block_n, max(16, next_pow2(n)))
    block_k = min(cfg.block_k, max(8, next_pow2(k)))
    if use_dot:
        block_k = max(16, block_k)
    n_tiles = cdiv(n, block_n)
    target = cfg.programs or 4 * sm_count
    max_splits = max(1, cdiv(k, block_k * cfg.min_k_blocks))
    splits = max(1, min(max_splits, cdiv(target, n_tiles)))
    k_per_split = cdiv(cdiv(k, splits), block_k) * block_k
    splits = cdiv(k, k_per_split)
    rows = next_pow2(m)
    if splits == 1:
        reduce = REDUCE_NONE
    else:
        reduce = REDUCE_FUSED if cfg.reduce == "fused" else REDUCE_LAUNCH
    # Triton lays a [BLOCK_K, BLOCK_N] load out in 16-byte vectors along N, lanes then warps
    # along N as far as BLOCK_N reaches, the rest along K: that many threads share a column
    vec = max(1, 16 // elem_bytes)
    pairs = (cfg.pairs and cfg.kind == "mask" and not use_dot and elem_bytes == 2 and k % 2 == 0
             and block_k >= 2 and x_aligned)
    fold = min(block_k // 2 if pairs else block_k, max(1, 32 * cfg.num_warps // max(1, block_n // vec)))
    return Plan(block_m=16 if use_dot else 1, rows=rows, block_n=block_n, block_k=block_k,
                k_per_split=k_per_split, splits=splits, n_tiles=n_tiles, reduce=reduce,
                reduce_rows=max(1, min(64, 8192 // block_n)), chunk=min(cfg.chunk, max(64, next_pow2(k_per_split))) if cfg.chunk else max(64, 1024 // rows),
                use_dot=use_dot, fold=fold, pairs=pairs,
                pack=cfg.kind == "compact" and m == 1 and elem_bytes == 2 and k <= 65536,
                prepass=cfg.kind == "compact" and cfg.prepass, config=cfg)


def with_programs(cfg: GemvConfig, programs: int) -> GemvConfig:
    """The same variant aiming at another program count (no recompilation: a runtime split)."""
    return replace(cfg, programs=programs)

