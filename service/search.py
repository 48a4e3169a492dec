"""The searcher of a sweep: one Optuna study per axis cell, behind one Ray Tune `Searcher`.

A single study over every cell would chase the easiest one; the analysis needs dense σ⁻¹ coverage
in each. `StratifiedOptuna` keeps a study per cell and lets the cells take turns.

Each Tune trial is a *pack* (`service.packing`): the configurations of one cell that train as one
stacked model. The searcher asks the cell's study for a pack's K configurations at once (Optuna's
ask/tell; TPE's constant liar, on by default in Optuna 5, spreads concurrent asks apart), and tells
each configuration's own value as soon as it ends, which may be long before its pack does (a
configuration stopped early, or diverged). A pack of one is today's one configuration per trial.

With a `precision` target the searcher also keeps each cell's finished trials, refits the cell's
optimum as they end (`service.optimum`, the analysis's own estimator), and closes a cell once the
CI of its optimum is that narrow: the budget goes to the cells that still need it, and
`trials_per_cell` becomes the cap.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ray.tune.search import Searcher

from service.conventions import PACK, STATUS, ended, members

if TYPE_CHECKING:
    from service.spec import Spec


def make_sampler(kind: str, seed: int) -> Any:
    import optuna

    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        # Optuna's GP-based Bayesian optimisation: fewer trials than TPE on smooth objectives
        # like ours, at a cost per suggestion that grows with the trials (fine up to a few hundred)
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
    }
    return samplers[kind]()


@dataclass
class _Pack:
    cell: int
    config: dict[str, Any]
    numbers: list[int | None]  # each configuration's Optuna trial number (None: nothing searched)
    last: dict[int, float] = field(default_factory=dict)  # latest objective of each member
    told: set[int] = field(default_factory=set)


class StratifiedOptuna(Searcher):
    """A study per axis cell; cells take turns so every cell fills at the same pace.

    Each suggestion is the pack's config: fixed values, the cell's axis values, and under `PACK`
    the list of what that cell's study asks for. The state (all studies, who asked what) pickles
    with the searcher, which is how `Tuner.restore` resumes the studies where they were.
    """

    # The live searcher of each sweep in this process: the one that suggests (a restored one after
    # a resume). The sweep asks it whether every cell is done, the progress line for each cell's
    # optimum. It registers when it first suggests, not when it is made: through Ray Client the
    # searcher made here is shipped to the cluster, and the one that suggests lives there.
    live: ClassVar[dict[str, StratifiedOptuna]] = {}

    def __init__(
        self,
        spec: Spec,
        pack_sizes: Sequence[int] | None = None,
        sweep: str = "",
        journal: str | None = None,
        warm: Mapping[str, Sequence[Any]] | None = None,
    ) -> None:
        import optuna

        metric, mode = spec.objective.metric, spec.objective.mode
        super().__init__(metric=metric, mode=mode)
        self.fixed = dict(spec.fixed)
        self.cells = spec.cells()
        self.quota = spec.trials_per_cell
        self.pack_sizes = list(pack_sizes or [1] * len(self.cells))
        self.space = {k: p.distribution() for k, p in spec.search.items()}
        direction = "minimize" if mode == "min" else "maximize"
        self.studies = [
            optuna.create_study(
                direction=direction, sampler=make_sampler(spec.sampler, spec.sampler_seed + i)
            )
            for i in range(len(self.cells))
        ]
        # An extended sweep's studies start from the earlier sweep's trials (cell label -> Optuna
        # FrozenTrials): its quota is new trials, and TPE samples as if it had run them itself.
        from service.conventions import cell_label

        for study, cell in zip(self.studies, self.cells):
            study.add_trials(list((warm or {}).get(cell_label(cell), [])))
        self.asked = [0] * len(self.cells)  # configurations, not packs
        self.packs: dict[str, _Pack] = {}
        self.sweep = sweep
        self.precision = CellPrecision(spec, len(self.cells)) if spec.precision else None
        self.journal = journal  # where `OptunaJournal` mirrors the studies (optuna-dashboard's)
        self._mirror: OptunaJournal | None = None

    @property
    def complete(self) -> bool:
        """Every cell has asked for its quota, or has been closed by the precision target."""
        closed = self.precision.closed if self.precision else [False] * len(self.cells)
        return all(n >= self.quota or c for n, c in zip(self.asked, closed))

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        StratifiedOptuna.live[self.sweep] = self
        if trial_id in self.packs:
            return self.packs[trial_id].config
        closed = self.precision.closed if self.precision else [False] * len(self.cells)
        open_cells = [i for i, n in enumerate(self.asked) if n < self.quota and not closed[i]]
        if not open_cells:
            return self.FINISHED
        i = min(open_cells, key=lambda c: (self.asked[c], c))
        k = min(self.pack_sizes[i], self.quota - self.asked[i])
        self.asked[i] += k
        asked = [self.studies[i].ask(self.space) if self.space else None for _ in range(k)]
        members = [dict(t.params) if t is not None else {} for t in asked]
        config = {**self.fixed, **self.cells[i], PACK: members}
        numbers = [t.number if t is not None else None for t in asked]
        self.packs[trial_id] = _Pack(i, config, numbers)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pack = self.packs.get(trial_id)
        if pack is None:
            return
        for key, metrics in members(result).items():  # Tune gives a searcher flattened results
            k = int(key)
            value = metrics.get(self.metric)
            # An objective declared final (robustness under attack, say) is measured only at the
            # last evaluation: a result before it has nothing to tell the study.
            if isinstance(value, (int, float)):
                pack.last[k] = float(value)
            # Tune repeats a trial's last result with its completion: each ending counts once.
            if ended(metrics.get(STATUS)) and k not in pack.told:
                self._tell(pack, k, error=False)
                if self.precision is not None and metrics.get(STATUS) != "failed":
                    member = {**pack.config, **pack.config[PACK][k]}
                    self.precision.add(pack.cell, member, metrics)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        pack = self.packs.get(trial_id)
        if pack is None:
            return
        if result:
            self.on_trial_result(trial_id, result)
        for k in range(len(pack.numbers)):
            self._tell(pack, k, error=error)

    def _tell(self, pack: _Pack, k: int, error: bool) -> None:
        """Tell the study configuration k's value, once. A diverged one is told its worst value,
        so that TPE learns the region is bad (a failed trial would be ignored); one that raised
        before reporting anything is a failed Optuna trial."""
        import optuna

        number = pack.numbers[k]
        if k in pack.told or number is None:
            return
        pack.told.add(k)
        study = self.studies[pack.cell]
        if k not in pack.last:
            if error:
                study.tell(number, state=optuna.trial.TrialState.FAIL)
                return
            pack.last[k] = math.nan
        value = pack.last[k]
        if not math.isfinite(value):
            value = math.inf if self.mode == "min" else -math.inf
        study.tell(number, value)
        self._mirror_trial(pack.cell, number)

    def _mirror_trial(self, cell: int, number: int) -> None:
        if getattr(self, "journal", None) is None:  # none, or a searcher pickled before journals
            return
        if getattr(self, "_mirror", None) is None:
            self._mirror = OptunaJournal(
                self.journal, self.sweep, self.cells, self.studies[0].direction
            )
        trial = self.studies[cell].get_trials(deepcopy=False)[number]
        self._mirror.add(cell, trial)

    def save(self, checkpoint_path: str) -> None:
        state = {**self.__dict__, "_mirror": None}  # a file handle's owner: opened again on use
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
        StratifiedOptuna.live[self.sweep] = self


JOURNAL = "optuna.journal"  # beside the sweep's Ray Tune state
MIRRORED = "smoothsweep.number"  # user attr: the trial's number in the searcher's own study


class OptunaJournal:
    """The searcher's studies, mirrored into an Optuna `JournalStorage` file as trials end, so
    that `optuna-dashboard <file>` (`smoothsweep dashboard`) shows them while the sweep runs.

    A mirror, not the studies' own storage: the searcher's in-memory studies pickle with it and
    resume from Ray's checkpoint, which the journal file would contradict after a crash (trials
    asked but never told stay RUNNING in it forever). The driver is its one writer; each trial is
    written once, by its number, so a resumed searcher's replayed tells do not repeat it.
    """

    def __init__(
        self, path: str, sweep: str, cells: Sequence[Mapping[str, Any]], direction: Any
    ) -> None:
        import optuna
        from optuna.storages.journal import JournalFileBackend

        from service.conventions import cell_label

        storage = optuna.storages.JournalStorage(JournalFileBackend(path))
        self.studies = [
            optuna.create_study(
                storage=storage, study_name=f"{sweep}/{cell_label(c)}", direction=direction,
                load_if_exists=True,
            )
            for c in cells
        ]  # fmt: skip
        self.written = [
            {t.user_attrs.get(MIRRORED) for t in s.get_trials(deepcopy=False)} for s in self.studies
        ]

    def add(self, cell: int, trial: Any) -> None:
        import optuna

        if trial.number in self.written[cell]:
            return
        copy = optuna.trial.create_trial(
            state=trial.state, value=trial.value if trial.state.is_finished() else None,
            params=trial.params, distributions=trial.distributions,
            user_attrs={**trial.user_attrs, MIRRORED: trial.number},
        )  # fmt: skip
        self.studies[cell].add_trial(copy)
        self.written[cell].add(trial.number)


class CellPrecision:
    """Each cell's finished trials and its optimum so far; a cell closes once the CI ratio of
    x_opt (high / low) is at most the spec's target, after `min_trials`, from a clean fit (an
    interior optimum, no flag: an optimum at an edge or in a gap is not yet known)."""

    N_BOOT = 100  # a progress estimate; `smoothsweep curves` reports the final one

    def __init__(self, spec: Spec, cells: int) -> None:
        self.target = spec.precision.ci_ratio
        self.min_trials = spec.precision.min_trials
        self.x = spec.precision_x
        self.nuisance = spec.live_nuisance(self.x)
        self.metric, self.mode = spec.objective.metric, spec.objective.mode
        self.rows: list[list[dict[str, Any]]] = [[] for _ in range(cells)]
        self.closed = [False] * cells
        self.estimate: list[tuple[float, float] | None] = [None] * cells  # (x_opt, ci_ratio)

    def add(self, cell: int, config: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
        from service.optimum import trial_row

        row = trial_row(config, metrics, x=self.x, nuisance=self.nuisance, metric=self.metric)
        self.rows[cell].append(row)
        if len(self.rows[cell]) >= self.min_trials and not self.closed[cell]:
            self._refit(cell)

    def _refit(self, cell: int) -> None:
        from service.optimum import fit_rows

        row = fit_rows(
            self.rows[cell], x=self.x, nuisance=self.nuisance, metric=self.metric, mode=self.mode,
            n_boot=self.N_BOOT, seed=cell,
        )  # fmt: skip
        if row is None:
            return
        self.estimate[cell] = (float(row["x_opt"]), float(row["ci_ratio"]))
        clean = row["fit"] == "smooth" and not row["flags"]
        if clean and row["ci_ratio"] <= self.target:
            self.closed[cell] = True

    def status(self, cells: Sequence[Mapping[str, Any]]) -> str:
        """One short part per cell for the progress line: its x_opt, CI ratio, whether closed."""
        from service.conventions import cell_label

        parts = []
        for i, cell in enumerate(cells):
            est = self.estimate[i]
            shown = f"{self.x}* {est[0]:.3g} (CI x{est[1]:.2f})" if est else "-"
            parts.append(f"{cell_label(cell)}: {shown}{' closed' if self.closed[i] else ''}")
        return "; ".join(parts)
