"""A checkout's root on ``sys.path`` must not hide a top-level ``kernels`` distribution.

transformers >= 5.25 imports Hugging Face's ``kernels`` while it loads; run from the repo
root (pytest's rootdir insertion, ``python -m``), our ``kernels/`` folder came first and the
import failed. Each case runs in a fresh interpreter whose ``sys.path`` starts at the root.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, *extra_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *map(str, extra_path)])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _other_kernels(tmp_path: Path) -> Path:
    """A second ``kernels`` package with a subpackage, as the distribution has."""
    pkg = tmp_path / "site" / "kernels"
    (pkg / "layer").mkdir(parents=True)
    (pkg / "__init__.py").write_text("WHOSE = 'other'\n")
    (pkg / "layer" / "__init__.py").write_text("")
    (pkg / "layer" / "mode.py").write_text("class Mode:\n    DECODE = 1\n")
    return tmp_path / "site"


def test_root_first_on_path_imports_the_other_kernels(tmp_path):
    site = _other_kernels(tmp_path)
    out = _run("""
        import sys
        import kernels
        from kernels.layer.mode import Mode
        import sparsebench.kernels as ours
        print(kernels.WHOSE, Mode.DECODE, ours.__name__, 'kernels.checkout_shadow' in sys.modules)
    """, site)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["other", "1", "sparsebench.kernels", "False"]


def test_root_first_on_path_without_another_kernels_keeps_this_folder():
    """What transformers' availability probe imports when no distribution is installed."""
    probe = _run("import importlib.metadata as m; m.version('kernels')")
    if probe.returncode == 0:
        pytest.skip("a kernels distribution is installed here")
    out = _run("""
        import kernels
        import sparsebench.kernels as ours
        print(kernels.__file__ == ours.__file__, getattr(kernels, '__version__', 'N/A'))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "N/A"]


def test_transformers_loads_with_the_root_first_on_path():
    out = _run("""
        import transformers.modeling_utils
        from transformers import LlamaConfig, LlamaForCausalLM
        print('ok', transformers.__version__)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")
