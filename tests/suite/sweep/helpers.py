"""Helpers of the sweep tests: sweep files on the tiny model, and ``sparsebench sweep`` run
in a subprocess as a user would."""

import subprocess
import sys
from pathlib import Path

import yaml


def tiny_sweep(model, methods, **extra):
    """A sweep of ``methods`` on the tiny model with the constant task and no latency."""
    return {"name": "t", "models": [model], "profiles": ["cpu"], "tasks": ["sc_const"],
            "methods": methods, "base": {"measure": {"enabled": False}}, **extra}


def write_sweep(path, data):
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sweep_command(sweep_file, results, *args):
    return [sys.executable, "-m", "sparsebench.cli", "sweep", str(sweep_file), "--results", str(results),
            "--no-progress", *args]


def run_sweep(sweep_file, results, env, *args, timeout=240):
    return subprocess.run(sweep_command(sweep_file, results, *args), capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=Path(results).parent)
