"""The analysis of a 10,000-trial sweep: loading it from MLflow, the optimum, its trend, the figure.

What it measures, on one thread (OMP/MKL/OpenBLAS set to 1 before NumPy loads, and threadpoolctl's
limit where it is installed): the wall time of

- `service.analysis.load_trials` on one sweep of N trial runs (default 10,000) in a SQLite store;
- `service.analysis.optimum` over its 4 width cells, lr profiled out (nuisance lr), `n_boot`
  bootstrap refits per cell (default: `optimum`'s own); timed as `optimum_fit`, whose table
  `optimum` returns, so that the figure can draw its smooth;
- `service.analysis.optimum_trend(..., along="width")` from that optimum table, as `smoothsweep
  run` and `curves` take it (the width cells' optima are the trend's points);
- the figure: `service.figures.plot_optimum` of that fit;

each once, after the imports (importing MLflow is printed, not counted), and the three after
loading in total, each with the part of it spent in Python's cyclic garbage collector.

The store is built once and kept (default: a folder in the system temp dir named after N; reused
when its build completed). It holds what `service.tracking` writes for one sweep of the `sinusoid`
experiment with axis width (16, 64, 256, 1000) and sigma_inv, lr searched (the ranges of
search_spaces/sinusoid.yaml): the parent run with `sweep_tags` of a spec loaded by
`service.spec.load_spec`, and per trial a child run with the tracker's tags, its params, the mean
test/train/ood MSE at 6 evaluation steps (500..3000) and each of the 4 replicas' values at the last
step, status FINISHED. The trials sample a known surface in (log sigma_inv, log lr) as a TPE
search would (a third spread over the box, the rest around the optimum): log test MSE is a valley
whose floor lies at lr* and at a sigma_inv* that grows with width, the two coupled, plus each
seed's noise; the table shows sigma_inv* beside the estimate. The runs are written as the tracker
writes them (`create_run` with the tags, one `log_batch` of params, metrics and the logged-step
tag, `set_terminated`), on tmpfs when there is one (each commit's fsync would more than double the
time), then moved into the store.

Targets: load_trials <= 10 s; optimum + trend + figure <= 5 s.

Run (building the store takes about 5 minutes on 2 CPU cores, once; then about a minute):

    .venv/bin/python benchmarks/analysis.py
    .venv/bin/python benchmarks/analysis.py --profile       # cProfile load_trials and optimum too
    .venv/bin/python benchmarks/analysis.py --trials 1000 --n-boot 50   # a quick look

The last line is the headline: `analysis_10k_s: X.X` (optimum + trend + figure, seconds).
"""

from __future__ import annotations

import os

ONE_THREAD = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS")  # fmt: skip
for _name in ONE_THREAD:  # before NumPy is imported, by anything
    os.environ[_name] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import cProfile  # noqa: E402
import gc  # noqa: E402
import hashlib  # noqa: E402
import importlib  # noqa: E402
import inspect  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pstats  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

LOAD_TARGET_S = 10.0
ANALYSIS_TARGET_S = 5.0
STORE_VERSION = 1  # bump when the generated store changes: a cached one is then rebuilt
WIDTHS = (16, 64, 256, 1000)
REPLICAS = 4
STEPS, EVAL_EVERY = 3000, 500
SIGMA_INV = {"low": 0.05, "high": 20.0}  # search_spaces/sinusoid.yaml
LR = {"low": 1e-3, "high": 1e-2}
CHUNK = 250  # runs between progress lines
COMPLETE = "complete.json"  # written last: a store without it is a build that did not finish


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=10_000, help="trial runs in the sweep")
    p.add_argument("--store", type=Path, default=None,
                   help="the store's folder (default: one in the temp dir named after --trials); "
                        "reused when its build completed")  # fmt: skip
    p.add_argument(
        "--n-boot",
        type=int,
        default=None,
        help="bootstrap refits per cell (default: that of analysis.optimum)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also profile load_trials and optimum (cProfile) and print where the time goes",
    )
    return p.parse_args(argv)


