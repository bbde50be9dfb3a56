"""The ``sparsebench`` command: run, sweep, ls, validate, show, gate, site.

Method and task options become typed flags generated from their config classes:
``--sparsity 0.6 --pattern 2:4`` for the method, ``--perplexity-window 256`` for a task.
Exit codes: 0 ok (or skipped), 1 a run failed, 2 bad input (nothing was run or written).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, SparsebenchError, UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 too; keep our one-paragraph style
        raise UsageError(f"{message}. Run '{self.prog} --help' for the options.")


def option_flag(name: str) -> str:
    """The command-line flag of a config or measure field (``decode_path`` -> ``--decode-path``)."""
    return "--" + name.replace("_", "-")


def _on_off(text: str) -> bool | None:
    """``on``/``off``/``auto`` (also true/false, as a stored spec writes them) -> True/False/None."""
    value = {"on": True, "true": True, "off": False, "false": False, "auto": None}.get(text.lower(), "?")
    if value == "?":
        raise argparse.ArgumentTypeError(f"expected on, off or auto, got '{text}'")
    return value  # type: ignore[return-value]


def base_parser() -> argparse.ArgumentParser:
    from .api import DECODE_PATHS

    p = _Parser(prog="sparsebench", description="Benchmark LLM efficiency methods: accuracy, latency, memory.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a method (and its dense baseline) on a model",
                         description="Run a method and its dense baseline. Method options are flags "
                         "named after the method's config fields (see 'sparsebench ls methods').")
    run.add_argument("--spec", help="YAML run spec; flags given here override it")
    run.add_argument("--method", help="method name (default: dense)")
    run.add_argument("--model", help="'llama' (embedded default), a hub id, or a local model directory")
    run.add_argument("--task", action="append", dest="tasks", help="task name; repeat for several (default: perplexity, lastword)")
    run.add_argument("--profile", help="hardware profile id or YAML path (default: auto)")
    run.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"])
    run.add_argument("--seed", type=int)
    run.add_argument("--kernel", choices=["auto", "ref", "fast"])
    run.add_argument("--calib-samples", type=int, help="calibration sequences (default 32)")
    run.add_argument("--calib-seq-len", type=int, help="tokens per calibration sequence (default 512)")
    run.add_argument("--warmup", type=int)
    run.add_argument("--repetitions", type=int)
    run.add_argument("--batch-sizes", type=int, nargs="+")
    run.add_argument("--prefill-lengths", type=int, nargs="+")
    run.add_argument("--decode-context", type=int)
    run.add_argument("--decode-tokens", type=int)
    run.add_argument("--decode-path", choices=list(DECODE_PATHS),
                     help="GPU decode step: eager forward in a CUDA graph (default), torch.compile'd, "
                     "compiled with inductor's coordinate-descent tuning, or that plus the dense GEMV "
                     "kernel for one-row products and the decode attention kernel over the static cache")
    run.add_argument("--fuse-projections", type=_on_off, metavar="on|off|auto",
                     help="latency only: q/k/v and gate/up of each layer as one GEMV each "
                     "(default auto: on for a GPU, off on a CPU)")
    run.add_argument("--no-latency", action="store_true", help="skip latency measurement")
    run.add_argument("--results", default="results", help="results directory (default: results)")
    run.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    run.add_argument("--save-model", help="write the compressed model here (transformers format, safetensors)")
    run.add_argument("--fresh-baseline", action="store_true", help="measure the dense baseline even if a record exists")
    run.add_argument("--no-progress", action="store_true")

    sw = sub.add_parser("sweep", help="run a grid of runs from a YAML sweep file (resumable)",
                        description="Expand a sweep file (models x method configs x task sets x "
                        "profiles), show the plan, and run what has no ok record yet on this machine, "
                        "each run in its own process. Re-run the same command to continue after a "
                        "crash or Ctrl-C. Format: see the README's Sweeps section. Exit 0: all ok or "
                        "skipped; 1: some run failed; 2: bad input (nothing run).")
    sw.add_argument("sweep_file", metavar="FILE", help="the sweep file, e.g. sweeps/pruning.yaml")
    sw.add_argument("--executor", default="local", help="local (default: a process per GPU, or one "
                    "at a time on CPU), ray, or an installed third-party executor")
    sw.add_argument("--results", default="results", help="results directory (default: results)")
    sw.add_argument("--dry-run", action="store_true", help="show the plan and stop")
    sw.add_argument("--workers", type=int, help="runs at once (default: one per visible GPU; 1 on CPU; "
                    "for ray: as many as the cluster fits)")
    sw.add_argument("--logs", help="local executor: folder for each run's output (default: a temp dir)")
    sw.add_argument("--ray-address", help="ray: 'auto', 'ray://host:10001', or leave out to start a local Ray")
    sw.add_argument("--ray-cpus-per-task", type=float, default=1, help="ray: CPUs per task (default 1)")
    sw.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    sw.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    sw.add_argument("--no-progress", action="store_true", help="plain status lines, no progress bar")

    ls = sub.add_parser("ls", help="list methods, tasks, models, profiles or runs")
    ls.add_argument("what", nargs="?", default="all", choices=["all", "methods", "tasks", "models", "profiles", "runs"])
    ls.add_argument("--results", default="results")

    val = sub.add_parser("validate", help="check a YAML run spec without running it")
    val.add_argument("spec")

    show = sub.add_parser("show", help="show a stored run record")
    show.add_argument("run_id")
    show.add_argument("--results", default="results")
    show.add_argument("--json", action="store_true", help="print the whole record as JSON")

    site = sub.add_parser("site", help="build or serve the leaderboard website (needs the 'site' extra)")
    site_sub = site.add_subparsers(dest="site_command", required=True, parser_class=_Parser)
    for name, desc in (("build", "generate the site from records and run mkdocs build --strict"),
                       ("serve", "build, then serve the site on 127.0.0.1")):
        sp = site_sub.add_parser(name, help=desc, description=desc)
        sp.add_argument("--results", default="results", help="results directory (default: results)")
        sp.add_argument("--out", default="site/build", help="output directory (default: site/build)")
        if name == "serve":
            sp.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000)")
    gate = sub.add_parser("gate", help="compare candidate records with a baseline file (CI regression gate)",
                          description="Compare candidate records with the baseline records of the same spec "
                          "key. Exit 0: all compared and passed; 1: a regression, or a candidate that could "
                          "not be compared; 2: unusable input (nothing written).")
    gate.add_argument("candidates", nargs="+", metavar="CANDIDATE", help="record files or directories of records")
    gate.add_argument("--baseline", required=True, help="baseline file, e.g. results/baselines/cpu.json")
    gate.add_argument("--report", help="also write the Markdown report here")
    gate.add_argument("--update-baseline", action="store_true",
                      help="replace the baseline with the candidates' ok records (after printing the comparison)")
    gate.add_argument("--latency-threshold", type=float, default=0.10,
                      help="latency/memory ratio above which a significant slowdown fails (default 0.10)")
    gate.add_argument("--alpha", type=float, default=0.01,
                      help="significance level of the one-sided Mann-Whitney test on latency samples")
    gate.add_argument("--allow-unmatched", action="store_true",
                      help="exit 0 even when some candidates have no comparable baseline (still listed)")
    return p


# ----------------------------------------------------------------------------- run


def _plugin_parser(method_cls: Any, task_classes: list[Any]) -> argparse.ArgumentParser:
    p = _Parser(prog="sparsebench run", add_help=False)
    for name, f in method_cls.Config.model_fields.items():
        p.add_argument(option_flag(name), dest=f"m__{name}", help=f.description)
    for tcls in task_classes:
        for name in tcls.Config.model_fields:
            p.add_argument(option_flag(f"{tcls.name}_{name}"), dest=f"t__{tcls.name}__{name}")
    return p


def _build_spec(args: argparse.Namespace, extra: list[str]) -> Any:
    from . import registry
    from .specfile import load_spec_dict, normalize, spec_from_dict

    data: dict[str, Any] = load_spec_dict(args.spec) if args.spec else {}
    data = normalize(data)
    if args.method:
        data["method"] = {"name": args.method, "config": {}} if data.get("method", {}).get("name") != args.method \
            else data["method"]
    if args.model:
        data["model"] = {**data.get("model", {}), "name": args.model}
    if args.dtype:
        data["model"] = {**data.get("model", {}), "dtype": args.dtype}
    if args.tasks:
        old = {t["name"]: t for t in data.get("tasks", []) if isinstance(t, dict) and "name" in t}
        data["tasks"] = [old.get(t, {"name": t}) for t in args.tasks]
    for key in ("profile", "seed", "kernel"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    cal = {"samples": args.calib_samples, "seq_len": args.calib_seq_len}
    if any(v is not None for v in cal.values()):
        data["calibration"] = {**(data.get("calibration") or {}), **{k: v for k, v in cal.items() if v is not None}}
    meas = {"warmup": args.warmup, "repetitions": args.repetitions, "batch_sizes": args.batch_sizes,
            "prefill_lengths": args.prefill_lengths, "decode_context": args.decode_context,
            "decode_tokens": args.decode_tokens, "decode_path": args.decode_path,
            "fuse_projections": args.fuse_projections}
    meas = {k: v for k, v in meas.items() if v is not None}
    if args.no_latency:
        meas["enabled"] = False
    if meas:
        data["measure"] = {**(data.get("measure") or {}), **meas}

    method_name = (data.get("method") or {}).get("name", "dense")
    method_cls = registry.methods().get(method_name)
    task_names = [t["name"] for t in data.get("tasks", [])] or ["perplexity", "lastword"]
    task_classes = [registry.tasks().get(t) for t in task_names]
    opts, unknown = _plugin_parser(method_cls, task_classes).parse_known_args(extra)
    if unknown:
        allowed = [option_flag(n) for n in method_cls.Config.model_fields] + [
            option_flag(f"{t.name}_{n}") for t in task_classes for n in t.Config.model_fields]
        raise UsageError(
            f"Unknown option(s) {' '.join(unknown)} for method '{method_name}'. Its options: "
            f"{', '.join(allowed[:len(method_cls.Config.model_fields)]) or '(none)'}; task options: "
            f"{', '.join(allowed[len(method_cls.Config.model_fields):]) or '(none)'}."
        )
    mcfg = dict((data.get("method") or {}).get("config") or {})
    tcfg: dict[str, dict[str, Any]] = {}
    for dest, val in vars(opts).items():
        if val is None:
            continue
        if dest.startswith("m__"):
            mcfg[dest[3:]] = val
        else:
            _, tname, field = dest.split("__", 2)
            tcfg.setdefault(tname, {})[field] = val
    data["method"] = {**(data.get("method") or {"name": method_name}), "config": mcfg}
    if tcfg:
        tasks = data.get("tasks") or [{"name": n} for n in task_names]
        data["tasks"] = [{**t, "config": {**(t.get("config") or {}), **tcfg.get(t["name"], {})}} for t in tasks]
    return spec_from_dict(data, origin="The run spec")


def cmd_run(args: argparse.Namespace, extra: list[str]) -> int:
    from .report import comparison_table
    from .runner import Runner

    spec = _build_spec(args, extra)
    sinks = []
    if not args.no_mlflow:
        from .sinks.mlflow_sink import MlflowSink

        sinks.append(MlflowSink(args.tracking_uri))
    runner = Runner(args.results, sinks=sinks, progress=not args.no_progress,
                    reuse_baseline=not args.fresh_baseline, save_model=args.save_model)
    records = runner.run(spec)
    print(comparison_table(records))
    for r in records:
        print(f"{r.status:8s} {r.run_id}  ({r.spec['method']['name']})")
    if sinks and not runner.sink_errors:
        print(f"logged to MLflow at {sinks[0].uri}")
    return EXIT_FAILED if any(r.status == "failed" for r in records) else EXIT_OK


def cmd_sweep(args: argparse.Namespace) -> int:
    from .store import ResultsStore
    from .sweep import load_sweep, make_executor, precheck
    from .sweep.driver import Driver
    from .sweep.plan import build_plan

    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1.")
    sweep = load_sweep(args.sweep_file)
    precheck(sweep)
    store = ResultsStore(args.results)
    store.all()  # a corrupt or newer-schema record stops us here, before any run
    executor = make_executor(args.executor, workers=args.workers, logs=args.logs, address=args.ray_address,
                             cpus_per_task=args.ray_cpus_per_task)
    try:
        plan = build_plan(sweep, executor.machine(), store)
        print(plan.render(), flush=True)
        print(f"executor: {executor.describe()}", flush=True)
        if args.dry_run or not plan.todo():
            print("nothing to run" if not plan.todo() else "dry run: nothing was run")
            return EXIT_OK
        sinks = []
        if not args.no_mlflow:
            from .sinks.mlflow_sink import MlflowSink

            sinks.append(MlflowSink(args.tracking_uri))
        summary = Driver(plan, executor, store, sinks=sinks, progress=not args.no_progress).run()
    finally:
        executor.close()
    print(summary.render())
    return summary.exit_code


# ----------------------------------------------------------------------------- others


def cmd_ls(args: argparse.Namespace) -> int:
    from . import registry

    out = []
    if args.what in ("all", "methods"):
        out.append("methods:")
        for name, cls in registry.methods().items():
            opts = ", ".join(f"{n}={f.default!r}" for n, f in cls.Config.model_fields.items())
            out.append(f"  {name:12s} [{cls.family}] {cls.description}" + (f"  options: {opts}" if opts else ""))
        for name, why in registry.methods().broken.items():
            out.append(f"  {name:12s} BROKEN: {why}")
    if args.what in ("all", "tasks"):
        out.append("tasks:")
        for name, cls in registry.tasks().items():
            out.append(f"  {name:12s} {cls.description} (version {cls.Config.version})")
        for name, why in registry.tasks().broken.items():
            out.append(f"  {name:12s} BROKEN: {why}")
    if args.what in ("all", "models"):
        from .models import known_models

        out.append("models (also: any hub id org/name, or a local model directory):")
        for alias, desc in known_models().items():
            out.append(f"  {alias:12s} {desc}")
    if args.what in ("all", "profiles"):
        from .profiles import load_profiles

        out.append("profiles (default: auto, chosen from this machine):")
        for pid, prof in load_profiles().items():
            out.append(f"  {pid:12s} {prof.description}")
    if args.what == "runs":
        from .store import ResultsStore

        for r in ResultsStore(args.results):
            ppl = r.metrics.get("perplexity")
            out.append(f"{r.run_id:45s} {r.status:7s} {r.spec['method']['name']:10s} {r.spec['model']['name']:14s} "
                       f"{r.hardware.get('profile', '?'):6s} ppl={ppl:.3f}" if ppl else
                       f"{r.run_id:45s} {r.status:7s} {r.spec['method']['name']:10s} {r.spec['model']['name']:14s} "
                       f"{r.hardware.get('profile', '?')}")
    print("\n".join(out))
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from .profiles.hardware import fingerprint, machine_info
    from .resolve import resolve
    from .specfile import load_spec

    spec = load_spec(args.spec)
    resolved = resolve(spec, fingerprint(machine_info()))
    print(json.dumps(resolved.spec.model_dump(mode="json"), indent=2))
    print(f"valid; spec key {resolved.spec.key()}")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from .store import ResultsStore

    rec = ResultsStore(args.results).get(args.run_id)
    if args.json:
        print(json.dumps(rec.model_dump(mode="json"), indent=1, sort_keys=True))
        return EXIT_OK
    print(f"run {rec.run_id}  status={rec.status}  spec_key={rec.spec_key}  created={rec.created_at}")
    print(f"method {rec.spec['method']['name']} {json.dumps(rec.spec['method']['config'])}")
    print(f"model {rec.spec['model']['name']} ({rec.spec['model']['dtype']}), profile {rec.hardware.get('profile')}")
    git = rec.env.get("git", {})
    print(f"git {git.get('sha')} dirty={git.get('dirty')}; device "
          f"{rec.hardware.get('fingerprint', {}).get('gpu_name') or rec.hardware.get('fingerprint', {}).get('cpu')}")
    if rec.error or rec.reason:
        print(f"{rec.status}: {rec.error or rec.reason}")
    for k in sorted(rec.metrics):
        info = rec.metric_info.get(k)
        err = f" ± {info.stderr:.4g}" if info and info.stderr else ""
        print(f"  {k:40s} {rec.metrics[k]:.6g}{err}")
    print("phases: " + ", ".join(f"{k}={v:.1f}s" for k, v in rec.phases.items()))
    return EXIT_OK


def cmd_site(args: argparse.Namespace) -> int:
    try:
        from .sitegen import build, serve
    except ImportError as exc:
        raise UsageError(f"The site needs the 'site' extra ({exc}): pip install 'sparsebench[site]'.") from None
    out = build(args.results, args.out)
    print(f"built the site in {out}")
    if args.site_command == "serve":
        serve(out, args.port)
    return EXIT_OK


def cmd_gate(args: argparse.Namespace) -> int:
    from .gate import Settings, gate

    if args.latency_threshold < 0 or not 0 < args.alpha < 1:
        raise UsageError("--latency-threshold must be >= 0 and --alpha between 0 and 1.")
    return gate(args.candidates, args.baseline, report=args.report, update=args.update_baseline,
                settings=Settings(args.latency_threshold, args.alpha), allow_unmatched=args.allow_unmatched)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, extra = base_parser().parse_known_args(argv)
        if args.command != "run" and extra:
            raise UsageError(f"Unknown argument(s) for '{args.command}': {' '.join(extra)}.")
        if args.command == "run":
            return cmd_run(args, extra)
        return {"ls": cmd_ls, "validate": cmd_validate, "show": cmd_show, "gate": cmd_gate,
                "site": cmd_site, "sweep": cmd_sweep}[args.command](args)
    except SparsebenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; records already written are kept.", file=sys.stderr)
        return 130
    except SystemExit as exc:  # --help
        if argv[:1] == ["run"] and ("-h" in argv or "--help" in argv):
            _print_method_help(argv)
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE


def _print_method_help(argv: list[str]) -> None:
    """After ``run --help``, list the options of the ``--method`` given (default dense)."""
    from . import registry

    name = "dense"
    for i, a in enumerate(argv):
        if a == "--method" and i + 1 < len(argv):
            name = argv[i + 1]
        elif a.startswith("--method="):
            name = a.split("=", 1)[1]
    try:
        cls = registry.methods().get(name)
    except SparsebenchError as exc:
        print(f"\n{exc}")
        return
    p = _Parser(prog="sparsebench run", add_help=False)
    group = p.add_argument_group(f"options of method '{name}'", cls.description)
    for field_name, f in cls.Config.model_fields.items():
        group.add_argument(option_flag(field_name), metavar="VALUE",
                           help=f"{f.description or ''} (default: {f.default!r})".strip())
    help_text = p.format_help()
    print("\n" + help_text[help_text.index("\n\n") + 2:] if "\n\n" in help_text else help_text)


if __name__ == "__main__":
    sys.exit(main())
