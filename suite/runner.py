"""RunSpec -> RunRecord: load, compress, evaluate, measure, store, log.

A method run is always accompanied by its dense baseline in the same setting (same model,
tasks, profile, measurement). The baseline is reused when a record with the same spec key
was made on the same machine; otherwise it is measured first, in this process.

On a CPU the method run's latency phase then loads the dense model once more and times it
and the method's model in alternating rounds (``Runner._interleaved``): the dense record's
own phase ran minutes earlier (or in another process, when reused), and slow drift of the
machine between the two phases read as a 1.2-1.3x "speed-up" of unstructured pruning. That
costs one model load and a second latency grid; the records' own samples stay as they were.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from .api import ApplyContext, EvalContext, Method, Metric, RunRecord, RunSpec, Task
from .environment import environment
from .errors import UsageError
from .profiles.hardware import fingerprint, machine_info
from .resolve import Resolved, baseline_of, resolve
from .store import ResultsStore, new_run_id


def tqdm_progress(enabled: bool) -> Callable[..., Iterator[Any]]:
    from tqdm.auto import tqdm

    def progress(iterable: Any, desc: str = "", total: int | None = None, leave: bool = True) -> Iterator[Any]:
        return iter(tqdm(iterable, desc=desc, total=total, leave=leave, file=sys.stderr,
                         disable=not enabled, dynamic_ncols=True))

    return progress


def _random_ids(model: Any, shape: tuple[int, ...], seed: int) -> Any:
    """Seeded token ids for shape models, which have no tokenizer (and no text to tokenize)."""
    import torch

    return torch.randint(0, model.config.vocab_size, shape, generator=torch.Generator().manual_seed(seed))


class Runner:
    def __init__(
        self,
        results: str | Path = "results",
        *,
        sinks: list[Any] | None = None,
        progress: bool = True,
        reuse_baseline: bool = True,
        save_model: str | Path | None = None,
        log: Callable[[str], None] | None = None,
        store: ResultsStore | None = None,
    ):
        # ``store`` replaces the directory store: a sweep worker hands its records to the
        # sweep driver, which is the only writer (see ``sparsebench.sweep.worker``).
        self.store = store if store is not None else ResultsStore(results)
        self.sinks = sinks or []
        self.progress = tqdm_progress(progress)
        self.reuse_baseline = reuse_baseline
        self.save_model = Path(save_model) if save_model else None
        self.log = log or (lambda msg: print(f"[sparsebench] {msg}", file=sys.stderr))
        self.machine = fingerprint(machine_info())
        self._texts: dict[str, Any] = {}
        self._ceiling_values: dict[str, float] | None = None
        self.sink_errors: list[str] = []

    # ------------------------------------------------------------------ public

    def run(self, spec: RunSpec) -> list[RunRecord]:
        """Run ``spec`` (and its dense baseline); returns [baseline, method] or [dense]."""
        resolved = resolve(spec, self.machine)
        if self.save_model and self.save_model.exists() and any(self.save_model.iterdir()):
            raise UsageError(f"--save-model directory '{self.save_model}' exists and is not empty; "
                             "choose a new directory so nothing is overwritten.")
        why_not = resolved.method.save_unsupported_reason() if self.save_model else None
        if why_not:
            raise UsageError(f"--save-model cannot be used with method '{resolved.spec.method.name}': "
                             f"{why_not}. Run it without --save-model.")
        # Read every existing record now: a corrupt or newer-schema record is reported
        # before any work, and nothing in results/ is modified.
        self.store.all()
        records: list[RunRecord] = []
        baseline_ref = None
        if resolved.spec.method.name != "dense":
            base_spec = baseline_of(resolved.spec)
            base = resolve(base_spec, self.machine)
            prior = (self.store.find_ok(base.spec.key(), self.machine["id"])
                     if self.reuse_baseline else None)
            if prior is not None:
                self.log(f"reusing dense baseline {prior.run_id} (same spec key and machine)")
                records.append(prior)
                baseline_ref = {"run_id": prior.run_id, "spec_key": prior.spec_key, "reused": True}
            else:
                self._preflight(resolved)
                self.log("measuring the dense baseline")
                rec = self._execute(base, baseline=None, save=False)
                records.append(rec)
                baseline_ref = {"run_id": rec.run_id, "spec_key": rec.spec_key, "reused": False}
        self.log(f"running method '{resolved.spec.method.name}'")
        reference = base if baseline_ref is not None else None
        records.append(self._execute(resolved, baseline=baseline_ref, save=True, reference=reference))
        return records

    # ------------------------------------------------------------------ one run

    def _execute(self, r: Resolved, baseline: dict[str, Any] | None, save: bool,
                 reference: Resolved | None = None) -> RunRecord:
        """One run; ``reference`` (the resolved dense baseline) is timed beside it on a CPU."""
        import torch

        from .measure import memory

        spec = r.spec
        rec = RunRecord(
            run_id=new_run_id(spec.method.name),
            spec_key=spec.key(),
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            status="ok",
            spec=spec.model_dump(mode="json"),
            env={**environment(), "model_source": r.source.describe()},
            hardware={"profile": r.profile.id, "profile_def": r.profile.model_dump(mode="json"),
                      "fingerprint": self.machine},
            baseline=baseline,
        )
        skip = self._skip_reason(r)
        if skip:
            rec.status, rec.reason = "skipped", skip
            self.log(f"skipped: {skip}")
            return self._finish(rec)
        device = r.device
        if device == "cpu":
            torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
        rec.hardware["torch_threads"] = torch.get_num_threads()
        torch.manual_seed(spec.seed)
        memory.reset_peak(device)
        try:
            with self._phase(rec, "load_model"):
                dtype = getattr(torch, spec.model.dtype)
                model, tok = r.source.load(dtype, device)
            self._check_model(r, model)
            rec.env["model_class"] = type(model).__name__
            rec.add_metric("model_parameters", Metric(value=sum(p.numel() for p in model.parameters())))
            shape_only = r.source.random_weights
            with self._phase(rec, "load_data"):
                texts = None if shape_only else self._corpus(spec.corpus)
                calib = self._calibration(texts, tok, spec, model) if r.method.needs_calibration else None
            if texts is not None:
                rec.env["corpus"] = texts.card
            ctx = ApplyContext(device=device, kernel=spec.kernel, calibration=calib, seed=spec.seed,
                               progress=self.progress)
            with self._phase(rec, "apply"):
                result = r.method.apply_(model, ctx)
            for name, m in result.metrics.items():
                rec.add_metric(name, m)
            rec.kernels.update(result.kernels)
            rec.notes.extend(result.notes)
            self._model_metrics(rec, model)
            if shape_only and r.tasks:
                rec.notes.append("tasks not evaluated: random weights (shape model) give no accuracy")
            for task in ([] if shape_only else r.tasks):
                with self._phase(rec, f"task:{task.name}"):
                    ectx = EvalContext(text=texts.evaluation, tokenizer=tok, device=device,
                                       seed=spec.seed, progress=self.progress)
                    for name, m in task.evaluate(model, ectx).items():
                        if name in rec.metrics:
                            raise RuntimeError(f"task {task.name} reports metric {name} twice")
                        rec.add_metric(name, m)
            for name, m in r.method.report(model).items():
                if name in rec.metrics:
                    raise RuntimeError(f"method {r.method.name} reports metric {name} twice")
                rec.add_metric(name, m)
            for k, v in memory.read_peak(device).items():
                rec.add_metric(k, Metric(value=v, direction="lower", unit="bytes"))
            if spec.measure.enabled:
                with self._phase(rec, "latency"):
                    self._latency(rec, model, tok, texts, spec, device, reference)
            if save and self.save_model:
                with self._phase(rec, "save_model"):
                    self._save(model, tok, rec, r.method)
        except UsageError:  # the config does not fit the model: bad input, nothing written
            raise
        except Exception as exc:  # a failing method or task becomes a 'failed' record
            rec.status = "failed"
            rec.error = f"{type(exc).__name__}: {exc}"
            rec.notes.append(traceback.format_exc(limit=20))
            self.log(f"run failed: {rec.error}")
        finally:
            model = None  # free the model before the next run (matters for 16 GB on a GPU)
            import gc

            gc.collect()
            if device == "cuda":
                try:
                    torch.cuda.empty_cache()
                except RuntimeError as exc:  # a device-side assert poisons the context
                    rec.notes.append(f"CUDA context unusable after this run: {exc}")
        return self._finish(rec)

    def _check_model(self, r: Resolved, model: Any) -> None:
        try:
            r.method.check_model(model)
        except ValueError as exc:
            raise UsageError(f"Method '{r.spec.method.name}' cannot apply to model '{r.spec.model.name}' "
                             f"with this config: {exc}.") from None
        if r.source.random_weights:
            return  # tasks never run on a shape model
        for task in r.tasks:
            try:
                task.check_model(model)
            except ValueError as exc:
                raise UsageError(f"Task '{task.name}' cannot run on model '{r.spec.model.name}' "
                                 f"with this config: {exc}.") from None

    def _preflight(self, r: Resolved) -> None:
        """Check the method against the model before a fresh dense baseline is measured, so a
        config that does not fit the model writes nothing (costs one extra model load)."""
        hooks = type(r.method).check_model is not Method.check_model or (
            not r.source.random_weights and any(type(t).check_model is not Task.check_model for t in r.tasks))
        if not hooks or self._skip_reason(r):
            return
        import torch

        model, _ = r.source.load(getattr(torch, r.spec.model.dtype), r.device)
        try:
            self._check_model(r, model)
        finally:
            del model

    def _skip_reason(self, r: Resolved) -> str | None:
        if r.profile.device == "cuda" and not self.machine.get("cuda_available"):
            return f"no CUDA device: profile '{r.profile.id}' needs one"
        return r.method.unsupported_reason(self.machine)

    def _finish(self, rec: RunRecord) -> RunRecord:
        path = self.store.write(rec)
        self.log(f"wrote {path}")
        for sink in self.sinks:
            try:
                sink.log(rec)
            except Exception as exc:  # the record on disk is the source of truth
                msg = f"{type(sink).__name__} could not log {rec.run_id}: {type(exc).__name__}: {exc}"
                self.sink_errors.append(msg)
                self.log(msg)
        return rec

    @contextmanager
    def _phase(self, rec: RunRecord, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            rec.phases[name] = round(time.perf_counter() - t0, 4)

    # ------------------------------------------------------------------ pieces

    def _corpus(self, corpus_id: str) -> Any:
        if corpus_id not in self._texts:
            from .data import resolve_corpus

            self._texts[corpus_id] = resolve_corpus(corpus_id).load()
        return self._texts[corpus_id]

    def _calibration(self, texts: Any, tok: Any, spec: RunSpec, model: Any) -> list[Any]:
        import torch

        cal = spec.calibration
        assert cal is not None
        if texts is None:  # shape model: no tokenizer, random ids suffice for its latency
            return list(_random_ids(model, (cal.samples, cal.seq_len), spec.seed).split(cal.batch_size))
        ids = texts.calibration_ids(tok)
        if ids.numel() <= cal.seq_len:
            raise UsageError(f"The calibration text has {ids.numel()} tokens, too few for seq_len={cal.seq_len}.")
        gen = torch.Generator().manual_seed(spec.seed)
        starts = torch.randint(0, ids.numel() - cal.seq_len, (cal.samples,), generator=gen)
        rows = torch.stack([ids[s: s + cal.seq_len] for s in starts.tolist()])
        return list(rows.split(cal.batch_size))

    def _model_metrics(self, rec: RunRecord, model: Any) -> None:
        from .measure.memory import stored_bytes
        from .measure.sparsity import weight_sparsity

        sp, zeros, total = weight_sparsity(model)
        rec.add_metric("weight_sparsity", Metric(value=sp, direction="none", n=total))
        rec.add_metric("zero_weights", Metric(value=zeros))
        rec.add_metric("model_stored_bytes", Metric(value=stored_bytes(model), direction="lower", unit="bytes"))

    def _latency(self, rec: RunRecord, model: Any, tok: Any, texts: Any, spec: RunSpec, device: str,
                 reference: Resolved | None = None) -> None:
        m = spec.measure
        need = max(max(m.batch_sizes) * max(max(m.prefill_lengths), m.decode_context), 64)
        ids = (texts.evaluation_ids(tok, limit=need) if texts is not None
               else _random_ids(model, (need,), spec.seed))
        gpu = device == "cuda"
        if gpu:
            rec.hardware.setdefault("measured", self._ceilings())
        fused = self._fuse(rec, model, ids, device, gpu if m.fuse_projections is None else m.fuse_projections)
        try:
            self._timed_grid(rec, model, ids, m, device, gpu)
            if reference is not None and not gpu:  # after the memory peaks: two models are resident
                with self._phase(rec, "latency_interleaved"):
                    self._interleaved(rec, model, reference, ids, m, device, fused)
        finally:
            if fused:
                from .measure.fuse import unfuse_projections_

                unfuse_projections_(model)  # a saved model (--save-model) has its own weights

    def _fuse(self, rec: RunRecord, model: Any, ids: Any, device: str, wanted: bool) -> bool:
        """Fuse q/k/v and gate/up projections for the latency phase only: the tasks already
        ran on the unfused model. One checked forward proves the fused model equal."""
        if not wanted:
            rec.kernels["projections"] = "separate"
            return False
        from .measure.fuse import fuse_checked_, unfuse_projections_

        try:
            check = fuse_checked_(model, ids[:16].reshape(1, -1).to(device))
        except Exception as exc:  # a forward the check cannot run: time the model as it is
            unfuse_projections_(model)
            rec.kernels["projections"] = "separate"
            rec.notes.append(f"projections not fused: the check forward failed ({type(exc).__name__}: {exc})")
            return False
        rec.kernels["projections"] = check.label
        rec.add_metric("fused_projection_groups", Metric(value=check.report.count))
        if check.rel_err is not None:
            rec.add_metric("fused_projections_check_rel_err", Metric(value=check.rel_err))
        rec.notes.append(check.note())
        return check.report.count > 0

    def _interleaved(self, rec: RunRecord, model: Any, reference: Resolved, ids: Any, m: Any, device: str,
                     fused: bool) -> None:
        """The dense model and this one timed in alternating rounds over the latency grid
        (``rec.interleaved``). Not on a GPU: there each run is timed through CUDA graphs of
        its own, and benchgpu isolates runs in processes instead. A failure here is a note,
        never a failed run: the run's own latency is already measured."""
        import gc

        import torch

        from .measure.fuse import fuse_checked_
        from .measure.latency import interleaved_grid

        dense = None
        try:
            torch.manual_seed(reference.spec.seed)
            dense, _ = reference.source.load(getattr(torch, reference.spec.model.dtype), device)
            reference.method.apply_(dense, ApplyContext(device=device, kernel=reference.spec.kernel, calibration=None,
                                                        seed=reference.spec.seed, progress=self.progress))
            if fused:  # time dense the way this model is timed
                fuse_checked_(dense, ids[:16].reshape(1, -1).to(device))
            self.log("timing dense and this method in alternating rounds")
            got = interleaved_grid({"dense": dense, "method": model}, ids, m, device, self.progress)
            rec.interleaved = {k: {n: [round(x, 4) for x in v] for n, v in d.items()} for k, d in got.items()}
        except Exception as exc:
            rec.notes.append(f"dense not timed beside the method ({type(exc).__name__}: {exc}); "
                             "the comparison falls back to the two runs' own samples")
        finally:
            dense = None
            gc.collect()

    def _timed_grid(self, rec: RunRecord, model: Any, ids: Any, m: Any, device: str, gpu: bool) -> None:
        from .measure import memory
        from .measure.latency import measure_prefill

        if gpu:
            from .measure.decode_graph import measure_prefill_graphed
        memory.reset_peak(device)
        for b in m.batch_sizes:
            # The decode step is timed first: on a GPU every capture-and-replay cycle in a
            # process slows the next decode figure (H200, one compiled forward, fresh static
            # caches: 4.25, 4.39, 4.47 ms for the same step; benchmarks/decode_cycles.py),
            # while the prefill, compute-bound, does not move by that much.
            self._timed_decode(rec, model, ids, m, device, gpu, b)
            for s in m.prefill_lengths:
                name = f"prefill_b{b}_s{s}"
                kw = dict(batch=b, seq=s, warmup=m.warmup, repetitions=m.repetitions, progress=self.progress)
                samples = self._graphed_or_eager(
                    rec, name, "prefill", "graph", "eager",
                    partial(measure_prefill_graphed, model, ids, **kw) if gpu else None,
                    partial(measure_prefill, model, ids, device=device, **kw))
                self._timing(rec, name, samples)
        for k, v in memory.read_peak(device).items():
            rec.add_metric(f"inference_{k}", Metric(value=v, direction="lower", unit="bytes"))
        rec.kernels.setdefault("timer", "cuda_events" if gpu else "perf_counter_ns")

    def _timed_decode(self, rec: RunRecord, model: Any, ids: Any, m: Any, device: str, gpu: bool,
                      b: int) -> None:
        """The decode step of batch ``b``: graphed on the requested path on a GPU, else eager."""
        from .measure.latency import measure_decode

        name = f"decode_b{b}_c{m.decode_context}"
        kw = dict(batch=b, context=m.decode_context, tokens=m.decode_tokens, warmup=m.warmup,
                  repetitions=m.repetitions, progress=self.progress)
        compile_mode = {"graph": None, "compile+graph": "default", "compile-tuned+graph": "tuned",
                        "compile-tuned+gemv+graph": "tuned",
                        "compile-tuned+gemv+pdl+graph": "tuned-pdl"}[m.decode_path]
        graphed = (partial(self._decode_graphed_or_plain, rec, name, model, ids, m.decode_path, compile_mode, kw)
                   if gpu else None)
        samples = self._graphed_or_eager(
            rec, name, "decode_step", f"{m.decode_path}(static_cache)", "eager(dynamic_cache)",
            graphed, partial(measure_decode, model, ids, device=device, **kw))
        self._timing(rec, name, samples)
        if gpu:
            self._roofline(rec, name, model, b, m.decode_context)

    def _decode_graphed_or_plain(self, rec: RunRecord, name: str, model: Any, ids: Any, path: str,
                                 compile_mode: str | None, kw: dict[str, Any]) -> tuple[Any, ...]:
        """The requested decode path; if it fails (a method's module that cannot be compiled or
        captured that way), the plain ``graph`` path before eager, so the figure stays one of a
        CUDA graph. The record's ``decode_step`` names what was timed; a note says why."""
        try:
            return self._decode_graphed(rec, model, ids, path, compile_mode, kw)
        except Exception as exc:
            if path == "graph":
                raise
            rec.notes.append(f"{name}: decode path {path} failed ({type(exc).__name__}: {str(exc)[:300]}); "
                             "the plain graph path was timed instead")
            from .measure.decode_graph import measure_decode_graphed

            samples, err = measure_decode_graphed(model, ids, compile=None, **kw)
            return samples, err, "graph(static_cache)"

    @staticmethod
    def _decode_graphed(rec: RunRecord, model: Any, ids: Any, path: str, compile_mode: str | None,
                        kw: dict[str, Any]) -> tuple[list[float], float]:
        """The graphed decode step; on the ``+gemv`` path inside ``decode_kernels.gemv_decode``."""
        from .measure.decode_graph import measure_decode_graphed

        if "+gemv" not in path:
            return measure_decode_graphed(model, ids, compile=compile_mode, **kw)
        from .measure.decode_kernels import gemv_decode

        check = ids[:16].reshape(1, -1).to("cuda")
        with gemv_decode(model, "cuda", pdl="+pdl" in path, check_ids=check) as labels:
            out = measure_decode_graphed(model, ids, compile=compile_mode, **kw)
        rec.kernels.update(labels)
        return out

    def _graphed_or_eager(self, rec: RunRecord, name: str, kernel_key: str, graph_label: str,
                          eager_label: str, graphed: Callable[[], tuple[list[float], float]] | None,
                          eager: Callable[[], list[float]]) -> list[float]:
        """On a GPU time the CUDA-graph version (and store its check error); fall back to eager
        timing with a note when the graph cannot be captured or fails its check. ``graphed``
        returns ``(samples, check error)``, or with a third item the label of what it timed
        when that is not ``graph_label``."""
        if graphed is not None:
            try:
                samples, err, *label = graphed()
            except Exception as exc:  # some models' forward cannot be captured
                rec.notes.append(f"{name}: CUDA graph failed ({type(exc).__name__}: {exc}); eager timed")
            else:
                from .measure.decode_graph import GRAPH_CHECK_TOL, INCONCLUSIVE_NOTE

                rec.kernels[kernel_key] = label[0] if label else graph_label
                rec.add_metric(f"{name}_graph_check_rel_err", Metric(value=err))
                if err >= GRAPH_CHECK_TOL:
                    rec.notes.append(f"{name}: " + INCONCLUSIVE_NOTE.format(tol=GRAPH_CHECK_TOL))
                return samples
            rec.kernels[kernel_key] = eager_label
        return eager()

    def _roofline(self, rec: RunRecord, name: str, model: Any, batch: int, context: int) -> None:
        """Bytes one decode step must read, and the fraction of measured bandwidth reached."""
        from .measure.ceilings import decode_bytes_per_token

        nbytes = decode_bytes_per_token(model, batch, context)
        bw = rec.hardware["measured"]["copy_bandwidth_gbs"] * 1e9
        p50 = rec.metrics[f"{name}_ms_p50"] * 1e-3
        rec.add_metric(f"{name}_bytes_per_token", Metric(value=nbytes, unit="bytes"))
        rec.add_metric(f"{name}_roofline_fraction", Metric(value=nbytes / p50 / bw, direction="higher"))

    def _ceilings(self) -> dict[str, float]:
        if self._ceiling_values is None:
            from .measure.ceilings import run_ceilings

            self.log("measuring copy bandwidth and bf16 GEMM rate of this GPU")
            self._ceiling_values = run_ceilings()
        return self._ceiling_values

    def _timing(self, rec: RunRecord, name: str, samples: list[float]) -> None:
        """Raw samples plus p50/p90/mean (with its standard error) as ``<name>_ms_*`` metrics."""
        from .measure.stats import summarize

        rec.samples[f"{name}_ms"] = [round(x, 4) for x in samples]
        st = summarize(samples)
        for stat in ("p50", "p90", "mean"):
            rec.add_metric(f"{name}_ms_{stat}", Metric(value=st[stat], stderr=st["sem"] if stat == "mean" else None,
                                                       direction="lower", n=len(samples), unit="ms"))

    def _save(self, model: Any, tok: Any, rec: RunRecord, method: Any) -> None:
        import json

        assert self.save_model is not None
        self.save_model.mkdir(parents=True, exist_ok=True)
        if hasattr(method, "save_model"):  # a method whose model is not a plain transformers one
            method.save_model(model, tok, self.save_model)
        else:
            model.save_pretrained(self.save_model, safe_serialization=True)
            tok.save_pretrained(self.save_model)
        (self.save_model / "sparsebench_run.json").write_text(
            json.dumps({"run_id": rec.run_id, "spec_key": rec.spec_key, "spec": rec.spec}, indent=1)
        )
        rec.notes.append(f"model saved to {self.save_model.resolve()}")
