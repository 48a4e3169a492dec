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
from service.packing import num_packs, pack_sizes
from service.search import JOURNAL, StratifiedOptuna
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
    experiment_id: str | None = None  # the sweep's MLflow experiment (for the UI's link)
    ended_by: str | None = None  # a budget that ended the sweep before its trials were all run
    extends: str | None = None  # the earlier sweep this one extends (its trials pool with ours)


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
    extends: str | None = None,
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
    warm = warm_start(extends, uri, spec) if extends else None
    record.open(sweep_tags(spec), json.dumps(spec.resolved(), indent=2), spec=spec)
    if extends:
        record.tag(cv.EXTENDS, extends)
    root.mkdir(parents=True, exist_ok=True)
    sizes = pack_sizes(spec)
    meta = {
        "name": name, "tracking_uri": uri, "spec": spec.resolved(), "spec_sha256": spec.sha256,
        "pack_sizes": sizes,  # resume keeps them: `auto` could choose others on another machine
        "overlay": overlay.resolved() if overlay is not None else None,  # resume runs it too
    }  # fmt: skip
    (root / METADATA).write_text(json.dumps(meta, indent=2))
    tuner = _build_tuner(spec, sizes, name, root.parent, record, progress, warm)
    result = dataclasses.replace(_fit(tuner, spec, sizes, name, uri, root, record), extends=extends)
    return _then_overlay(result, record, overlay, storage, address, progress)


def earlier_spec(sweep: str, tracking_uri: str) -> dict[str, Any]:
    """The resolved spec an earlier sweep ran, from its parent run (`spec.json`), so a sweep can
    be extended from the tracking store alone."""
    import tempfile

    from mlflow.tracking import MlflowClient

    from service.analysis import _require_sqlite_file, _tracking_errors

    _require_sqlite_file(tracking_uri)
    with _tracking_errors(tracking_uri):
        client = MlflowClient(tracking_uri)
        exp = client.get_experiment_by_name(sweep)
        parents = [] if exp is None else client.search_runs(
            [exp.experiment_id], f"tags.`{cv.ROLE}` = '{cv.ROLE_SWEEP}'",
            order_by=["start_time DESC"], max_results=1,
        )  # fmt: skip
        if not parents:
            raise SpecError(
                f"no sweep named {sweep!r} in {tracking_uri}; list them: smoothsweep sweeps"
            )
        with tempfile.TemporaryDirectory(prefix="smoothsweep-spec-") as tmp:
            path = client.download_artifacts(parents[0].info.run_id, cv.SPEC_ARTIFACT, tmp)
            return json.loads(Path(path).read_text())


def warm_start(sweep: str, tracking_uri: str, spec: Spec) -> dict[str, list[Any]]:
    """The finished trials of an earlier sweep of the same experiment, per cell, as Optuna
    trials in `spec`'s search space: what an extended sweep's studies start from."""
    from optuna.trial import TrialState

    from service import analysis
    from service.optuna_plots import frozen_trials

    old = analysis.load_trials(sweep, tracking_uri)
    if old.attrs.get("experiment") != spec.experiment:
        raise SpecError(
            f"sweep {sweep!r} ran {old.attrs.get('experiment')!r}, not {spec.experiment!r}: "
            f"extend a sweep with a spec of its own experiment"
        )
    bounds = spec.search_bounds()
    warm: dict[str, list[Any]] = {}
    for label, cell in old.groupby("cell", sort=False):
        cell.attrs = old.attrs
        done = frozen_trials(cell, search=bounds, metric=spec.objective.metric,
                             mode=spec.objective.mode)  # fmt: skip
        warm[str(label)] = [t for t in done if t.state == TrialState.COMPLETE]
    return warm


