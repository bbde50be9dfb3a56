"""Decode latency without Python overhead: static KV cache + one CUDA graph per step.

Eager ``generate`` on a GPU spends most of each token launching kernels from Python, so
every compression method looks like it buys nothing. Here the per-token forward is
captured once in a CUDA graph over a static cache and replayed; each replay is timed with
CUDA events. This is the path used for every GPU decode figure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..api import kv_cache_arg
from .spread import other_blas_spread, rel_err

# A replay runs the same math as the eager call, but cuBLAS may pick other algorithms
# under capture; in bf16 through 30+ layers of random weights that moves logits by a few
# 1e-3 relative. A wrong graph (stale positions, unwritten cache) moves them by ~1.
GRAPH_CHECK_TOL = 0.1
# Except where the model itself amplifies such differences: thresholds on random weights
# (activation sparsity) flip on last-bit changes and the logits decorrelate (a 32-layer
# random Llama with 50% input thresholds moves its logits by 0.36 relative for 1e-3 noise
# per linear; dense: 0.002). There the eager call is rerun under the other cuBLAS library;
# if that moves the logits past the tolerance too, the check is inconclusive, not failed.
INCONCLUSIVE_NOTE = ("the CUDA graph replay differs from the eager call by more than {tol}, but so "
                     "does the eager call itself under another cuBLAS library (the model amplifies "
                     "last-bit GEMM differences, e.g. thresholds on random weights): the graph was "
                     "timed, its result could not be checked")


def judge_replay(err: float, eager_spread: Callable[[], float]) -> float:
    """The replay's relative error if the graph passes (or the check is inconclusive: the
    eager result itself moves past the tolerance under another GEMM library, so a larger
    ``err`` is returned for the caller to note); raises when the replay alone is off."""
    if err < GRAPH_CHECK_TOL:
        return err
    spread = eager_spread()
    if not spread >= GRAPH_CHECK_TOL:
        raise RuntimeError(f"CUDA graph replay differs from the eager call (relative error {err:.2e}; "
                           f"eager under another cuBLAS library differs by {spread:.2e})")
    return err



def _capture(call: Callable[[], Any], prepare: Callable[[], None] = lambda: None) -> tuple[Any, Any, float]:
    """Warm ``call`` up on a side stream, capture it in a CUDA graph, and check one replay
    against one eager call on the same state (``prepare`` restores that state each time).

    Returns the graph, the graph's static output, and the replay's relative error; raises
    if the replay does not reproduce the eager result (then nothing is timed), unless the
    eager result is itself that unstable (``judge_replay``; the error returned is then at
    least ``GRAPH_CHECK_TOL``, for the caller to note).
    """
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            prepare()
            call()
    torch.cuda.current_stream().wait_stream(side)
    prepare()
    eager = call().float().clone()  # before capture: never two full outputs alive at once
    graph = torch.cuda.CUDAGraph()
    prepare()
    with torch.cuda.graph(graph):
        out = call()
    prepare()
    graph.replay()
    err = judge_replay(rel_err(out, eager), lambda: other_blas_spread(call, eager, prepare))
    return graph, out, err


def _set_length(cache: Any, n: int) -> None:
    """Point the static cache's write position at ``n``.

    Some transformers versions keep their own device-side counter of filled positions
    (``cumulative_length``) instead of trusting ``cache_position``; replaying a graph
    would advance it past the end of the cache, so it is reset before every step.
    """
    import torch

    seen: set[int] = set()
    for layer in getattr(cache, "layers", []):
        counter = getattr(layer, "cumulative_length", None)
        if isinstance(counter, torch.Tensor) and id(counter) not in seen:  # shared: once
            seen.add(id(counter))
            counter.fill_(n)


#: called with each static cache right after its prefill, before any capture (the ``+gemv``
#: path's shared write position, ``cache_length.shared_lengths``, registers here while active)
CACHE_PREPARERS: list[Callable[[Any], Any]] = []


COMPILE_MODES = (None, "default", "tuned", "tuned-pdl")


def compile_options(compile: str | None) -> dict[str, Any] | None:
    """Inductor options of a decode compile mode (see ``measure_decode_graphed``)."""
    if compile not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {COMPILE_MODES}, got {compile!r}")
    if compile in (None, "default"):
        return None
    options: dict[str, Any] = {"coordinate_descent_tuning": True}
    if compile == "tuned-pdl":
        import torch._inductor.config as inductor_config

        if not hasattr(inductor_config.triton, "enable_pdl"):
            raise ValueError("this torch's inductor has no programmatic dependent launch "
                             "(config.triton.enable_pdl); use a path without +pdl")
        options["triton.enable_pdl"] = True
    return options


def measure_decode_graphed(
    model: Any, ids: Any, *, batch: int, context: int, tokens: int, warmup: int,
    repetitions: int, progress: Callable[..., Any], compile: str | None = None,
) -> tuple[list[float], float]:
    """The suite's decode figure: each replayed step timed on its own (host synchronised
    between steps, next token chosen outside the timed region). ``compile``: None (eager
    forward in the graph), "default" (torch.compile), "tuned" (inductor's
    coordinate-descent tuning of the generated kernels) or "tuned-pdl" (that, with the
    generated kernels launched by programmatic dependent launch)."""
    import torch

    if not compile:
        return decode_timings(model, ids, batch=batch, context=context, tokens=tokens, warmup=warmup,
                              repetitions=repetitions, progress=progress)["synced"]
    # a fresh dynamo cache per measurement: the runs of one process (benchgpu: every method on
    # the same model class) would otherwise pile up compiled entries on the same code objects
    # until dynamo's per-frame recompile limit, after which it runs those frames uncompiled
    torch._dynamo.reset()
    try:
        forward = torch.compile(model.forward, dynamic=False, options=compile_options(compile))
        return decode_timings(model, ids, batch=batch, context=context, tokens=tokens, warmup=warmup,
                              repetitions=repetitions, progress=progress, forward=forward)["synced"]
    finally:
        torch._dynamo.reset()  # and nothing compiled keeps the model alive after it


def decode_timings(
    model: Any, ids: Any, *, batch: int, context: int, tokens: int, warmup: int,
    repetitions: int, progress: Callable[..., Any], forward: Callable[..., Any] | None = None,
    modes: tuple[str, ...] = ("synced",), device: str = "cuda",
    on_graph: Callable[[str, Any], None] | None = None,
) -> dict[str, tuple[list[float], float]]:
    """Per-step decode samples (ms) and the graph check error, for each timing mode, from one
    prefill and one static cache (so a compiled ``forward`` is not compiled twice).

    ``synced``: before each replay the host sets the position; after it, it waits and picks
    the next token (outside the timed region). ``pipelined``: the next token and position
    are computed inside the graph, so the steps are replayed back to back with no host work
    between them, as a serving loop that does not wait for each token would run; the argmax
    is then part of each step. The difference between the two is host latency the GPU sees.
    ``primed``: ``synced`` with a short spin kernel queued before each step's start event, so
    that the graph launch is queued before the GPU reaches that event: the step's device time
    without the host's launch latency (which ``synced`` counts whenever the host takes longer
    to queue the graph than the GPU takes to reach the start event).
    ``on_graph(mode, replay)``: called after a mode's timing while its graph is alive;
    ``replay()`` puts the cache back at the last timed step and replays the graph once (a
    probe profiles it; replaying without the reset would run past the cache).
    """
    import torch
    from transformers import StaticCache

    unknown = set(modes) - {"synced", "pipelined", "primed"}
    if unknown:
        raise ValueError(f"unknown decode timing mode(s) {sorted(unknown)}")
    x = ids[: batch * context].view(batch, context).to(device)
    cache = StaticCache(config=model.config, max_cache_len=context + tokens)
    arg = kv_cache_arg(model) or "past_key_values"
    results: dict[str, tuple[list[float], float]] = {}
    with torch.inference_mode():
        # logits of the last position only: at a 64k context the full logits of an 8B model
        # would take 17 GB for one argmax
        out = model(input_ids=x, **{arg: cache}, use_cache=True,
                    cache_position=torch.arange(context, device=device), logits_to_keep=1)
        first = out.logits[:, -1:].argmax(-1)
        del out
        for prepare in CACHE_PREPARERS:
            prepare(cache)
        static_ids = first.clone()
        static_pos = torch.tensor([context], device=device)
        fwd = forward or model.forward

        def step() -> Any:
            return fwd(input_ids=static_ids, **{arg: cache}, use_cache=True,
                       cache_position=static_pos).logits

        def step_fed() -> Any:
            logits = step()
            static_ids.copy_(logits[:, -1:].argmax(-1))
            static_pos.add_(1)
            return logits

        def at(pos: int) -> None:
            static_pos.fill_(pos)
            _set_length(cache, pos)

        def restart() -> None:
            at(context)
            static_ids.copy_(first)

        for mode in modes:
            graph, logits, err = _capture(step_fed if mode == "pipelined" else step, prepare=restart)
            label = f"decode({mode}) b{batch}@{context}"
            if mode in ("synced", "primed"):
                samples = _time_synced(graph, logits, static_ids, at, context, tokens, warmup,
                                       repetitions, progress(range(warmup + repetitions), desc=label, leave=False),
                                       prime=mode == "primed")
            else:
                samples = _time_pipelined(graph, restart, tokens, warmup,
                                          progress(range(warmup + repetitions), desc=label, leave=False))
            results[mode] = (samples, err)
            if on_graph is not None:

                def replay(g: Any = graph, mode: str = mode) -> None:
                    restart() if mode == "pipelined" else at(context + tokens - 1)
                    g.replay()

                on_graph(mode, replay)
            graph = logits = None
    cache = None
    torch.cuda.empty_cache()
    return results


PRIME_CYCLES = 400_000  # ~0.2 ms of GPU spin: longer than the host takes to queue a graph


def _time_synced(graph: Any, logits: Any, static_ids: Any, at: Callable[[int], None], context: int,
                 tokens: int, warmup: int, repetitions: int, reps: Any, prime: bool = False) -> list[float]:
    import torch

    from .timer import CudaTimer

    timer = CudaTimer(torch)
    samples: list[float] = []
    for i in reps:
        for t in range(tokens):
            at(context + t)
            if prime:
                torch.cuda._sleep(PRIME_CYCLES)
            timer.start()
            graph.replay()
            ms = timer.stop_ms()
            if i >= warmup:
                samples.append(ms)
            static_ids.copy_(logits[:, -1:].argmax(-1))
    return samples


def _time_pipelined(graph: Any, restart: Callable[[], None], tokens: int, warmup: int, reps: Any) -> list[float]:
    import torch

    samples: list[float] = []
    events = [torch.cuda.Event(enable_timing=True) for _ in range(tokens + 1)]
    for i in reps:
        restart()
        torch.cuda._sleep(1_000_000)  # ~0.5 ms of GPU work: the host gets ahead of the first step
        events[0].record()
        for t in range(tokens):
            graph.replay()
            events[t + 1].record()
        events[-1].synchronize()
        if i >= warmup:
            samples.extend(float(events[t].elapsed_time(events[t + 1])) for t in range(tokens))
    return samples


def measure_prefill_graphed(
    model: Any, ids: Any, *, batch: int, seq: int, warmup: int, repetitions: int,
    progress: Callable[..., Any],
) -> tuple[list[float], float]:
    """Prefill (no cache) captured once in a CUDA graph and replayed, timed with CUDA events.

    Without the graph a 512-token prefill of an 8B model is partly host-bound and its time
    jitters with the CPU; with it, the figure is the GPU's.
    """
    import torch

    from .timer import CudaTimer

    x = ids[: batch * seq].view(batch, seq).to("cuda")
    with torch.inference_mode():
        graph, out, err = _capture(lambda: model(input_ids=x, use_cache=False).logits[:, -1])
        timer = CudaTimer(torch)
        samples: list[float] = []
        for i in progress(range(warmup + repetitions), desc=f"prefill(graph) b{batch}x{seq}", leave=False):
            timer.start()
            graph.replay()
            ms = timer.stop_ms()
            if i >= warmup:
                samples.append(ms)
    del graph, out  # the output lives in the graph's pool: drop both before freeing
    torch.cuda.empty_cache()
    return samples, err
