"""Activation sparsity: small inputs of linear layers set to zero at inference, so a decode
GEMV can skip the weight columns they would multiply (TEAL, CATS, WINA, CHESS)."""
