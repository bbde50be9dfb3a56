"""How steady the copy-bandwidth yardstick is: the ceiling measured several times in one
process, each on fresh buffers, printed as JSON (one line per measurement).

    python3 benchmarks/copy_ceiling.py --repeats 3 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="measurements in this process")
    ap.add_argument("--rounds", type=int, default=5, help="fresh buffer pairs per measurement")
    ap.add_argument("--bytes", type=int, default=2 << 30, help="bytes per copy")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(json.dumps({"skipped": "no CUDA device"}))
        return 0
    from sparsebench.environment import ALLOC_CONF_ENV
    from sparsebench.measure.ceilings import measure_ceilings

    for i in range(args.repeats):
        out = measure_ceilings(copy_bytes=args.bytes, rounds=args.rounds)
        out = {k: round(v, 4) for k, v in out.items()}
        print(json.dumps({"repeat": i, "alloc_conf": os.environ.get(ALLOC_CONF_ENV, ""), **out}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