# --- the sweep: a known surface, sampled as a searcher would -------------------------------------


def truth(width: int) -> tuple[float, float]:
    """(sigma_inv*, lr*) of a width: the optimum moves up with width, lr* down a little."""
    return 0.8 * (width / 16) ** 0.3, 4e-3 * (width / 16) ** -0.1


def surface(width: int, sigma_inv: Any, lr: Any) -> dict[str, Any]:
    """Noise-free final MSEs; log test MSE: a valley in (log sigma_inv, log lr), steeper on the
    underfitting side (large sigma_inv), its floor at lr*, with lr* and sigma_inv* coupled."""
    import numpy as np

    x0, lr0 = truth(width)
    du, dv = np.log(sigma_inv / x0), np.log(lr / lr0)
    curvature = np.where(du > 0, 0.6, 0.35)
    floor = 0.01 + 0.02 * math.sqrt(16 / width)  # label noise 0.1², plus what a narrow net misses
    test = floor * np.exp(curvature * du**2 + 0.8 * dv**2 + 0.3 * du * dv)
    train = 0.008 * np.exp(0.5 * du + 0.8 * dv**2)  # small sigma_inv fits the noise
    ood = test * 4 * np.exp(0.3 * du**2)
    return {"test_mse": test, "train_mse": train, "ood_mse": ood}