def _then_overlay(
    result: SweepResult,
    record: SweepRecord,
    overlay: Spec | None,
    storage: str | Path,
    address: str | None,
    progress: bool,
) -> SweepResult:
    """After a sweep has finished, its companion `<name>-overlay`: continued when an earlier
    driver started it, else run; recorded on the sweep's parent run."""
    if overlay is None:
        return result
    name = f"{result.name}-overlay"
    if (_sweep_dir(storage, name) / METADATA).exists():
        companion = resume_sweep(
            name, storage=storage, tracking_uri=result.tracking_uri, address=address,
            progress=progress,
        )  # fmt: skip
    else:
        companion = run_sweep(
            overlay, name=name, tracking_uri=result.tracking_uri, storage=storage,
            address=address, progress=progress,
        )  # fmt: skip
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
    sizes = meta.get("pack_sizes") or [1] * len(spec.cells())
    start_ray(address)
    check_capacity(spec, address)
    record = SweepRecord(uri, name).open(sweep_tags(spec), spec=spec)
    if not tune.Tuner.can_restore(str(root)):
        raise ClusterError(
            f"sweep {name!r} has no Ray Tune state in {root} yet; run it again instead"
        )
    tuner = tune.Tuner.restore(
        str(root),
        trainable=_trainable(spec, sizes),
        resume_unfinished=True,
        resume_errored=True,
    )
    # The saved callbacks are the first driver's: attach fresh ones that find the existing runs.
    ray_shims.replace_callbacks(tuner, _callbacks(spec, record, progress))
    result = _fit(tuner, spec, sizes, name, uri, root, record)
    overlay = load_spec(meta["overlay"]) if meta.get("overlay") else None
    return _then_overlay(result, record, overlay, storage, address, progress)


def _in_pack_asha(spec: Spec, sizes: list[int]) -> dict[str, Any] | None:
    """The spec's ASHA, applied inside packs when they hold several configurations (Tune's own
    ASHAScheduler stops whole trials, so it serves packs of one)."""
    if spec.asha is None or max(sizes) == 1:
        return None
    return dataclasses.asdict(spec.asha)


def _trainable(spec: Spec, sizes: list[int]) -> Any:
    from ray import tune

    fn = tune.with_parameters(
        run_trial,
        experiment=spec.experiment,
        metric=spec.objective.metric,
        mode=spec.objective.mode,
        asha=_in_pack_asha(spec, sizes),
        threads=spec.resources.threads,
    )
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    return tune.with_resources(fn, resources)


def _callbacks(spec: Spec, record: SweepRecord, progress: bool) -> list[Any]:
    return [MlflowTracker(record, spec), *([Progress(spec, record.sweep)] if progress else [])]


