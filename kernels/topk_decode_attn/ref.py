"""The definitions of Quest page selection and decode attention over selected pages
(pure PyTorch, fp32).

Page score (Quest): for query head ``h`` (KV head ``hk = h // (Hq // Hkv)``) and logical
page ``j`` of sequence ``b`` (physical ``p = page_table[b, j]``)

    score[b, h, j] = sum_d max(q[b, h, d] * kmin[p, hk, d], q[b, h, d] * kmax[p, hk, d])

an upper bound of ``q . k`` over the page's keys. ``per="kv"`` sums the scores of the heads
of each KV group (one selection per KV head, shared by its query heads). Pages past the
sequence score ``-inf``; its last (partial, newest) page ``+inf``, so it is always kept.
``select_pages`` keeps the ``k`` best pages per row: ``[B, S, k]`` int32 logical page
numbers, ascending, ``-1`` padding when the sequence has fewer than ``k`` pages.

Decode attention for one new token per sequence, ``q [B, Hq, D]``: query head ``h`` attends
the tokens of the pages selected for its row (``selected[b, h // (Hq // S)]``; ``-1``
skipped), ``t = j * page_size + slot < seq_lens[b]``:

    out[b, h] = softmax_t(scale * q[b, h] . k_t) @ v_t     (fp32; zero if no token)

``selected=None`` is every page (dense paged decode). The output has q's dtype.
"""

from __future__ import annotations

import math

import torch

from .paging import all_pages, pages_used


def page_scores_ref(q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, page_table: torch.Tensor,
                    seq_lens: torch.Tensor, page_size: int, per: str = "head") -> torch.Tensor:
    """``[B, Hq, max_pages]`` (``per="head"``) or ``[B, Hkv, max_pages]`` (``per="kv"``) fp32."""
    B, hq, D = q.shape
    hkv = kmin.shape[1]
    g = hq // hkv
    max_pages = page_table.shape[1]
    n = pages_used(seq_lens, page_size).to(q.device)
    j = torch.arange(max_pages, device=q.device)
    live = j[None, :] < n[:, None]  # [B, P]
    pt = torch.where(live, page_table.long(), torch.zeros((), dtype=torch.long, device=q.device))
    mn = kmin[pt].float().permute(0, 2, 1, 3)  # [B, Hkv, P, D]
    mx = kmax[pt].float().permute(0, 2, 1, 3)
    qf = q.float().reshape(B, hkv, g, 1, D)
    s = torch.maximum(qf * mn[:, :, None], qf * mx[:, :, None]).sum(-1)  # [B, Hkv, g, P]
    s = s.sum(2) if per == "kv" else s.reshape(B, hq, max_pages)
    s = torch.where(live[:, None], s, torch.tensor(float("-inf"), device=q.device))
    last = j[None, :] == (n - 1)[:, None]
    return torch.where(last[:, None], torch.tensor(float("inf"), device=q.device), s)


def topk_from_scores(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` best pages of each row of ``scores [B, S, P]``: ascending, -1 padding."""
    k = max(1, min(k, scores.shape[-1]))
    vals, idx = scores.topk(k, dim=-1)
    idx = torch.where(vals == float("-inf"), torch.full_like(idx, -1), idx)
    big = scores.shape[-1]
    key = torch.where(idx < 0, torch.full_like(idx, big), idx)
    srt = key.sort(dim=-1).values
    return torch.where(srt == big, torch.full_like(srt, -1), srt).to(torch.int32)


def select_pages_ref(q: torch.Tensor, kmin: torch.Tensor, kmax: torch.Tensor, page_table: torch.Tensor,
                     seq_lens: torch.Tensor, k: int, page_size: int, per: str = "head") -> torch.Tensor:
    return topk_from_scores(page_scores_ref(q, kmin, kmax, page_table, seq_lens, page_size, per), k)


def topk_decode_attention_ref(q: torch.Tensor, k_pages: torch.Tensor, v_pages: torch.Tensor, page_table: torch.Tensor,
                              seq_lens: torch.Tensor, selected: torch.Tensor | None = None,
                              scale: float | None = None) -> torch.Tensor:
    B, hq, D = q.shape
    _, hkv, ps, _ = k_pages.shape
    g = hq // hkv
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    if selected is None:
        selected = all_pages(page_table, seq_lens, ps)
    S = selected.shape[1]
    if hq % S:
        raise ValueError(f"{S} selection rows do not divide {hq} query heads")
    out = torch.zeros((B, hq, D), dtype=torch.float32, device=q.device)
    lens = seq_lens.long().to(q.device)
    slot = torch.arange(ps, device=q.device)
    for h in range(hq):
        sel = selected[:, h // (hq // S)].long()  # [B, K]
        ok = sel >= 0
        phys = page_table.long().gather(1, sel.clamp(min=0))  # [B, K]
        kk = k_pages[phys, h // g].float()  # [B, K, ps, D]
        vv = v_pages[phys, h // g].float()
        valid = ok[:, :, None] & (sel[:, :, None] * ps + slot < lens[:, None, None])  # [B, K, ps]
        kk = torch.where(valid[..., None], kk, torch.zeros((), device=q.device))  # garbage slots never count
        vv = torch.where(valid[..., None], vv, torch.zeros((), device=q.device))
        s = torch.einsum("bd,bktd->bkt", q[:, h].float(), kk) * scale
        s = s.masked_fill(~valid, float("-inf")).reshape(B, -1)
        p = torch.softmax(s, dim=-1)
        p = torch.where(valid.reshape(B, -1).any(-1, keepdim=True), p, torch.zeros((), device=q.device))
        out[:, h] = torch.einsum("bn,bnd->bd", p, vv.reshape(B, -1, D))
    return out.to(q.dtype)
