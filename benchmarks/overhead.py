"""Service overhead: the same sweep of short trials as stock Ray Tune and as `run_sweep`.

What it measures: the wall time of one 24-trial sweep of tiny `sinusoid` trials (width 16, 20 steps,
evaluation every 10 steps, 1 replica, 200-point test sets; 1 cell x 24 trials, 2 at a time, 1 CPU
each), run twice in one process, on one `ray.init`:

- stock: Ray Tune as most users set it up: `tune.Tuner` over the same trainable
  (`service.trial.run_trial` via `tune.with_parameters`), `OptunaSearch` over the same space,
  `reuse_actors=False`, Ray's `MLflowLoggerCallback` into its own fresh SQLite store, and Tune's
  default CSV/JSON/TensorBoard loggers on;
- ours: `service.sweep.run_sweep` on the equivalent spec, into its own fresh SQLite store.

Both MLflow stores are created before timing (SQLite's schema migration is a one-time cost of
seconds), Ray is warmed by a throwaway task, each side's modules are imported before its clock
starts (imports are a process's cost, not a sweep's), each side first runs an untimed 2-trial sweep
of its own (a process's first Tune fit costs more, whichever side it is), and each sweep must log
all its trials to MLflow (checked), so that neither side wins by doing less. The pure compute of a
trial (`trainables.sinusoid.run` in this process, averaged) gives the service overhead per trial
= wall x concurrency / trials - compute. A third, short sweep of ours (2 x max_concurrent trials)
splits our wall time into a one-time start-up and a marginal overhead per trial; it runs when
--trials is at least 3x that (`--no-marginal` skips it).

Targets: ours >= 8x faster than stock; ours <= 0.5 s of overhead per trial, <= 0.15 s of it
marginal (past the start-up).

Run (about 2-3 minutes on 2 CPU cores):

    .venv/bin/python benchmarks/overhead.py
    .venv/bin/python benchmarks/overhead.py --order ours-first   # check the order effect
    .venv/bin/python benchmarks/overhead.py --trials 8           # a quick look

The last line is the headline: `overhead_speedup: X.Xx` (stock wall time / ours).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

SPEEDUP_TARGET = 8.0
OVERHEAD_TARGET_S = 0.5
MARGINAL_TARGET_S = 0.15  # per trial, past the start-up
SIGMA_INV = {"low": 0.05, "high": 20.0}  # search_spaces/sinusoid.yaml
LR = {"low": 1e-3, "high": 1e-2}
# Tune settings read from the environment at fit time. service.session.configure_tune sets them for
# our sweeps; stock Ray Tune runs with Ray's defaults (unset: loggers on, checkpoint period "auto").
TUNE_ENV = ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "TUNE_GLOBAL_CHECKPOINT_S")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=24, help="trials per sweep (one cell)")
    p.add_argument("--max-concurrent", type=int, default=2, help="trials running at once")
    p.add_argument("--width", type=int, default=16, help="hidden units")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per trial")
    p.add_argument("--eval-every", type=int, default=10, help="steps between reports")
    p.add_argument("--test-points", type=int, default=200, help="test and o.o.d. points")
    p.add_argument(
        "--compute-repeats", type=int, default=20, help="in-process runs averaged for compute"
    )
    p.add_argument(
        "--order",
        choices=["stock-first", "ours-first"],
        default="stock-first",
        help="which sweep runs first (the second may profit from a warmer OS cache)",
    )
    p.add_argument(
        "--no-marginal",
        action="store_true",
        help="skip the short sweep of ours that splits its overhead: start-up + per trial",
    )
    p.add_argument("--workdir", type=Path, default=None, help="keep stores here (default: tmp)")
    return p.parse_args(argv)


def fixed_config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "replicas": 1,
        "steps": args.steps,
        "eval_every": args.eval_every,
        "test_points": args.test_points,
        "ood_points": args.test_points,
    }


def spec_dict(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "name": "overhead",
        "experiment": "sinusoid",
        "objective": {"metric": "test_mse", "mode": "min"},
        "fixed": fixed_config(args),
        "axes": {"width": [args.width]},
        "search": {"sigma_inv": {**SIGMA_INV, "log": True}, "lr": {**LR, "log": True}},
        "trials_per_cell": args.trials,
        "max_concurrent": args.max_concurrent,
        "sampler": "tpe",
        "resources": {"cpu": 1},
        "pack": 1,  # one configuration per trial, as stock Ray Tune (benchmarks/packing.py: packs)
    }


@contextlib.contextmanager
def environ(values: dict[str, str | None]) -> Iterator[None]:
    """Set (or, for None, unset) environment variables for the duration of the block."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def fresh_store(path: Path) -> str:
    """A SQLite MLflow store, migrated now so that no sweep pays for its schema."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{path}"
    MlflowClient(uri).search_experiments(max_results=1)
    return uri


def compute_per_trial(args: argparse.Namespace, repeats: int) -> float:
    """Seconds of one trial's own work (data, model, training, evaluation) on one thread."""
    import torch

    from trainables import sinusoid

    config = {**fixed_config(args), "width": args.width, "sigma_inv": 1.0, "lr": 3e-3}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what run_trial sets for a 1-CPU trial
    try:
        sinusoid.run(config)  # first-call costs (allocator, kernels) are not per trial
        times = []
        for seed in range(repeats):
            start = time.perf_counter()
            sinusoid.run({**config, "seed": seed})
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return statistics.fmean(times)