def _build_tuner(
    spec: Spec,
    sizes: list[int],
    name: str,
    storage: Path,
    record: SweepRecord,
    progress: bool,
    warm: dict[str, list[Any]] | None = None,
) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    scheduler = None
    if spec.asha is not None and _in_pack_asha(spec, sizes) is None:
        scheduler = ASHAScheduler(
            max_t=spec.asha.max_t or 10**9,
            grace_period=spec.asha.grace_period,
            reduction_factor=spec.asha.reduction_factor,
        )
    journal = str(storage / name / JOURNAL)
    searcher = StratifiedOptuna(spec, sizes, sweep=name, journal=journal, warm=warm)
    search = ConcurrencyLimiter(searcher, max_concurrent=spec.max_concurrent)
    return tune.Tuner(
        _trainable(spec, sizes),
        tune_config=tune.TuneConfig(
            metric=spec.objective.metric,
            mode=spec.objective.mode,
            search_alg=search,
            scheduler=scheduler,
            num_samples=num_packs(spec, sizes),
            time_budget_s=spec.budget.time_s if spec.budget else None,
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
    tuner: Any, spec: Spec, sizes: list[int], name: str, uri: str, root: Path, record: SweepRecord
) -> SweepResult:
    interrupted = SweepError(
        f"sweep {name!r} interrupted; continue it with `smoothsweep resume {name}`"
    )
    started = time.monotonic()
    with _sigterm_stops_like_ctrl_c():
        try:
            results = tuner.fit()
        except KeyboardInterrupt:
            record.close("KILLED")
            raise interrupted from None
    # Tune's own Ctrl-C handling returns normally (and counts the trials it stopped as TERMINATED):
    # the sweep is unfinished when the tracker had to close a trial's run itself, or when the
    # searcher had not yet made every trial (a cell's quota, or its precision target).
    # configurations, not packs; a trial a time budget never started has no config
    trials = sum(len(cv.member_configs(r.config)) for r in results if r.config)
    searcher = StratifiedOptuna.live.get(name)
    if searcher is not None:
        unmade = not searcher.complete
    else:
        # Through Ray Client Tune runs the fit in a task on the cluster, searcher and callbacks
        # included (no searcher suggested here): only the results come back. Short of the quota
        # means unfinished, unless a precision target may have closed cells early (which only
        # that searcher knew).
        unmade = trials < spec.num_trials and spec.precision is None
    budget = spec.budget.time_s if spec.budget else None
    ended_by = None
    if (record.unfinished or unmade) and budget and time.monotonic() - started >= 0.95 * budget:
        # Tune's time budget, not Ctrl-C: the sweep is over as asked, with what it has
        ended_by = f"its time budget of {budget:g} s ({record.unfinished} running trial(s) KILLED)"
        record.tag(cv.ENDED_BY, ended_by)
    elif record.unfinished or unmade:
        record.close("KILLED")
        raise interrupted
    # counted in configurations: an error ends every configuration of its pack
    errors = sum(len(cv.member_configs(r.config)) for r in results if r.config and r.error)
    record.close("FINISHED" if not errors else "FAILED")
    return SweepResult(
        name, uri, root, trials, errors, experiment_id=record.experiment_id, ended_by=ended_by
    )


class Progress(Callback):
    """Prints one line per finished configuration: how many are done and the best so far."""

    def __init__(self, spec: Spec, sweep: str = "") -> None:
        self.sweep, self.cells = sweep, spec.cells()
        self.metric, self.mode = spec.objective.metric, spec.objective.mode
        self.total = spec.num_trials
        self.done = 0
        self.best: tuple[float, str] | None = None
        self.start = time.monotonic()
        self.last: dict[str, dict[str, Any]] = {}  # each configuration's latest metrics
        self.ended: set[str] = set()

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        size = len(cv.member_configs(trial.config))
        for index, metrics in (result.get(cv.MEMBERS) or {}).items():
            key = cv.member_key(trial.trial_id, int(index), size)
            self.last[key] = metrics
            status = metrics.get(cv.STATUS)
            if cv.ended(status):
                self._finish(key, {"failed": "diverged", "stopped": "stopped"}.get(status, ""))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for key in self._keys(trial):
            self._finish(key, "diverged" if self.last.get(key, {}).get(DIVERGED) else "")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        for key in self._keys(trial):
            self._finish(key, "error")

    @staticmethod
    def _keys(trial: Any) -> list[str]:
        size = len(cv.member_configs(trial.config))
        return [cv.member_key(trial.trial_id, k, size) for k in range(size)]

    def _finish(self, key: str, note: str) -> None:
        if key in self.ended:
            return
        self.ended.add(key)
        self.done += 1
        value = self.last.get(key, {}).get(self.metric)
        better = (lambda a, b: a < b) if self.mode == "min" else (lambda a, b: a > b)
        if note in ("", "stopped") and isinstance(value, (int, float)) and math.isfinite(value):
            if self.best is None or better(value, self.best[0]):
                self.best = (value, key)
        shown = f"{value:.4g}" if isinstance(value, (int, float)) else "-"
        best = f"{self.best[0]:.4g} ({self.best[1]})" if self.best else "-"
        elapsed = time.monotonic() - self.start
        searcher = StratifiedOptuna.live.get(self.sweep)
        cells = ""
        if searcher is not None and searcher.precision is not None:
            cells = " | " + searcher.precision.status(self.cells)
        print(
            f"[{self.done}/{self.total} trials, {elapsed:.0f}s] {key} "
            f"{self.metric}={shown}{' ' + note if note else ''} | best {best}{cells}",
            flush=True,
        )
