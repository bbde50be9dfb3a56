"""Pruning methods: weights set to zero by a score, unstructured or N:M."""
