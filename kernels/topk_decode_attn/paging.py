"""The paged KV layout of decode attention and its per-page key metadata (pure PyTorch).

    k_pages, v_pages  [num_pages_total, Hkv, page_size, D]   physical pages, any order
    page_table        [B, max_pages] int32                    logical page j of sequence b
                                                              -> its physical page
    seq_lens          [B] int32                               tokens of sequence b (>= 1)

Token ``t`` of sequence ``b`` lives in physical page ``page_table[b, t // page_size]`` at
slot ``t % page_size``. Sequence ``b`` uses ``cdiv(seq_lens[b], page_size)`` pages; the last
may be partial: its slots past the length hold garbage and are never read. Table entries
past a sequence's pages are ignored. Page sizes are powers of two (16 or 32 typical).

Quest metadata: per physical page and KV head, the elementwise min and max of the keys of
the page's valid tokens, ``kmin``/``kmax [num_pages_total, Hkv, D]`` in the keys' dtype
(exact: a min of bf16 values is a bf16 value).
"""

from __future__ import annotations

import torch


def pages_used(seq_lens: torch.Tensor, page_size: int) -> torch.Tensor:
    """Pages per sequence: ``cdiv(seq_lens, page_size)``."""
    return (seq_lens.long() + page_size - 1) // page_size


def paged_from_dense(k: torch.Tensor, v: torch.Tensor, page_size: int, seq_lens: torch.Tensor | None = None, *,
                     seed: int | None = 0, spare_pages: int = 0, fill: float | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``k``/``v [B, Hkv, L, D]`` (rows past ``seq_lens[b]`` unused) -> ``(k_pages, v_pages,
    page_table, seq_lens)``. Physical pages are shuffled (``seed``; None keeps them in order),
    ``spare_pages`` unused pages are added, and ``fill`` (e.g. NaN) is written into every
    slot that holds no token, so a kernel that reads one shows it."""
    B, hkv, L, D = k.shape
    dev = k.device
    if seq_lens is None:
        seq_lens = torch.full((B,), L, dtype=torch.int32, device=dev)
    max_pages = -(-L // page_size)
    total = B * max_pages + spare_pages
    order = torch.arange(total)
    if seed is not None:
        order = order[torch.randperm(total, generator=torch.Generator().manual_seed(seed))]
    page_table = order[: B * max_pages].reshape(B, max_pages).to(torch.int32).to(dev)
    pad = max_pages * page_size - L

    lens = seq_lens.to(dev).long()
    dead = torch.arange(max_pages * page_size, device=dev).reshape(max_pages, page_size)[None] >= lens[:, None, None]

    def to_pages(x: torch.Tensor) -> torch.Tensor:
        xp = torch.nn.functional.pad(x, (0, 0, 0, pad)).reshape(B, hkv, max_pages, page_size, D).permute(0, 2, 1, 3, 4)
        if fill is not None:  # [B, max_pages, Hkv, ps, D]: slots past each length
            xp = xp.masked_fill(dead[:, :, None, :, None], fill)
        pages = torch.full((total, hkv, page_size, D), 0.0 if fill is None else fill, dtype=x.dtype, device=dev)
        pages[page_table.reshape(-1).long()] = xp.reshape(B * max_pages, hkv, page_size, D)
        return pages

    return to_pages(k), to_pages(v), page_table, seq_lens.to(torch.int32).to(dev)


def valid_slots(num_pages: int, page_size: int, page_table: torch.Tensor | None, seq_lens: torch.Tensor | None,
                device: torch.device) -> torch.Tensor:
    """``[num_pages, page_size]`` bool: the slots that hold a token (all of them for pages no
    sequence uses; the tail of each sequence's last page is not)."""
    ok = torch.ones((num_pages, page_size), dtype=torch.bool, device=device)
    if page_table is None or seq_lens is None:
        return ok
    B, max_pages = page_table.shape
    n = pages_used(seq_lens, page_size).to(device)
    last = (n - 1).clamp(min=0)
    phys = page_table.long().to(device).gather(1, last[:, None])[:, 0]
    fill = seq_lens.long().to(device) - last * page_size  # tokens in the last page
    slots = torch.arange(page_size, device=device)[None, :] < fill[:, None]
    ok[phys] = slots
    return ok


def page_metadata(k_pages: torch.Tensor, page_table: torch.Tensor | None = None, seq_lens: torch.Tensor | None = None,
                  *, pages: torch.Tensor | None = None, out: tuple[torch.Tensor, torch.Tensor] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per page and KV head, the min and max of its valid keys: ``(kmin, kmax)`` each
    ``[num_pages_total, Hkv, D]`` in ``k_pages``' dtype. With ``page_table``/``seq_lens`` the
    empty tail of each last page is left out. ``pages`` (physical ids) recomputes only those
    pages, into ``out`` (the metadata to keep up to date, e.g. after appending tokens)."""
    P, hkv, ps, D = k_pages.shape
    ok = valid_slots(P, ps, page_table, seq_lens, k_pages.device)
    if pages is not None:
        if out is None:
            raise ValueError("pages= updates existing metadata: pass out=(kmin, kmax)")
        pages = pages.long().to(k_pages.device)
        kp, ok = k_pages[pages], ok[pages]
    else:
        kp = k_pages
    m = ok[:, None, :, None]
    big = torch.tensor(float("inf"), dtype=k_pages.dtype, device=k_pages.device)
    kmin = torch.where(m, kp, big).amin(dim=2)
    kmax = torch.where(m, kp, -big).amax(dim=2)
    if out is None:
        return kmin, kmax
    if pages is None:
        out[0].copy_(kmin)
        out[1].copy_(kmax)
    else:
        out[0][pages] = kmin
        out[1][pages] = kmax
    return out


def all_pages(page_table: torch.Tensor, seq_lens: torch.Tensor, page_size: int) -> torch.Tensor:
    """The dense selection ``[B, 1, max_pages]``: every page of each sequence, ``-1`` past its
    last one (shared by all heads). No host synchronisation."""
    max_pages = page_table.shape[1]
    j = torch.arange(max_pages, device=page_table.device, dtype=torch.int32)[None, :]
    n = pages_used(seq_lens, page_size).to(page_table.device)[:, None]
    return torch.where(j < n, j, torch.full_like(j, -1))[:, None, :].contiguous()


def budget_pages(budget: float, max_pages: int) -> int:
    """Pages kept for a kept fraction ``budget`` of ``max_pages`` (at least 1)."""
    return max(1, min(max_pages, round(budget * max_pages)))
