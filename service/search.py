"""The searcher of a sweep: one Optuna study per axis cell, behind one Ray Tune `Searcher`.

A single study over every cell would chase the easiest one; the analysis needs dense σ⁻¹ coverage
in each. `StratifiedOptuna` keeps an `OptunaSearch` per cell and lets the cells take turns.
"""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING, Any

from ray.tune.search import Searcher

if TYPE_CHECKING:
    from service.spec import Spec


def make_sampler(kind: str, seed: int) -> Any:
    import optuna

    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False),
        "qmc": lambda: optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }
    return samplers[kind]()


class StratifiedOptuna(Searcher):
    """An OptunaSearch per axis cell; cells take turns so every cell fills at the same pace.

    Each suggestion is the full trial config: fixed values, the cell's axis values, and what that
    cell's study asks for. The state (all studies, who asked what) pickles with the searcher, which
    is how `Tuner.restore` resumes the studies where they were.
    """

    def __init__(self, spec: Spec) -> None:
        from ray.tune.search.optuna import OptunaSearch

        metric, mode = spec.objective.metric, spec.objective.mode
        super().__init__(metric=metric, mode=mode)
        self.fixed = dict(spec.fixed)
        self.cells = spec.cells()
        self.quota = spec.trials_per_cell
        space = {k: p.distribution() for k, p in spec.search.items()}
        self.studies = [
            OptunaSearch(
                space=space,
                metric=metric,
                mode=mode,
                sampler=make_sampler(spec.sampler, spec.sampler_seed + i),
            )
            if space
            else None
            for i in range(len(self.cells))
        ]
        self.asked = [0] * len(self.cells)
        self.cell_of_trial: dict[str, int] = {}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if trial_id in self.cell_of_trial:
            i = self.cell_of_trial[trial_id]
        else:
            open_cells = [i for i, n in enumerate(self.asked) if n < self.quota]
            if not open_cells:
                return self.FINISHED
            i = min(open_cells, key=lambda c: (self.asked[c], c))
            self.asked[i] += 1
            self.cell_of_trial[trial_id] = i
        study = self.studies[i]
        suggested = study.suggest(trial_id) if study is not None else {}
        return {**self.fixed, **self.cells[i], **suggested}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # An objective declared final (robustness under attack, say) is measured only at the last
        # evaluation: a result before it has nothing to tell the study.
        study = self._study(trial_id)
        if study is not None and self.metric in result:
            study.on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        study = self._study(trial_id)
        if study is not None:
            study.on_trial_complete(trial_id, result, error)

    def _study(self, trial_id: str) -> Any:
        i = self.cell_of_trial.get(trial_id)
        return None if i is None else self.studies[i]

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
