"""Every developer and CI action: bench, tests, lint, site.

``nox -s bench -- --method wanda --model llama`` installs what is needed into a fresh
virtualenv and runs the benchmark. On a machine without an NVIDIA driver the CPU build of
torch is installed first (a plain ``torch`` requirement would pull a multi-GB CUDA build);
set ``SPARSEBENCH_TORCH`` to choose another torch requirement.
"""

from __future__ import annotations

import os
import shutil

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_venv = "yes"

PYTHON = None  # the interpreter nox runs under


def _torch_requirement() -> str:
    if req := os.environ.get("SPARSEBENCH_TORCH"):
        return req
    return "torch" if shutil.which("nvidia-smi") else "torch==2.13.0"


def _install(session: nox.Session, extras: str = "") -> None:
    session.install(_torch_requirement())
    session.install("-e", f".[{extras}]" if extras else ".")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run a method and its dense baseline: nox -s bench -- --method wanda --model llama"""
    _install(session)
    session.run("sparsebench", "run", *session.posargs)


@nox.session(python=PYTHON, name="bench-gpu")
def bench_gpu(session: nox.Session) -> None:
    """Dense + methods on real-config shape models (random weights) on this machine's GPU."""
    _install(session)
    session.run("python", "-m", "sparsebench.benchgpu", *session.posargs)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite (Triton kernels run under the CPU interpreter)."""
    _install(session, "test,triton,site")
    session.run("pytest", *session.posargs, env={"TRITON_INTERPRET": "1"})


@nox.session(python=PYTHON)
def site(session: nox.Session) -> None:
    """Build the leaderboard into site/build: nox -s site (-- --serve to serve it on 127.0.0.1)."""
    _install(session, "site")
    args = list(session.posargs)
    command = "serve" if "--serve" in args else "build"
    args = [a for a in args if a != "--serve"]
    session.run("sparsebench", "site", command, *args)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "suite", "methods", "tasks", "kernels", "tests", "benchmarks", "noxfile.py")
