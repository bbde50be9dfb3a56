"""Give way to a top-level ``kernels`` distribution when a checkout's root is on ``sys.path``.

This folder is installed as ``sparsebench.kernels``. Run from a checkout (pytest's rootdir
insertion, ``python -m`` in the repo root), the root is on ``sys.path`` and ``import kernels``
would find this folder instead of Hugging Face's ``kernels`` package, which transformers
>= 5.25 imports while it loads. ``kernels/__init__.py`` calls :func:`hand_over` in that case.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

CHECKOUT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _is_checkout_root(entry: str) -> bool:
    return os.path.abspath(entry or os.curdir) == CHECKOUT_ROOT


def hand_over(name: str = "kernels") -> None:
    """Replace ``sys.modules[name]`` with the same-named module found outside the checkout.

    The import system returns whatever ``sys.modules[name]`` holds once a module's body has
    run, so ``import kernels`` then yields the other package. With no other one installed
    this folder stays what ``import kernels`` gives, as before: transformers' availability
    probe imports it, finds no version and treats the package as absent.
    """
    sys.modules.pop(__name__, None)  # this helper, registered as ``kernels.checkout_shadow``
    elsewhere = [p for p in sys.path if not _is_checkout_root(p)]
    spec = importlib.machinery.PathFinder.find_spec(name, elsewhere)
    if spec is None or spec.loader is None:
        return
    ours = sys.modules[name]
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules[name] = ours
        raise
