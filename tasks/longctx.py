"""Shared pieces of the long-context tasks (passkey, vt, cwe, longppl).

- config fields: list options that also accept the command line's strings
  (``--passkey-lengths 1024,4096``), checked and stored sorted;
- ``Haystack``: the evaluation split tokenized once, with the positions where a word
  starts, so text can be cut to an exact token count and pieces inserted between words;
- prompt assembly at the token level: every piece (instruction, haystack slice, needle,
  question) is tokenized on its own and the ids are concatenated, so a prompt has exactly
  the token count that was asked for (pieces start with a space or a newline, so the
  concatenation decodes to the intended text);
- the context check against the model (``check_context``) and batched greedy generation.

A context length ``L`` covers the prompt *and* the generated answer: a prompt has
``L - max_new_tokens`` tokens, so ``L = 8192`` runs on a model of 8192 positions.
"""

from __future__ import annotations

import inspect
import json
import math
import random
import re
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import Field, field_validator

from sparsebench.api import Metric, TaskConfig, kv_cache_arg

#: shortest context length a generation task accepts (instructions + question + answer fit)
MIN_LENGTH = 128
#: longest context length accepted by the config (the model check refuses what it cannot take)
MAX_LENGTH = 1 << 20
#: a piece is inserted within this many tokens of its target position (at a word start)
SNAP_TOKENS = 16


# ----------------------------------------------------------------------------- config fields


def parse_list(value: Any) -> Any:
    """``"1024,2048"``, ``"1024 2048"`` or ``"[1024, 2048]"`` (what the CLI passes) -> list."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, str):
        return value
    s = value.strip()
    if s.startswith("["):
        try:
            return json.loads(s)
        except json.JSONDecodeError:
            raise ValueError(f"not a JSON list: {value!r}") from None
    return [v for v in re.split(r"[,\s]+", s) if v]


def check_lengths(v: tuple[int, ...], what: str = "lengths") -> tuple[int, ...]:
    if not v:
        raise ValueError(f"{what} must list at least one context length in tokens, e.g. [1024, 4096]")
    if len(set(v)) != len(v):
        raise ValueError(f"{what} lists a length twice: {list(v)}")
    bad = [x for x in v if not MIN_LENGTH <= x <= MAX_LENGTH]
    if bad:
        raise ValueError(f"{what} must be between {MIN_LENGTH} and {MAX_LENGTH} tokens, got {bad}")
    return tuple(sorted(v))


class GenerationConfig(TaskConfig):
    """Options shared by the generation tasks (passkey, vt, cwe).

    The prompts depend only on these options (``seed`` included) and the evaluation text,
    not on the run's seed, so every method of a comparison sees the same prompts.
    """

    lengths: tuple[int, ...] = Field(
        (1024, 2048, 4096, 8192),
        description="context lengths in tokens (prompt + answer), e.g. 1024,4096 or [1024, 4096]")
    samples: int = Field(5, ge=1, le=100_000, description="prompts per length (per depth for passkey)")
    seed: int = Field(0, description="seed of the prompt generator (same seed, same prompts)")
    batch_size: int = Field(1, ge=1, description="prompts of one length generated together")
    max_new_tokens: int = Field(16, ge=1, le=1024, description="greedy answer tokens (part of each length)")

    @field_validator("lengths", mode="before")
    @classmethod
    def _parse_lengths(cls, v: Any) -> Any:
        return parse_list(v)

    @field_validator("lengths")
    @classmethod
    def _check_lengths(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        return check_lengths(v)


class LongContextTask:
    """Mixin: refuse a model whose context is shorter than the longest length asked for.

    ``check_model`` is the ``Task.check_model`` hook: the runner calls it right after loading,
    so a too-long context is refused before anything runs (exit 2); ``evaluate`` calls it
    again for callers that use a task directly.
    """

    name: str
    config: Any
    length_option = "lengths"

    def longest(self) -> int:
        return max(getattr(self.config, self.length_option))

    def check_model(self, model: Any) -> None:
        check_context(self.name, self.length_option, self.longest(), model)


def length_label(n: int) -> str:
    return f"L{n}"


def depth_label(d: float) -> str:
    """0.5 -> ``D50``, 0.125 -> ``D12p5`` (metric names hold no dots)."""
    return "D" + f"{d * 100:.6g}".replace(".", "p")


# ----------------------------------------------------------------------------- model


def max_positions(model: Any) -> int | None:
    """The model's context window (``config.max_position_embeddings``), or None if unknown."""
    v = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def check_context(task: str, option: str, longest: int, model: Any) -> None:
    """Raise ``ValueError`` when ``longest`` tokens exceed what ``model`` takes."""
    limit = max_positions(model)
    if limit is not None and longest > limit:
        raise ValueError(
            f"task '{task}' asks for a context of {longest} tokens, but the model takes at most "
            f"{limit} positions (config.max_position_embeddings); a longer context would run "
            f"past its position embeddings and measure nothing meaningful. Drop the lengths above "
            f"{limit} from '{option}' (for example --{task}-{option.replace('_', '-')} {limit}) or use a "
            f"model with a longer context"
        )


