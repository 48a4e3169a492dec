"""Run a sweep: the Tuner over the experiment's trials, its callbacks, and resume.

`run_sweep` turns a validated `Spec` into a `Tuner` whose searcher is `StratifiedOptuna` (an
`OptunaSearch` per cell behind one concurrency limit, `service.search`), whose trials are the
experiment's `run` adapted to `tune.report` (`service.trial`), and whose callbacks log to MLflow
(`service.tracking`) and print progress. `resume_sweep` restores the Tuner from its storage path
with the searcher's state; MLflow ends up with every trial exactly once. The Ray session itself
(start, join, probes, capacity) is `service.session`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune import Callback

from service import conventions as cv
from service import ray_shims
from service.errors import ClusterError, SpecError, SweepError
from service.search import StratifiedOptuna
from service.session import check_capacity, start_ray
from service.spec import Spec, load_spec
from service.tracking import MlflowTracker, SweepRecord, resolve_tracking_uri, sweep_tags
from service.trial import run_trial
from trainables.report import DIVERGED

METADATA = "smoothsweep.json"  # beside Ray's state: what `resume` needs to rebuild the Tuner
DEFAULT_STORAGE = "sweeps"


@dataclass(frozen=True)
class SweepResult:
    name: str
    tracking_uri: str
    storage: Path
    num_trials: int
    num_errors: int
    overlay: str | None = None  # the companion sweep's name, when the spec asks for one


def _sweep_dir(storage: str | Path, name: str) -> Path:
    return Path(storage).resolve() / name


def default_name(spec: Spec) -> str:
    return f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_sweep(
    spec: Spec,
    *,
    name: str | None = None,
    tracking_uri: str | None = None,
    storage: str | Path = DEFAULT_STORAGE,
    address: str | None = None,
    progress: bool = True,
    overlay: Spec | None = None,
) -> SweepResult:
    """Run a sweep to the end (or until interrupted; `resume_sweep` continues it).

    `overlay` (see `spec.overlay_spec`) runs next, as the sweep `<name>-overlay`, and is recorded on
    this sweep's parent run so that its curve is drawn with this one.
    """
    name = name or default_name(spec)
    uri = resolve_tracking_uri(tracking_uri)
    root = _sweep_dir(storage, name)
    if (root / METADATA).exists():
        raise SpecError(
            f"sweep {name!r} already exists in {root.parent}; resume it with "
            f"`smoothsweep resume {name}` or pick another --name"
        )
    record = SweepRecord(uri, name)
    record.probe()  # before Ray starts: a typo in the URI should not cost a cluster start-up
    start_ray(address)
    check_capacity(spec, address)
    record.open(sweep_tags(spec), json.dumps(spec.resolved(), indent=2))
    root.mkdir(parents=True, exist_ok=True)
    meta = {"name": name, "tracking_uri": uri, "spec": spec.resolved(), "spec_sha256": spec.sha256}
    (root / METADATA).write_text(json.dumps(meta, indent=2))
    tuner = _build_tuner(spec, name, root.parent, record, progress)
    result = _fit(tuner, spec, name, uri, root, record)
    if overlay is None:
        return result
    companion = run_sweep(
        overlay,
        name=f"{name}-overlay",
        tracking_uri=uri,
        storage=storage,
        address=address,
        progress=progress,
    )
    record.tag(cv.OVERLAY, companion.name)
    errors = result.num_errors + companion.num_errors
    return dataclasses.replace(result, overlay=companion.name, num_errors=errors)


def resume_sweep(
    name: str,
    *,
    storage: str | Path = DEFAULT_STORAGE,
    tracking_uri: str | None = None,
    address: str | None = None,
    progress: bool = True,
) -> SweepResult:
    """Continue an interrupted sweep from its Ray Tune state, with the searcher's studies."""
    from ray import tune

    root = _sweep_dir(storage, name)
    if not (root / METADATA).exists():
        raise ClusterError(f"no sweep {name!r} under {root.parent}; pass the --storage it ran with")
    if address and address.startswith("ray://"):
        raise SpecError(
            f"resume needs the Tuner in this process, which Ray Client (--address {address}) "
            f"does not give; resume from a node of the cluster with --address auto or HOST:6379"
        )
    meta = json.loads((root / METADATA).read_text())
    try:
        spec = load_spec(meta["spec"])  # the spec as it ran, checked again by this code
    except SpecError as exc:
        raise SpecError(f"sweep {name!r} cannot be resumed by this code: {exc}") from None
    uri = tracking_uri or meta["tracking_uri"]
    start_ray(address)
    check_capacity(spec, address)
    record = SweepRecord(uri, name).open(sweep_tags(spec))
    if not tune.Tuner.can_restore(str(root)):
        raise ClusterError(
            f"sweep {name!r} has no Ray Tune state in {root} yet; run it again instead"
        )
    tuner = tune.Tuner.restore(
        str(root),
        trainable=_trainable(spec),
        resume_unfinished=True,
        resume_errored=True,
    )
    # The saved callbacks are the first driver's: attach fresh ones that find the existing runs.
    ray_shims.replace_callbacks(tuner, _callbacks(spec, record, progress))
    return _fit(tuner, spec, name, uri, root, record)


