"""`smoothsweep`: the command line. It parses arguments and delegates; nothing else lives here.

User errors (`SweepError`: a bad spec, config value or argument, an unreachable server) become one
line on stderr and exit 2 (usage) or 1 (runtime), without a traceback; anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from service.errors import SpecError, SweepError

FORMATS = ("table", "json", "csv")
DEFAULT_UI = "http://127.0.0.1:5000"  # service.mlflow_view's, without importing MLflow here
DEFAULT_CLUSTER_STORAGE = "~/smoothsweep/sweeps"  # service.cluster's, without importing Ray here
JOBS_ADDRESS_HELP = "the head's dashboard, http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS)"


def _jobs_address() -> str | None:
    return os.environ.get("RAY_API_SERVER_ADDRESS")


def main(argv: Sequence[str] | None = None) -> int:
    # MLflow's HTTP client retries a dead server for minutes by default; we retry ourselves.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    # A progress bar per downloaded plot file would bury the sweep's summary.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SweepError as exc:
        return fail(str(exc), exc.exit_code)
    except BrokenPipeError:  # `smoothsweep experiments sinusoid | head`: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def fail(message: str, code: int) -> int:
    print(
        f"smoothsweep: error: {message.splitlines()[0] if message else 'failed'}", file=sys.stderr
    )
    return code


DESCRIPTION = """\
Hyperparameter sweeps of neural-network smoothness experiments: Ray Tune trials, Optuna search
per cell, every trial in MLflow, and the optimum length scale with its CI.