def _accepts(model: Any, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def greedy_generate(model: Any, rows: Sequence[Sequence[int]], max_new_tokens: int, device: str,
                    eos_id: int | None = None) -> list[list[int]]:
    """Greedy continuation (argmax, no sampling) of equally long prompts, with the KV cache.

    Returns ``max_new_tokens`` ids per row, cut after the first ``eos_id``; stops early when
    every row has ended.
    """
    import torch

    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise ValueError(f"greedy_generate needs prompts of one length, got {sorted(widths)}")
    x = torch.tensor([list(r) for r in rows], dtype=torch.long, device=device)
    keep = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    cache_arg = kv_cache_arg(model) or "past_key_values"
    out_ids: list[list[int]] = [[] for _ in rows]
    done = [False] * len(rows)
    with torch.inference_mode():
        out = model(input_ids=x, use_cache=True, **keep)
        for step in range(max_new_tokens):
            nxt = out.logits[:, -1].argmax(-1)
            for r, t in enumerate(nxt.tolist()):
                if not done[r]:
                    out_ids[r].append(t)
                    done[r] = eos_id is not None and t == eos_id
            if all(done) or step == max_new_tokens - 1:
                break
            past = out.cache if cache_arg == "cache" else out.past_key_values
            out = model(input_ids=nxt[:, None], use_cache=True, **{cache_arg: past})
    return out_ids


def by_length(items: Sequence[Any], batch_size: int, key: Any = lambda it: len(it.ids)) -> list[list[Any]]:
    """Batches of at most ``batch_size`` items of one prompt length (no padding is ever needed)."""
    groups: dict[int, list[Any]] = {}
    for it in items:
        groups.setdefault(key(it), []).append(it)
    return [g[i:i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]


def run_generation(task: str, model: Any, ctx: Any, prompts: Sequence[Any], batch_size: int,
                   max_new_tokens: int) -> list[str]:
    """Generate for every prompt (objects with ``.ids``); the decoded answers, in prompt order."""
    tok = ctx.tokenizer
    answers: list[str] = [""] * len(prompts)
    batches = by_length(list(enumerate(prompts)), batch_size, key=lambda ip: len(ip[1].ids))
    for batch in ctx.progress(batches, desc=task, total=len(batches)):
        outs = greedy_generate(model, [p.ids for _, p in batch], max_new_tokens, ctx.device,
                               getattr(tok, "eos_token_id", None))
        for (i, _), ids in zip(batch, outs, strict=True):
            answers[i] = tok.decode(ids, skip_special_tokens=True)
    return answers


# ----------------------------------------------------------------------------- text


def encode(tok: Any, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


class Haystack:
    """The evaluation text as token ids, with a flag per token that starts a word.

    ``take`` cuts ``n`` consecutive tokens starting at a seeded word start (wrapping around
    the end of the text when ``n`` exceeds it, so any length can be served).
    """

    def __init__(self, text: str, tok: Any):
        self.ids = encode(tok, text)
        if len(self.ids) < 64:
            raise ValueError(f"the evaluation text has only {len(self.ids)} tokens, too few for a haystack")
        starts = {i for i in set(self.ids) if tok.decode([i])[:1].isspace()}
        self.starts_word = [i in starts for i in self.ids]

    def take(self, rng: random.Random, n: int) -> tuple[list[int], list[bool]]:
        size = len(self.ids)
        begin = rng.randrange(size)
        for k in range(size):  # first word start at or after the drawn offset
            if self.starts_word[(begin + k) % size]:
                begin = (begin + k) % size
                break
        idx = [(begin + k) % size for k in range(n)]
        return [self.ids[i] for i in idx], [self.starts_word[i] for i in idx]


def snap(starts_word: Sequence[bool], target: int, radius: int = SNAP_TOKENS) -> int:
    """The insertion point nearest ``target`` that sits between two words.

    Point ``p`` means "before filler token ``p``": valid at both ends and wherever token
    ``p`` starts a word. Ties go to the earlier point; without one within ``radius``
    tokens, ``target`` itself.
    """
    n = len(starts_word)
    target = min(max(target, 0), n)
    for off in range(radius + 1):
        for p in (target - off, target + off):
            if 0 <= p <= n and (p == 0 or p == n or starts_word[p]):
                return p
    return target


def assemble(prefix: list[int], filler: list[int], inserts: Sequence[tuple[int, list[int]]],
             suffix: list[int]) -> tuple[list[int], list[int]]:
    """``prefix + filler (with each piece inserted before filler token p) + suffix``.

    ``inserts`` are ``(p, ids)`` with non-decreasing ``p``; returns the ids and the index
    of each inserted piece's first token in them.
    """
    out = list(prefix)
    where: list[int] = []
    cur = 0
    for p, piece in inserts:
        if p < cur:
            raise ValueError("insertion points must not decrease")
        out.extend(filler[cur:p])
        where.append(len(out))
        out.extend(piece)
        cur = p
    out.extend(filler[cur:])
    out.extend(suffix)
    return out, where


def filler_budget(task: str, length: int, max_new_tokens: int, fixed: int) -> int:
    """Haystack tokens left in a prompt of ``length - max_new_tokens`` tokens."""
    room = length - max_new_tokens - fixed
    if room < 2 * SNAP_TOKENS:
        raise ValueError(
            f"task '{task}': a context of {length} tokens leaves {room} tokens of haystack after the "
            f"instructions, the inserted text ({fixed} tokens together) and {max_new_tokens} answer tokens; "
            "use a longer length"
        )
    return room


def seeded(*parts: Any) -> random.Random:
    """A generator seeded by the parts' text: the same parts give the same draws in every
    process (str seeds are hashed with SHA-512, not Python's salted hash)."""
    return random.Random("/".join(str(p) for p in parts))


# ----------------------------------------------------------------------------- scoring


def recall(answer: str, expected: Iterable[str], case_sensitive: bool = True) -> float:
    """Fraction of ``expected`` strings that occur in ``answer`` as whole words."""
    expected = list(expected)
    if not expected:
        raise ValueError("recall needs at least one expected string")
    flags = 0 if case_sensitive else re.IGNORECASE
    found = sum(bool(re.search(rf"(?<![A-Za-z0-9]){re.escape(e)}(?![A-Za-z0-9])", answer, flags))
                for e in expected)
    return found / len(expected)


def accuracy_metric(hits: Sequence[bool]) -> Metric:
    n = len(hits)
    p = sum(hits) / n
    return Metric(value=p, stderr=math.sqrt(p * (1 - p) / n), direction="higher", n=n)


def recall_by_length(metric: str, scores: Sequence[float], prompts: Sequence[Any],
                     lengths: Sequence[int]) -> dict[str, Metric]:
    """Mean recall over all prompts (``metric``) and per context length (``metric_L<n>``)."""
    out = {metric: mean_metric(scores)}
    for length in lengths:
        out[f"{metric}_{length_label(length)}"] = mean_metric(
            [s for s, p in zip(scores, prompts, strict=True) if p.length == length])
    return out


def mean_metric(values: Sequence[float]) -> Metric:
    """Mean of per-sample scores in [0, 1] with the standard error of the mean."""
    n = len(values)
    m = sum(values) / n
    se = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1) / n) if n > 1 else float("nan")
    return Metric(value=m, stderr=se, direction="higher", n=n)
