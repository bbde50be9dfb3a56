"""Kernels: one folder per op with ``ref.py`` (pure PyTorch, the definition) and fast paths.

Import direction: methods import kernels; kernels import nothing from the harness.
"""

if __name__ == "kernels":  # a checkout's root on sys.path: this is not that package
    from .checkout_shadow import hand_over

    hand_over(__name__)