start with:  smoothsweep run sinusoid --profile demo   (local Ray, MLflow in ./mlflow.db)
then:        smoothsweep curves NAME | smoothsweep best NAME | smoothsweep ui"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smoothsweep",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"smoothsweep {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("experiments", help="list the experiments, or show one's fields and metrics")
    s.add_argument("experiment", nargs="?", help="one experiment: its fields, metrics and specs")
    _format(s)
    s.set_defaults(func=cmd_experiments)

    s = sub.add_parser("train", help="one run of an experiment in this process (no Ray, no MLflow)")
    s.add_argument("experiment")
    _overrides(s)
    s.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when visible)")
    s.add_argument(
        "--threads", type=_threads, default=1, metavar="N",
        help="torch intra-op threads (default 1, as a one-CPU trial gets: small nets run slower "
        "on more, next to other work)",
    )  # fmt: skip
    s.add_argument("--artifacts", metavar="DIR", help="write the run's plots (JSON + PNG) here")
    _format(s, ("table", "json"))
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("run", help="run a sweep from a spec (a YAML path or a shipped spec name)")
    s.add_argument("spec")
    s.add_argument("--profile", help="a profile defined in the spec, e.g. smoke")
    _overrides(s)
    s.add_argument("--name", help="sweep name (default: spec name + timestamp)")
    _driven_here(s)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser(
        "extend", help="a new sweep warm-started with an earlier one's trials (widen a range)"
    )
    s.add_argument("sweep", help="the earlier sweep; its trials pool with the new ones")
    _overrides(s)
    s.add_argument("--trials", type=int, help="new trials per cell (default: as the earlier)")
    s.add_argument("--name", help="the new sweep's name (default: SWEEP-ext, -ext2, ...)")
    _driven_here(s)
    s.set_defaults(func=cmd_extend)

    s = sub.add_parser("submit", help="run a sweep on a Ray cluster as a Ray Job")
    s.add_argument("spec")
    s.add_argument("--address", default=_jobs_address(), help=JOBS_ADDRESS_HELP)
    s.add_argument("--profile", help="a profile defined in the spec, e.g. smoke")
    _overrides(s)
    s.add_argument("--name", help="sweep name (default: spec name + timestamp)")
    s.add_argument("--tracking-uri", help="the MLflow server, as the cluster reaches it")
    s.add_argument(
        "--storage",
        default=DEFAULT_CLUSTER_STORAGE,
        help=f"Ray Tune state on the head (default: {DEFAULT_CLUSTER_STORAGE})",
    )
    s.add_argument("--wait", action="store_true", help="follow the job's logs until it ends")
    s.set_defaults(func=cmd_submit)

    s = sub.add_parser("resume", help="continue an interrupted sweep")
    s.add_argument("sweep")
    s.add_argument("--tracking-uri", help="default: the one the sweep ran with")
    s.add_argument(
        "--storage",
        help=f"Ray Tune state (default: ./sweeps; on a cluster {DEFAULT_CLUSTER_STORAGE})",
    )
    s.add_argument(
        "--address",
        help="Ray cluster (default: a local Ray); http://HEAD:8265 resumes a submitted sweep",
    )
    s.add_argument("--wait", action="store_true", help="with an http address: follow the job")
    s.add_argument("--out", help="curve PNG (default: <storage>/<name>/curve.png)")
    _format(s)
    s.set_defaults(func=cmd_resume)

    s = sub.add_parser("jobs", help="the sweeps submitted to a Ray cluster")
    s.add_argument("action", choices=("list", "status", "logs", "stop"))
    s.add_argument("job", nargs="?", help="the job id `submit` printed (not for list)")
    s.add_argument("--address", default=_jobs_address(), help=JOBS_ADDRESS_HELP)
    s.add_argument("--follow", action="store_true", help="logs: stream until the job ends")
    _format(s)
    s.set_defaults(func=cmd_jobs)

    s = sub.add_parser("best", help="the best configs of a sweep, per cell")
    s.add_argument("sweep")
    s.add_argument("--top", type=int, default=1)
    s.add_argument("--metric", help="default: the sweep's objective")
    s.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or ./mlflow.db")
    _format(s)
    s.set_defaults(func=cmd_best)

    s = sub.add_parser("curves", help="test error against the length scale, with the optimum")
    s.add_argument("sweep", nargs="+", help="one sweep, or several of one experiment to pool")
    s.add_argument("--x", help="parameter on the x axis (default: sigma_inv or length_scale)")
    s.add_argument("--by", nargs="*", help="group columns (default: the sweep's axes; or sweep)")
    s.add_argument("--metric", help="default: the sweep's objective")
    s.add_argument(
        "--nuisance", nargs="*", help="parameters profiled out (default: the other searched ones)"
    )
    s.add_argument(
        "--at", action="append", default=[], metavar="NAME=VALUE",
        help="slice at a value instead of profiling, e.g. --at lr=0.001",
    )  # fmt: skip
    s.add_argument("--along", help="an axis to draw the optimum against (default: width if swept)")
    s.add_argument("--out", default=None, help=".png, .pdf or .svg (default: <sweep>-curve.png)")
    s.add_argument("--log", action="store_true", help="also put the figures on the parent run")
    s.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or ./mlflow.db")
    _format(s)
    s.set_defaults(func=cmd_curves)

    s = sub.add_parser(
        "plots", help="Optuna's importance/slice/contour/history per cell, and trials' plots"
    )
    s.add_argument("sweep")
    which = s.add_mutually_exclusive_group()
    which.add_argument("--top", type=int, default=None, help="the best N of each cell (default 3)")
    which.add_argument("--all", action="store_true", help="every trial of the sweep")
    which.add_argument("--trial", help="one trial, by its smoothsweep.trial_id")
    s.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or ./mlflow.db")
    s.set_defaults(func=cmd_plots)

    s = sub.add_parser("dashboard", help="optuna-dashboard on a sweep's studies, live as it runs")
    s.add_argument("sweep")
    s.add_argument(
        "--storage", default="sweeps", help="Ray Tune state directory (default: ./sweeps)"
    )
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.set_defaults(func=cmd_dashboard)

    s = sub.add_parser("sweeps", help="the sweeps in a tracking store, newest first")
    s.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or ./mlflow.db")
    _format(s)
    s.set_defaults(func=cmd_sweeps)

    s = sub.add_parser("export", help="a sweep as one row per replica per trial (CSV or Parquet)")
    s.add_argument("sweep")
    s.add_argument("--format", choices=("csv", "parquet"), default=None,
                   help="default: from --out's suffix, else csv")  # fmt: skip
    s.add_argument("--out", help="default: <sweep>.<format>")
    s.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or ./mlflow.db")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("ui", help="open the MLflow UI on the tracking store")
    s.add_argument("sweep", nargs="?", help="print the link to this sweep (default: the newest)")
    s.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or ./mlflow.db")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=5000)
    s.set_defaults(func=cmd_ui)
    return p


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("smoothsweep")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _format(s: argparse.ArgumentParser, choices: Sequence[str] = FORMATS) -> None:
    s.add_argument("--format", choices=choices, default="table")


