"""Importing sparsebench (and its API) must stay cheap: no torch, no MLflow, no plugins."""

import subprocess
import sys


def test_import_is_lean():
    code = ("import sys, sparsebench, sparsebench.api, sparsebench.registry, sparsebench.errors; "
            "heavy = [m for m in ('torch', 'mlflow', 'transformers', 'sparsebench.methods', 'sparsebench.tasks') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