def run_stock(args: argparse.Namespace, uri: str, storage: Path) -> float:
    """Ray Tune as commonly set up; returns the wall time of building and fitting the Tuner."""
    import optuna
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.search.optuna import OptunaSearch

    from service.trial import run_trial

    param_space = {
        **fixed_config(args),
        "width": args.width,
        "sigma_inv": tune.loguniform(SIGMA_INV["low"], SIGMA_INV["high"]),
        "lr": tune.loguniform(LR["low"], LR["high"]),
    }
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, experiment="sinusoid", metric="test_mse", mode="min"),
        {"cpu": 1},
    )
    start = time.perf_counter()
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric="test_mse",
            mode="min",
            search_alg=OptunaSearch(sampler=optuna.samplers.TPESampler(seed=0)),
            num_samples=args.trials,
            max_concurrent_trials=args.max_concurrent,
            reuse_actors=False,
        ),
        run_config=tune.RunConfig(
            name="stock",
            storage_path=str(storage),
            callbacks=[MLflowLoggerCallback(tracking_uri=uri, experiment_name="stock")],
            verbose=0,  # as ours (progress=False): no console reporting in either
        ),
    )
    results = tuner.fit()
    wall = time.perf_counter() - start
    errors = [r.error for r in results if r.error is not None]
    assert not errors, f"stock sweep had {len(errors)} failed trial(s): {errors[0]!r}"
    return wall


def run_ours(args: argparse.Namespace, uri: str, storage: Path, name: str = "ours") -> float:
    """`service.sweep.run_sweep`; returns its wall time (Ray is already up)."""
    from service.spec import load_spec
    from service.sweep import run_sweep

    spec = load_spec(spec_dict(args))
    start = time.perf_counter()
    result = run_sweep(spec, name=name, tracking_uri=uri, storage=storage, progress=False)
    wall = time.perf_counter() - start
    assert result.num_errors == 0, f"our sweep had {result.num_errors} failed trial(s)"
    return wall


def logged_runs(uri: str, experiment: str, filter_string: str = "") -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r} in {uri}"
    return client.search_runs([exp.experiment_id], filter_string, max_results=1000)


def check_logged(uri: str, experiment: str, trials: int, filter_string: str = "") -> None:
    runs = logged_runs(uri, experiment, filter_string)
    assert len(runs) == trials, f"{experiment}: {len(runs)} MLflow runs, expected {trials}"
    missing = [r.info.run_id for r in runs if "test_mse" not in r.data.metrics]
    assert not missing, f"{experiment}: {len(missing)} run(s) have no test_mse"


def import_ours() -> None:
    """What `run_sweep` imports on first use (the analysis, SciPy, Matplotlib for the best trials'
    plots: ~1.5 s): a cost of the process, paid once, as stock's imports are paid before its clock
    starts. Left in, it would land on whichever sweep of ours runs first and, through the
    split below, be charged to every trial (0.1 s per trial in a 24-trial sweep)."""
    import service.mlflow_view  # noqa: F401
    import service.optimum  # noqa: F401
    import service.report  # noqa: F401
    import service.sweep  # noqa: F401


def warm_ray() -> None:
    """A throwaway task: the first worker start and function export are not any sweep's cost."""
    import ray

    @ray.remote(num_cpus=1)
    def noop() -> int:
        import torch  # noqa: F401  (what every trial imports; warms the page cache)

        return 0

    ray.get([noop.remote() for _ in range(2)])