def _overrides(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a value (YAML)"
    )


def _location(s: argparse.ArgumentParser) -> None:
    s.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or ./mlflow.db")
    s.add_argument(
        "--storage", default="sweeps", help="Ray Tune state directory (default: ./sweeps)"
    )


def _driven_here(s: argparse.ArgumentParser) -> None:
    """What `run` and `extend` share: where the sweep runs and is kept, and what it prints."""
    _location(s)
    s.add_argument("--address", help="Ray cluster address (default: a local Ray)")
    s.add_argument("--out", help="curve PNG (default: <storage>/<name>/curve.png)")
    s.add_argument("--top", type=int, default=1, help="best configs to print per cell")
    _format(s)


def emit(frame: pd.DataFrame, fmt: str) -> None:
    if fmt == "json":
        print(frame.to_json(orient="records", indent=2))
    elif fmt == "csv":
        print(frame.to_csv(index=False), end="")
    else:
        with pd.option_context("display.max_columns", 50, "display.width", 200):
            print(frame.to_string(index=False) if not frame.empty else "(none)")


# --- commands -------------------------------------------------------------------------------------


def cmd_experiments(args: argparse.Namespace) -> int:
    import trainables

    if args.experiment:
        return _experiment(args.experiment, args.format)
    full = args.format == "json"
    rows = []
    for name in sorted(trainables.REGISTRY):
        module = trainables.load(name)
        config = module.Config
        fields, per_replica = config.describe(), list(config.per_replica_fields())
        metrics = {
            metric: {"mode": m.mode, "final": m.final} for metric, m in config().metrics().items()
        }
        rows.append(
            {
                "experiment": name,
                "objective": config.objective,
                "summary": (module.__doc__ or "").strip().splitlines()[0],
                "fields": fields if full else len(fields),
                "per_replica": per_replica if full else len(per_replica),
                "metrics": metrics if full else len(metrics),
            }
        )
    if full:
        print(json.dumps(rows, indent=2, default=str))
    else:
        emit(pd.DataFrame(rows), args.format)
    return 0