def _trainable(spec: Spec) -> Any:
    from ray import tune

    fn = tune.with_parameters(
        run_trial,
        experiment=spec.experiment,
        metric=spec.objective.metric,
        mode=spec.objective.mode,
    )
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    return tune.with_resources(fn, resources)


def _callbacks(spec: Spec, record: SweepRecord, progress: bool) -> list[Any]:
    return [MlflowTracker(record, spec), *([Progress(spec)] if progress else [])]


def _build_tuner(spec: Spec, name: str, storage: Path, record: SweepRecord, progress: bool) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    scheduler = None
    if spec.asha is not None:
        scheduler = ASHAScheduler(
            max_t=spec.asha.max_t or 10**9,
            grace_period=spec.asha.grace_period,
            reduction_factor=spec.asha.reduction_factor,
        )
    search = ConcurrencyLimiter(StratifiedOptuna(spec), max_concurrent=spec.max_concurrent)
    return tune.Tuner(
        _trainable(spec),
        tune_config=tune.TuneConfig(
            metric=spec.objective.metric,
            mode=spec.objective.mode,
            search_alg=search,
            scheduler=scheduler,
            num_samples=spec.num_trials,
            reuse_actors=True,  # a fresh worker per trial pays the torch import (2-3 s) each time
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(storage),
            callbacks=_callbacks(spec, record, progress),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            # Ray stages its state on the driver and copies it to storage every 300 s by default;
            # a driver killed in between would resume from minutes ago.
            sync_config=tune.SyncConfig(sync_period=1),
            verbose=0,
        ),
    )


@contextlib.contextmanager
def _sigterm_stops_like_ctrl_c() -> Iterator[None]:
    """SIGTERM ends a sweep the way Ctrl-C does.

    `smoothsweep jobs stop` (Ray Jobs), a batch scheduler's pre-emption and `kill` all send SIGTERM,
    whose default would end the driver at once and leave its MLflow runs RUNNING. Re-sent as SIGINT,
    it reaches Tune's handler instead: Tune stops the trials and saves its state, our callbacks
    close the runs KILLED, and `resume` continues the sweep. A second signal ends it at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fit(
    tuner: Any, spec: Spec, name: str, uri: str, root: Path, record: SweepRecord
) -> SweepResult:
    interrupted = SweepError(
        f"sweep {name!r} interrupted; continue it with `smoothsweep resume {name}`"
    )
    with _sigterm_stops_like_ctrl_c():
        try:
            results = tuner.fit()
        except KeyboardInterrupt:
            record.close("KILLED")
            raise interrupted from None
    # Tune's own Ctrl-C handling returns normally (and counts the trials it stopped as TERMINATED):
    # the sweep is unfinished when the tracker had to close a trial's run itself, or when the
    # searcher had not yet made every trial.
    if record.unfinished or len(results) < spec.num_trials:
        record.close("KILLED")
        raise interrupted
    errors = sum(1 for r in results if r.error is not None)
    record.close("FINISHED" if not errors else "FAILED")
    return SweepResult(name, uri, root, len(results), errors)


class Progress(Callback):
    """Prints one line per finished trial: how many are done and the best so far."""

    def __init__(self, spec: Spec) -> None:
        self.metric, self.mode = spec.objective.metric, spec.objective.mode
        self.total = spec.num_trials
        self.done = 0
        self.best: tuple[float, str] | None = None
        self.start = time.monotonic()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "diverged" if (trial.last_result or {}).get(DIVERGED) else "")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "error")

    def _finish(self, trial: Any, note: str) -> None:
        self.done += 1
        value = (trial.last_result or {}).get(self.metric)
        better = (lambda a, b: a < b) if self.mode == "min" else (lambda a, b: a > b)
        if not note and isinstance(value, (int, float)) and math.isfinite(value):
            if self.best is None or better(value, self.best[0]):
                self.best = (value, trial.trial_id)
        shown = f"{value:.4g}" if isinstance(value, (int, float)) else "-"
        best = f"{self.best[0]:.4g} ({self.best[1]})" if self.best else "-"
        elapsed = time.monotonic() - self.start
        print(
            f"[{self.done}/{self.total} trials, {elapsed:.0f}s] {trial.trial_id} "
            f"{self.metric}={shown}{' ' + note if note else ''} | best {best}",
            flush=True,
        )