def make_trials(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """n trials over the width cells (in turn): each one's config and final per-replica values."""
    import numpy as np

    rng = np.random.default_rng(seed)
    box = np.log([[SIGMA_INV["low"], LR["low"]], [SIGMA_INV["high"], LR["high"]]])
    rows = []
    for i in range(n):
        width = WIDTHS[i % len(WIDTHS)]
        if rng.random() < 1 / 3:  # the random start-up and exploration of TPE
            u, v = rng.uniform(box[0], box[1])
        else:  # its exploitation, around the optimum
            centre = np.log(truth(width))
            u, v = np.clip(centre + rng.normal(0, [0.8, 0.4]), box[0], box[1])
        sigma_inv, lr = float(np.exp(u)), float(np.exp(v))
        clean = surface(width, sigma_inv, lr)
        noise = {k: np.exp(0.1 * rng.standard_normal(REPLICAS)) for k in clean}  # the seeds'
        final = {k: float(c) * noise[k] for k, c in clean.items()}
        rows.append({
            "config": {"width": width, "sigma_inv": sigma_inv, "lr": lr, "replicas": REPLICAS,
                       "seed": 0, "steps": STEPS, "eval_every": EVAL_EVERY},
            "final": {k: [float(x) for x in vals] for k, vals in final.items()},
        })  # fmt: skip
    return rows


def spec_dict(n: int) -> dict[str, Any]:
    return {
        "name": f"analysis-{n}",
        "experiment": "sinusoid",
        "objective": {"metric": "test_mse", "mode": "min"},
        "fixed": {"replicas": REPLICAS, "seed": 0, "steps": STEPS, "eval_every": EVAL_EVERY},
        "axes": {"width": list(WIDTHS)},
        "search": {"sigma_inv": {**SIGMA_INV, "log": True}, "lr": {**LR, "log": True}},
        "trials_per_cell": math.ceil(n / len(WIDTHS)),
        "max_concurrent": 2,
        "sampler": "tpe",
        "resources": {"cpu": 1},
    }


# --- the store: written as service.tracking writes a sweep ---------------------------------------


def default_store(n: int) -> Path:
    return Path(tempfile.gettempdir()) / f"smoothsweep-analysis-{n}trials-v{STORE_VERSION}"


def store_uri(store: Path) -> str:
    return f"sqlite:///{(store / 'mlflow.db').resolve()}"


def ensure_store(args: argparse.Namespace, store: Path) -> tuple[str, str]:
    """(tracking URI, sweep name) of the cached store, built first when it is missing."""
    sweep = spec_dict(args.trials)["name"]
    marker = store / COMPLETE
    built = json.loads(marker.read_text()) if marker.is_file() else None
    if built == {**(built or {}), "trials": args.trials, "version": STORE_VERSION}:
        print(f"store: reusing {store} ({args.trials} trials)", flush=True)
        return store_uri(store), sweep
    if built is None and (store / "mlflow.db").exists():
        # A build moves its database in last but one: without the marker it is not ours to delete.
        raise SystemExit(f"{store} holds an mlflow.db that this benchmark did not build: pass "
                         f"another --store")  # fmt: skip
    build_store(args, store, sweep)
    return store_uri(store), sweep


def build_store(args: argparse.Namespace, store: Path, sweep: str) -> None:
    from mlflow.tracking import MlflowClient

    from service import conventions as cv
    from service.spec import load_spec
    from service.tracking import sweep_tags

    store.mkdir(parents=True, exist_ok=True)
    for stale in ("mlflow.db", "mlartifacts", COMPLETE):  # an unfinished build's leftovers
        path = store / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    # SQLite fsyncs every commit and a run costs ~8 commits: on tmpfs they are free. The file is
    # moved to the store when it is complete; artifacts go straight to the store.
    shm = Path("/dev/shm")
    scratch = Path(tempfile.mkdtemp(prefix="smoothsweep-analysis-", dir=shm if shm.is_dir()
                                    else store))  # fmt: skip
    uri = f"sqlite:///{scratch / 'mlflow.db'}"
    started = time.perf_counter()
    try:
        spec = load_spec(spec_dict(args.trials))
        tags = sweep_tags(spec)
        client = MlflowClient(uri)
        experiment_id = client.create_experiment(
            sweep, artifact_location=(store / "mlartifacts" / sweep).resolve().as_uri()
        )
        parent = client.create_run(
            experiment_id, run_name=sweep, tags={**tags, cv.ROLE: cv.ROLE_SWEEP, cv.SWEEP: sweep}
        )
        client.log_text(parent.info.run_id, cv.dumps(spec_dict(args.trials)), cv.SPEC_ARTIFACT)
        trials = make_trials(args.trials)
        prefix = hashlib.sha256(sweep.encode()).hexdigest()[:5]
        digits = max(5, len(str(args.trials - 1)))
        calls = dict.fromkeys(("create_run", "log_batch", "set_terminated"), 0.0)
        print(f"store: writing {args.trials} trial runs into {scratch} (once; then kept in "
              f"{store}) ...", flush=True)  # fmt: skip
        writing = time.perf_counter()
        for start in range(0, args.trials, CHUNK):
            chunk = trials[start : start + CHUNK]
            ids = [f"{prefix}_{i:0{digits}d}" for i in range(start, start + len(chunk))]
            write_runs(client, experiment_id, parent.info.run_id, tags, ids, chunk, calls)
            done, spent = start + len(chunk), time.perf_counter() - writing
            eta = spent / done * (args.trials - done)
            print(f"  {done:6d}/{args.trials} runs  {spent:6.0f} s  "
                  f"{spent / done * 1e3:5.1f} ms/run  eta {eta:4.0f} s", flush=True)  # fmt: skip
        client.set_terminated(parent.info.run_id, "FINISHED")
        written = time.perf_counter() - writing
        shutil.move(str(scratch / "mlflow.db"), str(store / "mlflow.db"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    spent = time.perf_counter() - started
    size = (store / "mlflow.db").stat().st_size / 2**20
    (store / COMPLETE).write_text(json.dumps({"trials": args.trials, "version": STORE_VERSION,
                                              "build_s": round(spent, 1)}))  # fmt: skip
    each = ", ".join(f"{k} {v / args.trials * 1e3:.1f}" for k, v in calls.items())
    print(f"store: built in {spent:.0f} s, {size:.0f} MiB; {args.trials} runs written in "
          f"{written:.0f} s ({written / args.trials * 1e3:.1f} ms/run: {each} ms)",
          flush=True)  # fmt: skip


def write_runs(
    client: Any,
    experiment_id: str,
    parent_id: str,
    sweep_tags: dict[str, str],
    trial_ids: list[str],
    trials: list[dict[str, Any]],
    calls: dict[str, float],
) -> None:
    """Child runs as `MlflowTracker` leaves them: created with the tags, params with the metrics in
    one log_batch (as its flush sends them), the logged-step tag, then FINISHED. `calls` sums the
    seconds spent in each client call."""
    from mlflow.entities import Metric, Param, RunTag

    from service import conventions as cv
    from service.tracking import LOGGED_STEP

    logged = [RunTag(LOGGED_STEP, str(STEPS))]  # the last step flushed: all of them
    for trial_id, trial in zip(trial_ids, trials, strict=True):
        config, final = trial["config"], trial["final"]
        tags = {
            **sweep_tags,
            cv.ROLE: cv.ROLE_TRIAL,
            cv.PARENT_RUN_ID: parent_id,
            cv.TRIAL_ID: trial_id,
            cv.PACK_ID: trial_id,
            cv.CELL: cv.cell_label({"width": config["width"]}),
            cv.CONFIG: cv.dumps(config),
            cv.SEED: str(config["seed"]),
            cv.SEEDS: ",".join(str(config["seed"] + r) for r in range(REPLICAS)),
        }
        ts = int(time.time() * 1000)
        metrics = []
        for name, values in final.items():
            mean = sum(values) / len(values)
            for step in range(EVAL_EVERY, STEPS + 1, EVAL_EVERY):  # a training curve to the end
                early = 1 + 2 * math.exp(-step / 700)
                metrics.append(Metric(name, mean * early, ts + step // EVAL_EVERY, step))
            metrics += [Metric(cv.replica_metric(name, r), v, ts + STEPS // EVAL_EVERY, STEPS)
                        for r, v in enumerate(values)]  # fmt: skip
        params = [Param(k, str(v)) for k, v in sorted(config.items())]
        t0 = time.perf_counter()
        run = client.create_run(experiment_id, run_name=f"run_trial_{trial_id}", tags=tags)
        t1 = time.perf_counter()
        client.log_batch(run.info.run_id, metrics=metrics, params=params, tags=logged)
        t2 = time.perf_counter()
        client.set_terminated(run.info.run_id, status="FINISHED")
        t3 = time.perf_counter()
        calls["create_run"] += t1 - t0
        calls["log_batch"] += t2 - t1
        calls["set_terminated"] += t3 - t2


# --- the timings ---------------------------------------------------------------------------------


@contextlib.contextmanager
def one_thread() -> Iterator[str]:
    """NumPy's BLAS (and torch, if something loaded it) on one thread for the block."""
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch else None
    if torch:
        torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        limiter: Any = contextlib.nullcontext()
        how = "env vars " + ", ".join(f"{name}=1" for name in ONE_THREAD)
    else:
        limiter = threadpool_limits(limits=1)
        how = "threadpoolctl limits=1 (and OMP/MKL/OpenBLAS env vars = 1)"
    try:
        with limiter:
            yield how
    finally:
        if torch and threads:
            torch.set_num_threads(threads)


def figure_step(trials: Any, fit: Any, path: Path) -> tuple[str, Callable[[], Any]]:
    """The optimum's figure from the fit already made (`service.figures.plot_optimum`)."""
    from service import figures

    plot_optimum = figures.plot_optimum

    def figure() -> Any:
        return plot_optimum(trials, fit, path, x="sigma_inv",
                            metric=trials.attrs["objective_metric"])  # fmt: skip

    return "figures.plot_optimum", figure


def profile(label: str, fn: Callable[[], Any], top: int = 18) -> None:
    """cProfile of one call: the top functions by own time and by cumulative time. (Cyclic GC
    shows up as own time of whatever allocated when a collection ran.)"""
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(top)
        text = out.getvalue()
        print(f"\nprofile of {label}, by {order}:")
        print(text[text.index("   ncalls") :].rstrip())


class GcClock:
    """Seconds the cyclic garbage collector ran, from its own start/stop callbacks."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start

    @contextlib.contextmanager
    def running(self) -> Iterator[GcClock]:
        gc.callbacks.append(self)
        try:
            yield self
        finally:
            gc.callbacks.remove(self)


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, of which cyclic GC)."""
    with GcClock().running() as clock:
        start = time.perf_counter()
        out = fn()
        spent = time.perf_counter() - start
    return out, spent, clock.seconds


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    store = args.store or default_store(args.trials)
    uri, sweep = ensure_store(args, store)

    # Imported before timing: an import is a process's, not the analysis's (load_trials imports
    # MLflow itself; plots: matplotlib). Opening the store (MLflow's schema check) is timed.
    _, t_import, _ = timed(lambda: importlib.import_module("mlflow.tracking"))
    from service import analysis, figures  # noqa: F401

    n_boot = args.n_boot
    if n_boot is None:
        n_boot = inspect.signature(analysis.optimum).parameters["n_boot"].default
    figure_path = store / "optimum.png"
    with one_thread() as how:
        trials, t_load, gc_load = timed(lambda: analysis.load_trials(sweep, uri))
        assert len(trials) == args.trials, f"loaded {len(trials)} trials, expected {args.trials}"
        # `optimum` is `optimum_fit(...).table`: the same work; the fit is kept for the figure.
        fit, t_opt, gc_opt = timed(
            lambda: analysis.optimum_fit(trials, nuisance=["lr"], n_boot=n_boot)
        )
        # as `smoothsweep run` and `curves` do: the width cells' optima are the trend's points
        trend, t_trend, gc_trend = timed(
            lambda: analysis.optimum_trend(trials, along="width", table=fit.table)
        )
        label, draw = figure_step(trials, fit, figure_path)
        _, t_fig, gc_fig = timed(draw)
        if args.profile:
            profile(f"load_trials ({args.trials} trials)", lambda: analysis.load_trials(sweep, uri))
            profile(f"optimum (profile(lr), n_boot {n_boot})",
                    lambda: analysis.optimum(trials, nuisance=["lr"], n_boot=n_boot))  # fmt: skip
    total = t_opt + t_trend + t_fig

    assert list(trend["width"]) == list(WIDTHS), f"trend over {list(trend['width'])}"
    print()
    print(f"{args.trials} trials of one sweep ({len(WIDTHS)} width cells x ~{args.trials // 4}, "
          f"{REPLICAS} replicas), SQLite store {store}; one thread: {how}")  # fmt: skip
    print(f"optimum: profile(lr), n_boot {n_boot}; figure: {label} -> {figure_path}")
    print(f"not timed: importing mlflow.tracking, {t_import:.1f} s")
    print(f"{'width':>6}{'sigma_inv*':>12}{'x_opt':>9}{'95% CI':>18}{'fit':>8}  flags")
    for _, row in trend.iterrows():
        ci = f"{row['ci_low']:.3g}..{row['ci_high']:.3g}"
        print(f"{row['width']:>6}{truth(int(row['width']))[0]:>12.3g}{row['x_opt']:>9.3g}"
              f"{ci:>18}{row['fit']:>8}  {row['flags'] or '-'}")  # fmt: skip
    print()
    print(f"{'step':28}{'s':>7}{'of which GC':>13}")
    for name, spent, in_gc in (
        ("load_trials", t_load, gc_load),
        ("optimum (4 cells)", t_opt, gc_opt),
        ("optimum_trend (width)", t_trend, gc_trend),
        ("figure", t_fig, gc_fig),
        ("after loading, total", total, gc_opt + gc_trend + gc_fig),
    ):
        print(f"{name:28}{spent:>7.2f}{in_gc:>13.2f}")
    ok_load = "met" if t_load <= LOAD_TARGET_S else "MISSED"
    ok_total = "met" if total <= ANALYSIS_TARGET_S else "MISSED"
    print(f"target: load_trials <= {LOAD_TARGET_S:g} s: {t_load:.1f} s ({ok_load})")
    print(f"target: optimum + trend + figure <= {ANALYSIS_TARGET_S:g} s: {total:.1f} s "
          f"({ok_total})")  # fmt: skip
    print(f"analysis_10k_s: {total:.1f}")


if __name__ == "__main__":
    main()
