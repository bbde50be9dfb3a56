"""The tensor-core fragment layout of ``w4_mma.cu``: pack, unpack, and the kernel's sums in torch.

The stored format (``[N, K/2]`` codes, ``[N, ceil(K/G)]`` scales and offsets) is repacked
once per weight into what one ``mma.m16n8k16`` thread holds:

* ``words`` int32 ``[N/16, K/64, 32, 4]``: row tile, 64-column chunk, lane, k-tile ``j``.
  Lane ``l`` (``gid = l // 4``, ``tig = l % 4``) owns rows ``gid`` and ``gid + 8`` and,
  in k-tile ``j``, the columns ``16 tig + 4j + p`` (``p = 0..3``) of its chunk. Its word's
  nibble ``r`` (bits ``4r``) and nibble ``r + 4`` (bits ``16 + 4r``) are the low and high
  half of A register ``r``: register 0 = row ``gid``, ``p`` 0 and 1; 1 = row ``gid + 8``,
  ``p`` 0 and 1; 2 = row ``gid``, ``p`` 2 and 3; 3 = row ``gid + 8``, ``p`` 2 and 3.
  (Which real column an mma k-slot stands for is free as long as A and B agree; this choice
  makes a thread's activations for a chunk 16 contiguous values, two 16-byte loads.)
* ``sc`` fp32 ``[N/16, K/G, 16, 2]``: per row and group ``(s, c)`` with
  ``c = offset - BIAS * s``, because the kernel multiplies ``BIAS + q`` codes
  (``BIAS`` 128 for bf16, 1024 for fp16) and sums ``x`` per group with a second mma.

``emulate`` computes ``y`` the way the kernel does (per group ``s * sum((BIAS + q) x) +
c * sum(x)``, fp32), so CI checks the layout and the algebra without a GPU.
"""

from __future__ import annotations

import torch

from .ref import unpack_int4

BIAS = {torch.bfloat16: 128.0, torch.float16: 1024.0}
CHUNK = 64  # columns per 16-byte load of one lane


def check(n: int, k: int, group: int, dtype: torch.dtype) -> str | None:
    """Why this shape cannot use the layout, or None."""
    if dtype not in BIAS:
        return f"the tensor-core int4 kernel takes bf16 or fp16 activations, got {dtype}"
    if n % 16:
        return f"the tensor-core int4 kernel needs N to be a multiple of 16, got N={n}"
    if group % CHUNK or k % group:
        return f"the tensor-core int4 kernel needs a group that is a multiple of 64 and divides K, got group {group}, K={k}"
    return None


def _lane_columns(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows [32, 8]`` and ``cols [32, 4, 8]`` (lane, tile j, nibble position) inside a
    16-row tile and a 64-column chunk."""
    lane = torch.arange(32, device=device)
    gid, tig = lane // 4, lane % 4
    pos = torch.arange(8, device=device)  # nibble position in the word
    reg, half = pos % 4, pos // 4  # nibble r -> register r low half; r + 4 -> high half
    rows = gid[:, None] + 8 * (reg % 2)[None, :]
    p = 2 * (reg // 2) + half  # 0..3
    j = torch.arange(4, device=device)
    cols = 16 * tig[:, None, None] + 4 * j[None, :, None] + p[None, None, :]
    return rows, cols


def pack(qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor, group: int,
         dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``(words, sc)`` for ``w4_mma.cu`` from the stored format (on the weight's device)."""
    n, k = qweight.shape[0], qweight.shape[1] * 2
    why = check(n, k, group, dtype)
    if why:
        raise ValueError(why)
    q = unpack_int4(qweight).to(torch.int64).reshape(n // 16, 16, k // CHUNK, CHUNK)
    rows, cols = _lane_columns(q.device)
    # codes[r, c, lane, j, pos] = q[r, rows[lane, pos], c, cols[lane, j, pos]]
    # (advanced indices split by a slice: their dimensions come first)
    codes = q[:, rows[:, None, :].expand(32, 4, 8), :, cols]  # [lane, j, pos, r, c]
    codes = codes.permute(3, 4, 0, 1, 2)  # [r, c, lane, j, pos]
    shifts = (4 * torch.arange(8, device=q.device)).to(torch.int64)
    words = (codes << shifts).sum(-1)  # disjoint bits: the sum is the OR
    words = torch.where(words >= 1 << 31, words - (1 << 32), words).to(torch.int32).contiguous()
    s = scales.float()
    c = offsets.float() - BIAS[dtype] * s
    sc = torch.stack((s, c), dim=-1).reshape(n // 16, 16, k // group, 2).permute(0, 2, 1, 3).contiguous()
    return words, sc


def unpack(words: torch.Tensor, k: int) -> torch.Tensor:
    """Codes ``[N, K]`` (uint8) back from ``words``: the inverse of ``pack``'s repacking."""
    r, chunks = words.shape[0], words.shape[1]
    rows, cols = _lane_columns(words.device)
    shifts = (4 * torch.arange(8, device=words.device)).to(torch.int64)
    nib = (words.to(torch.int64)[..., None] >> shifts) & 15  # [r, c, lane, j, pos]
    out = torch.empty(r, 16, chunks, CHUNK, dtype=torch.uint8, device=words.device)
    out[:, rows[:, None, :].expand(32, 4, 8), :, cols] = nib.permute(2, 3, 4, 0, 1).to(torch.uint8)
    return out.reshape(r * 16, chunks * CHUNK)[:, :k]


def emulate(x: torch.Tensor, words: torch.Tensor, sc: torch.Tensor, group: int) -> torch.Tensor:
    """``x [M, K] @ W^T`` computed as the kernel does, in fp32; returns ``x.dtype``."""
    m, k = x.shape
    bias = BIAS[x.dtype]
    q = unpack(words, k).float()  # [N, K]
    n = q.shape[0]
    xf = x.float()
    s = sc[..., 0].permute(0, 2, 1).reshape(n, k // group)
    c = sc[..., 1].permute(0, 2, 1).reshape(n, k // group)
    acc = torch.einsum("mgk,ngk->mng", xf.reshape(m, -1, group), (bias + q).reshape(n, -1, group))
    xsum = xf.reshape(m, -1, group).sum(-1)  # [M, G]
    y = (acc * s[None] + xsum[:, None, :] * c[None]).sum(-1)
    return y.to(x.dtype)
