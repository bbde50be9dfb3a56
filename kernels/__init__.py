"""Kernels: one folder per op with ``ref.py`` (pure PyTorch, the definition) and fast paths.

Import direction: methods import kernels; kernels import nothing from the harness.
"""
