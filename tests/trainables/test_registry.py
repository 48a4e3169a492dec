"""Every experiment in the registry, held to the same contract.

- It reports exactly the metrics its Config declares (the final-only ones only at the end).
- Replicas that differ in per-replica fields (seed, σ⁻¹, lr, ...) each follow exactly the path they
  take alone, to 1e-5: what lets many trials share one stacked model.
- Every training field reaches the optimiser: changing it changes the trajectory, or the Config
  rejects the change by name.

Each experiment runs from its first shipped spec's `smoke` profile, cut to a few steps, so a new
experiment is covered by adding its module and its spec.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

import trainables
from service.spec import load_spec, shipped_specs
from trainables.config import ConfigError
from trainables.engine import TrainingConfig
from trainables.report import REPORT_KEYS

STEPS, EVAL_EVERY = 6, 3
TRAINING_FIELDS = [f.name for f in dataclasses.fields(TrainingConfig)][2:]  # after seed, replicas


def smoke_config(experiment: str) -> dict[str, Any]:
    """A tiny config of the experiment: its first shipped spec's smoke profile, a few steps."""
    for _, path in sorted(shipped_specs().items()):
        if yaml.safe_load(path.read_text())["experiment"] == experiment:
            spec = load_spec(path, "smoke")
            break
    else:
        raise AssertionError(f"no shipped spec runs {experiment}")
    examples = {k: middle(p) for k, p in spec.search.items()}
    config = spec.trial_config(spec.cells()[0], examples)
    config["replicas"] = 1
    if issubclass(trainables.load(experiment).Config, TrainingConfig):
        config.update(steps=STEPS, eval_every=EVAL_EVERY)
    return config


def middle(param: Any) -> Any:
    """The middle of a searched range (geometric for a log range): a value trials really use."""
    if param.type == "categorical":
        return param.choices[0]
    mid = math.sqrt(param.low * param.high) if param.log else (param.low + param.high) / 2
    return int(mid) if param.type == "int" else mid


def trajectory(experiment: str, config: Mapping[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    reports: list[tuple[int, dict[str, Any]]] = []
    trainables.load(experiment).run(config, lambda step, m: reports.append((step, dict(m))))
    return [(s, {k: v for k, v in m.items() if k != "artifacts"}) for s, m in reports]


def plain(metrics: Mapping[str, Any]) -> set[str]:
    return {k for k in metrics if "/" not in k and k not in REPORT_KEYS}


@pytest.mark.parametrize("experiment", sorted(trainables.REGISTRY))
def test_reports_exactly_the_declared_metrics(experiment):
    config = smoke_config(experiment)
    declared = trainables.load(experiment).Config.from_mapping(config).metrics()
    reports = trajectory(experiment, config)
    *middle, (_, final) = reports
    assert plain(final) == set(declared), experiment
    for _, metrics in middle:
        assert plain(metrics) == {k for k, m in declared.items() if not m.final}, experiment


def replica_values(name: str, base: Any) -> list[Any]:
    """Three different values of a per-replica field around its base value."""
    if name == "seed":
        return [3, 8, 5]
    if not base:
        return [0.0, 1e-3, 1e-2]
    return [base * 0.5, base, base * 1.5]


@pytest.mark.parametrize("experiment", sorted(trainables.REGISTRY))
def test_replicas_with_their_own_values_follow_their_solo_paths(experiment):
    config_cls = trainables.load(experiment).Config
    base = smoke_config(experiment)
    defaults = config_cls.from_mapping(base)
    fields = config_cls.per_replica_fields()
    assert "seed" in fields
    values = {f: replica_values(f, getattr(defaults, f)) for f in fields}
    stacked = trajectory(experiment, {**base, "replicas": 3, **values})
    for r in range(3):
        solo = trajectory(experiment, {**base, **{f: v[r] for f, v in values.items()}})
        assert [s for s, _ in solo] == [s for s, _ in stacked]
        for (step, alone), (_, together) in zip(solo, stacked):
            for key, value in alone.items():
                if key.endswith("/r0"):
                    name = f"{key[: -len('/r0')]}/r{r}"
                    assert together[name] == pytest.approx(value, rel=1e-5, abs=1e-5), (step, name)


def changed(field: str, config: TrainingConfig) -> dict[str, Any]:
    """A change of one training field that must show in the trajectory (or be refused)."""
    value = getattr(config, field)
    if field == "optimizer":
        other = "adam" if value != "adam" else "sgd"
        return {"optimizer": other, "momentum": None}
    if field == "momentum":
        return {"momentum": 0.5 if config.sgd_momentum != 0.5 else 0.3}
    if field in ("steps", "eval_every", "decay_every"):
        return {field: value + 1}
    if field == "weight_decay":
        return {field: 0.05}
    if field == "lr_decay":
        return {field: 0.8 if value != 0.8 else 0.6}
    return {field: value * 2}


@pytest.mark.parametrize("field", TRAINING_FIELDS)
@pytest.mark.parametrize("experiment", sorted(trainables.REGISTRY))
def test_every_training_field_changes_the_trajectory_or_is_refused(experiment, field):
    config_cls = trainables.load(experiment).Config
    base = smoke_config(experiment)
    if not issubclass(config_cls, TrainingConfig):
        with pytest.raises(ConfigError, match=f"unknown config key.*{field}"):
            config_cls.from_mapping({**base, field: 1})
        return
    # a decay every other step, so that lr_decay and decay_every act within a few steps
    base = {**base, "lr_decay": 0.5, "decay_every": 2}
    change = changed(field, config_cls.from_mapping(base))
    try:
        config_cls.from_mapping({**base, **change})
    except ConfigError as exc:
        assert f"`{field}`" in str(exc)
        return
    assert trajectory(experiment, {**base, **change}) != trajectory(experiment, base), field


@pytest.mark.parametrize("name", sorted(trainables.REGISTRY))
def test_config_rejects_unknown_keys_and_bad_types(name):
    config = trainables.load(name).Config
    with pytest.raises(ConfigError, match="unknown config key"):
        config.from_mapping({"widht": 3})
    with pytest.raises(ConfigError, match="`replicas` must be an integer"):
        config.from_mapping({"replicas": "four"})
    with pytest.raises(ConfigError, match="`replicas` must be >= 1, but got 0"):
        config.from_mapping({"replicas": 0})


def test_unknown_experiment_names_the_known_ones():
    with pytest.raises(KeyError, match="known: \\[.*'sinusoid'.*\\]"):
        trainables.load("sinus")