def _experiment(name: str, fmt: str) -> int:
    """One experiment: what it is, its config fields, the metrics it reports, the specs that
    run it."""
    import trainables
    from service.spec import shipped_specs, spec_experiment

    try:
        module = trainables.load(name)
    except trainables.UnknownExperiment as exc:
        raise SpecError(str(exc)) from None
    config = module.Config
    fields = pd.DataFrame(
        [{"field": k, **v} for k, v in config.describe().items()],
        columns=["field", "type", "default", "per_replica", "doc"],
    )
    metrics = pd.DataFrame(
        [{"metric": k, "mode": m.mode, "final_only": m.final}
         for k, m in config().metrics().items()],
        columns=["metric", "mode", "final_only"],
    )  # fmt: skip
    specs = sorted(k for k, path in shipped_specs().items() if spec_experiment(path) == name)
    if fmt == "json":
        print(json.dumps({"experiment": name, "summary": (module.__doc__ or "").strip(),
                          "objective": config.objective, "fields": fields.to_dict("records"),
                          "metrics": metrics.to_dict("records"), "specs": specs},
                         indent=2, default=str))  # fmt: skip
        return 0
    if fmt == "csv":
        emit(fields, fmt)
        return 0
    print(f"{name}: {(module.__doc__ or '').strip().splitlines()[0]}")
    print(f"objective: {config.objective}")
    print("\nfields (per_replica: a tuple trains one value per replica):")
    emit(fields, fmt)
    print("\nmetrics:")
    emit(metrics, fmt)
    print(f"\nshipped specs: {', '.join(specs) or '(none)'}  (smoothsweep run SPEC)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import trainables
    from trainables.artifacts import ARTIFACTS
    from trainables.report import DIVERGED

    try:
        module = trainables.load(args.experiment)
    except trainables.UnknownExperiment as exc:
        raise SpecError(str(exc)) from None
    with _config_errors(args.experiment):
        from trainables.config import parse_override

        config = dict(parse_override(s) for s in args.set)
        module.Config.from_mapping(config)  # fail on a bad key before any compute
    device = _device(args.device)
    import torch

    torch.set_num_threads(args.threads)

    def report(step: int, metrics: Mapping[str, Any]) -> bool:
        shown = " ".join(
            f"{k}={v:.4g}" for k, v in metrics.items() if "/" not in k and isinstance(v, float)
        )
        print(f"step {step}: {shown}", file=sys.stderr, flush=True)
        return False

    with _config_errors(args.experiment):  # a rule only the data or model can check
        metrics = module.run(config, report, device=device)
    payloads = metrics.pop(ARTIFACTS, None) or {}
    if payloads and args.artifacts:
        from service.plots import render_artifact

        out = Path(args.artifacts)
        out.mkdir(parents=True, exist_ok=True)
        for name, payload in payloads.items():
            (out / f"{name}.json").write_text(json.dumps(payload))
            render_artifact(payload, out / f"{name}.png")
        print(f"artifacts: {', '.join(sorted(payloads))} in {out}", file=sys.stderr)
    elif payloads:
        print(f"artifacts: {', '.join(sorted(payloads))} (pass --artifacts DIR to save them)",
              file=sys.stderr)  # fmt: skip
    if args.format == "json":
        print(json.dumps(metrics, indent=2))
    else:
        emit(pd.DataFrame([{k: v for k, v in metrics.items() if "/" not in k}]), "table")
    return 1 if metrics.get(DIVERGED) else 0


@contextlib.contextmanager
def _config_errors(experiment: str) -> Iterator[None]:
    """A config rule the user's `--set` broke: a SpecError naming the experiment."""
    from trainables.config import ConfigError

    try:
        yield
    except ConfigError as exc:
        raise SpecError(f"{experiment}: {exc}") from None


def _threads(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, but got {text!r}")
    return n


def _device(name: str | None) -> str | None:
    """`--device` as torch reads it; a name torch does not know is the user's to fix."""
    if name in (None, "auto"):
        return name
    import torch

    try:
        kind = torch.device(name).type
    except RuntimeError:
        raise SpecError(
            f"`--device` must be a torch device (cpu, cuda, cuda:1, mps, ...), but got {name!r}"
        ) from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise SpecError(f"`--device` {name!r}: torch sees no CUDA device here; use --device cpu")
    return name


def cmd_run(args: argparse.Namespace) -> int:
    from service.spec import load_spec, overlay_spec
    from service.sweep import default_name, run_sweep

    spec = load_spec(args.spec, args.profile, args.set)
    companion = overlay_spec(spec, args.profile)
    name = args.name or default_name(spec)
    _require_writable(args.storage, "--storage")
    if args.address:
        from service.cluster import require_server_tracking
        from service.session import probe_address

        require_server_tracking(args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
        probe_address(args.address)
    print(
        f"sweep {name}: {spec.experiment}, "
        f"{len(spec.cells())} cell(s) x {spec.trials_per_cell} trials",
        flush=True,
    )
    result = run_sweep(
        spec,
        name=name,
        tracking_uri=args.tracking_uri,
        storage=args.storage,
        address=args.address,
        overlay=companion,
    )
    return _finish(result, args)


def cmd_extend(args: argparse.Namespace) -> int:
    from service.spec import load_spec
    from service.sweep import METADATA, earlier_spec, run_sweep
    from service.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    raw = earlier_spec(args.sweep, uri)
    raw["overlay"] = None  # the earlier sweep has its companion; `--set overlay=…` runs one
    overrides = [*args.set, *([f"trials_per_cell={args.trials}"] if args.trials else [])]
    spec = load_spec(raw, None, overrides)
    name = args.name
    if name is None:
        taken = Path(args.storage).expanduser().resolve()
        name = next(
            f"{args.sweep}-ext{n or ''}"
            for n in range(1000)
            if n != 1 and not (taken / f"{args.sweep}-ext{n or ''}" / METADATA).exists()
        )
    _require_writable(args.storage, "--storage")
    cells = len(spec.cells())
    print(f"sweep {name}: extends {args.sweep} ({spec.experiment}), "
          f"{cells} cell(s) x {spec.trials_per_cell} new trials", flush=True)  # fmt: skip
    result = run_sweep(spec, name=name, tracking_uri=uri, storage=args.storage,
                       address=args.address, extends=args.sweep)  # fmt: skip
    return _finish(result, args)


def cmd_submit(args: argparse.Namespace) -> int:
    from service import cluster
    from service.spec import load_spec, overlay_spec
    from service.sweep import default_name

    if not args.address:
        raise SpecError(f"submit needs --address: {JOBS_ADDRESS_HELP}")
    spec = load_spec(args.spec, args.profile, args.set)  # a bad spec fails here, not on the head
    overlay_spec(spec, args.profile)
    uri = cluster.require_server_tracking(
        args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    )
    job = cluster.submit_run(
        args.address,
        args.spec,
        name=args.name or default_name(spec),
        tracking_uri=uri,
        profile=args.profile,
        overrides=args.set,
        storage=args.storage,
    )
    return _submitted(job, args)


def _submitted(job: Any, args: argparse.Namespace) -> int:
    from service import cluster

    print(job.job_id)
    print(
        f"sweep {job.sweep} submitted to {job.address}; "
        f"follow it: smoothsweep jobs logs {job.job_id} --follow --address {job.address}",
        file=sys.stderr,
    )
    if not args.wait:
        return 0
    status = cluster.follow_logs(job.address, job.job_id, lambda s: print(s, end="", flush=True))
    print(f"job {job.job_id}: {status}", file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1


def cmd_resume(args: argparse.Namespace) -> int:
    from service import cluster
    from service.sweep import resume_sweep

    if cluster.is_jobs_address(args.address):
        job = cluster.submit_resume(
            args.address,
            args.sweep,
            storage=args.storage or DEFAULT_CLUSTER_STORAGE,
            tracking_uri=args.tracking_uri,
        )
        return _submitted(job, args)
    if args.address:
        from service.session import probe_address

        probe_address(args.address)
    _require_writable(args.storage or "sweeps", "--storage")
    result = resume_sweep(
        args.sweep,
        storage=args.storage or "sweeps",
        tracking_uri=args.tracking_uri,
        address=args.address,
    )
    args.top = 1
    return _finish(result, args)


def cmd_jobs(args: argparse.Namespace) -> int:
    from service import cluster

    if not args.address:
        raise SpecError(f"jobs needs --address: {JOBS_ADDRESS_HELP}")
    if args.action == "list":
        rows = cluster.list_jobs(args.address)
        emit(pd.DataFrame(rows), args.format)
        return 0
    if not args.job:
        raise SpecError(f"jobs {args.action} needs a JOB id (see `smoothsweep jobs list`)")
    if args.action == "status":
        info = cluster.job_status(args.address, args.job)
        if args.format == "json":
            print(json.dumps(info, indent=2))
        else:
            note = f" ({info['message']})" if info["message"] else ""
            print(f"{info['job']}: {info['status']}{note}")
        return 0 if info["status"] in ("SUCCEEDED", "RUNNING", "PENDING") else 1
    if args.action == "logs":
        if args.follow:
            status = cluster.follow_logs(
                args.address, args.job, lambda t: print(t, end="", flush=True)
            )
            return 0 if status == "SUCCEEDED" else 1
        print(cluster.job_logs(args.address, args.job), end="")
        return 0
    stopped = cluster.stop_job(args.address, args.job)
    print(f"{args.job}: {'stopping' if stopped else 'already ended'}")
    return 0


def _finish(result: Any, args: argparse.Namespace) -> int:
    from service import report

    out = args.out or str(result.storage / "curve.png")
    summary = report.summarise(
        result.name, result.tracking_uri, out=out, top=args.top, log_to_mlflow=True
    )
    print(
        f"\nsweep {result.name}: {result.num_trials} trials ({result.num_errors} errored); "
        f"tracking {result.tracking_uri}"
    )
    if result.ended_by:
        print(f"sweep {result.name} ended at {result.ended_by}, with {result.num_trials} trials")
    print("best configuration(s):")
    emit(_best_view(summary.best), args.format)
    if summary.optimum is not None:
        print("optimum length scale:")
        emit(summary.optimum, args.format)
    if summary.overlay_optimum is not None:
        print(f"optimum length scale of the overlay sweep {result.overlay}:")
        emit(summary.overlay_optimum, args.format)
    if summary.trend is not None:
        print(f"optimum against {summary.along}:")
        emit(summary.trend, args.format)
    for line in summary.warnings():
        print(f"smoothsweep: {line}")
    for figure in filter(None, (summary.figure, summary.trend_figure)):
        print(f"figure: {figure}")
    for sweep in filter(None, (result.name, result.overlay)):
        report.render_trial_plots(sweep, result.tracking_uri)
    report.render_optuna_plots(result.name, result.tracking_uri)
    print(
        f"trial plots: PNG for the best {report.PLOTS_PER_CELL} of each cell "
        f"(`smoothsweep plots {result.name} --all` draws the rest)"
    )
    print(f"resume: smoothsweep resume {result.name} --storage {result.storage.parent}")
    if result.experiment_id:
        from service.mlflow_view import ui_base, ui_link

        base = ui_base(result.tracking_uri)
        how = "" if base != DEFAULT_UI else "`smoothsweep ui`, then "
        print(f"MLflow UI: {how}{ui_link(result.experiment_id, base)}")
    return 1 if result.num_errors else 0


def _best_view(best: pd.DataFrame) -> pd.DataFrame:
    drop = [c for c in best.columns if "/" in c]
    return best.drop(columns=drop)


def cmd_best(args: argparse.Namespace) -> int:
    from service import analysis
    from service.tracking import resolve_tracking_uri

    trials = analysis.load_trials(args.sweep, resolve_tracking_uri(args.tracking_uri))
    axes = list(trials.attrs.get("axes", []))
    best = analysis.best_configs(trials, metric=args.metric, by=axes or None, top=args.top)
    emit(_best_view(best), args.format)
    return 0


def cmd_curves(args: argparse.Namespace) -> int:
    from service import report
    from service.tracking import resolve_tracking_uri

    sweeps = args.sweep if len(args.sweep) > 1 else args.sweep[0]
    out = args.out or f"{args.sweep[0]}-curve.png"
    if Path(out).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise SpecError(f"`--out` must end in .png, .pdf or .svg, but got {out!r}")
    at = {}
    for text in args.at:
        key, _, value = text.partition("=")
        try:
            at[key.strip()] = float(value)
        except ValueError:
            raise SpecError(f"`--at` must look like NAME=NUMBER, but got {text!r}") from None
    summary = report.summarise(
        sweeps, resolve_tracking_uri(args.tracking_uri), out=out, x=args.x, by=args.by,
        metric=args.metric, along=args.along, at=at, nuisance=args.nuisance,
        log_to_mlflow=args.log and isinstance(sweeps, str),
    )  # fmt: skip
    if summary.optimum is None:
        raise SpecError(
            f"sweep {args.sweep[0]!r} has no finished trials with a length scale to plot"
        )
    emit(summary.optimum, args.format)
    if summary.trend is not None and args.format == "table":  # json/csv: one table, the optimum
        print(f"optimum against {summary.along}:")
        emit(summary.trend, "table")
    for line in summary.warnings():
        print(f"smoothsweep: {line}", file=sys.stderr)
    print(f"figure: {summary.figure}", file=sys.stderr)
    if summary.trend_figure is not None:
        print(f"figure: {summary.trend_figure}", file=sys.stderr)
    return 0


def cmd_plots(args: argparse.Namespace) -> int:
    from service import report
    from service.tracking import resolve_tracking_uri

    if args.top is not None and args.top < 1:
        raise SpecError(f"`--top` must be >= 1, but got {args.top}")
    top = None if args.all else (args.top or report.PLOTS_PER_CELL)
    uri = resolve_tracking_uri(args.tracking_uri)
    runs = report.render_trial_plots(args.sweep, uri, top=top, trial=args.trial)
    print(f"plots drawn on {len(runs)} run(s) of sweep {args.sweep}")
    if args.trial is None:
        drawn = report.render_optuna_plots(args.sweep, uri)
        print(f"Optuna plots on the sweep's run: {', '.join(drawn) or '(too few trials)'}")
    return 0


def cmd_sweeps(args: argparse.Namespace) -> int:
    from service.export import list_sweeps
    from service.tracking import resolve_tracking_uri

    emit(list_sweeps(resolve_tracking_uri(args.tracking_uri)), args.format)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from service import analysis
    from service.export import export_format, replica_rows, write_export
    from service.tracking import resolve_tracking_uri

    fmt = args.format or (None if args.out else "csv")
    out = args.out or f"{args.sweep}.{fmt}"
    export_format(Path(out), fmt)  # a wrong name fails before the sweep is read
    rows = replica_rows(analysis.load_trials(args.sweep, resolve_tracking_uri(args.tracking_uri)))
    path = write_export(rows, out, fmt)
    print(f"{len(rows)} rows (one per replica per trial) -> {path}")
    return 0


def _require_writable(directory: str | None, flag: str) -> None:
    """Before Ray starts and before any run is made: a directory Ray Tune can write to."""
    import tempfile

    if directory is None or "://" in directory:
        return  # the default (checked where it is chosen), or a remote store Ray itself checks
    path = Path(directory).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise SpecError(
            f"`{flag}` {directory!r} is not a writable directory ({exc.strerror or exc}); "
            f"pass {flag} DIR with a directory you can write to"
        ) from None


def _require_free_port(host: str, port: int) -> None:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise SweepError(
                f"cannot serve the UI on {host}:{port}: {exc.strerror or exc}; "
                f"pick another port with --port {port + 1}"
            ) from None


def _sweep_link(uri: str, sweep: str | None, base: str) -> str:
    """The runs table of `sweep` (default: the newest sweep in the store), in our view."""
    from service.analysis import _require_sqlite_file, _tracking_errors
    from service.mlflow_view import ui_link

    every = f"{base}/#/experiments?workflowType=machine_learning"
    fresh = uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file()
    if fresh and sweep is None:
        return every  # MLflow makes the store as it starts; there is no sweep in it yet
    _require_sqlite_file(uri)
    from mlflow.tracking import MlflowClient

    with _tracking_errors(uri):
        client = MlflowClient(uri)
        if sweep is not None:
            found = client.get_experiment_by_name(sweep)
            if found is None:
                raise SpecError(f"no sweep named {sweep!r} in {uri}; list them: smoothsweep sweeps")
            return ui_link(found.experiment_id, base)
        newest = client.search_experiments(order_by=["creation_time DESC"], max_results=2)
    newest = [e for e in newest if e.name != "Default"]
    return ui_link(newest[0].experiment_id, base) if newest else every


def cmd_dashboard(args: argparse.Namespace) -> int:
    from service.search import JOURNAL

    journal = Path(args.storage).expanduser().resolve() / args.sweep / JOURNAL
    if not journal.is_file():
        raise SpecError(
            f"sweep {args.sweep!r} has no Optuna journal at {journal}: pass the --storage it ran "
            f"with (sweeps run before smoothsweep kept one have none; `smoothsweep plots` draws "
            f"theirs from MLflow)"
        )
    _require_free_port(args.host, args.port)
    cmd = [str(Path(sys.executable).with_name("optuna-dashboard")), str(journal),
           "--host", args.host, "--port", str(args.port)]  # fmt: skip
    print(f"http://{args.host}:{args.port}/dashboard", flush=True)
    print(" ".join(cmd), file=sys.stderr, flush=True)
    os.execvp(cmd[0], cmd)
    return 0  # not reached


def cmd_ui(args: argparse.Namespace) -> int:
    from service.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    _require_free_port(args.host, args.port)
    link = _sweep_link(uri, args.sweep, f"http://{args.host}:{args.port}")
    cmd = [
        str(Path(sys.executable).with_name("mlflow")),  # the one installed beside us
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    print(" ".join(cmd), file=sys.stderr)
    print(link, flush=True)
    print(
        "(MLflow's own links open its GenAI pages until you pick 'Model training' in its "
        "sidebar once; your browser keeps that choice)",
        file=sys.stderr,
    )
    # The UI needs no job runner; without it the server starts in about half the time.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execvp(cmd[0], cmd)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())