def warm_tune(args: argparse.Namespace, workdir: Path, ours_env: dict[str, str | None]) -> None:
    """A 2-trial sweep of each side, untimed, into throwaway stores. A process's first Tune fit
    (Tune's lazy imports, first placement groups, SQLAlchemy's first statement compiles) costs
    ~0.5-2 s once; left in, it lands on whichever side runs first, and the order decides the
    ratio (7.3x ours-first against 11.9x stock-first before this warm-up)."""
    warm = argparse.Namespace(**{**vars(args), "trials": 2})
    with environ({k: None for k in TUNE_ENV}):
        run_stock(warm, fresh_store(workdir / "warm-stock.db"), workdir / "warm-tune")
    with environ(ours_env):
        run_ours(warm, fresh_store(workdir / "warm-ours.db"), workdir / "warm-tune", name="warm")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    keep = args.workdir is not None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="overhead-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # Ray's unix sockets live under its temp dir, whose path must stay short.
    ray_tmp = None
    if "RAY_TMPDIR" not in os.environ:
        ray_tmp = tempfile.mkdtemp(prefix="ssb", dir="/tmp")
        os.environ["RAY_TMPDIR"] = ray_tmp

    import ray

    from service import conventions as cv
    from service.session import start_ray

    print(f"compute: {args.compute_repeats} in-process trials ...", flush=True)
    compute = compute_per_trial(args, args.compute_repeats)
    small = 2 * args.max_concurrent  # the short sweep: every slot runs two trials
    marginal = not args.no_marginal and args.trials >= 3 * small  # else the slope is noise
    uris = {
        "stock": fresh_store(workdir / "stock.db"),
        "ours": fresh_store(workdir / "ours.db"),
        **({"ours-small": fresh_store(workdir / "ours-small.db")} if marginal else {}),
    }
    start_ray()
    ours_env = {k: os.environ.get(k) for k in TUNE_ENV}  # as start_ray left them
    cpus = int(ray.cluster_resources().get("CPU", 1))
    concurrency = min(args.max_concurrent, cpus)
    warm_ray()
    import_ours()
    warm_tune(args, workdir, ours_env)

    stock_env: dict[str, str | None] = {k: None for k in TUNE_ENV}
    order = ["stock", "ours"] if args.order == "stock-first" else ["ours", "stock"]
    walls: dict[str, float] = {}
    try:
        for which in order:
            print(f"{which}: {args.trials} trials ...", flush=True)
            if which == "stock":
                with environ(stock_env):
                    walls[which] = run_stock(args, uris[which], workdir / "stock-tune")
            else:
                with environ(ours_env):
                    walls[which] = run_ours(args, uris[which], workdir / "ours-tune")
        if marginal:
            # Last, so that if anything it profits from warmth: the slope below is then an upper
            # bound of the true per-trial overhead.
            print(f"ours-small: {small} trials ...", flush=True)
            short = argparse.Namespace(**{**vars(args), "trials": small})
            with environ(ours_env):
                walls["ours-small"] = run_ours(
                    short, uris["ours-small"], workdir / "ours-tune", name="ours-small"
                )
    finally:
        ray.shutdown()
        if ray_tmp is not None:
            shutil.rmtree(ray_tmp, ignore_errors=True)

    check_logged(uris["stock"], "stock", args.trials)
    trial_runs = f"tags.`{cv.ROLE}` = '{cv.ROLE_TRIAL}'"
    check_logged(uris["ours"], "ours", args.trials, trial_runs)
    if marginal:
        check_logged(uris["ours-small"], "ours-small", small, trial_runs)

    overhead = {k: w * concurrency / args.trials - compute for k, w in walls.items()}
    speedup = walls["stock"] / walls["ours"]
    print()
    print(
        f"{args.trials} trials of sinusoid (width {args.width}, {args.steps} steps, eval every "
        f"{args.eval_every}), {concurrency} at a time on {cpus} CPUs; order: {args.order}"
    )
    print(f"compute per trial (in-process, 1 thread): {compute:.3f} s")
    print(f"{'':8}{'wall s':>10}{'overhead s/trial':>20}")
    for which in ("stock", "ours"):
        print(f"{which:8}{walls[which]:>10.1f}{overhead[which]:>20.2f}")
    ok_speed = "met" if speedup >= SPEEDUP_TARGET else "MISSED"
    ok_over = "met" if overhead["ours"] <= OVERHEAD_TARGET_S else "MISSED"
    print(f"target: ours >= {SPEEDUP_TARGET:g}x faster than stock: {speedup:.1f}x ({ok_speed})")
    print(
        f"target: ours <= {OVERHEAD_TARGET_S:g} s overhead per trial: "
        f"{overhead['ours']:.2f} s ({ok_over})"
    )
    if marginal:
        # wall = start-up + trials x (compute + overhead) / concurrency, from two sweep lengths.
        slope = (walls["ours"] - walls["ours-small"]) / (args.trials - small)
        startup = walls["ours-small"] - small * slope
        per_trial = slope * concurrency - compute
        ok_marginal = "met" if per_trial <= MARGINAL_TARGET_S else "MISSED"
        print(
            f"ours split ({small}- vs {args.trials}-trial sweep): start-up {startup:.1f} s "
            f"(first trial actor: worker spawn + torch import), then "
            f"{per_trial:.2f} s overhead per trial (target <= {MARGINAL_TARGET_S:g} s: "
            f"{ok_marginal})"
        )
    kept = f"; stores kept in {workdir}" if keep else ""
    print(f"MLflow: {args.trials} runs logged by each sweep (checked){kept}")
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"overhead_speedup: {speedup:.1f}x")


if __name__ == "__main__":
    main()
