"""Packs: many configurations of one experiment trained as one tensor program.

A pack is a list of configurations that differ only in per-replica fields (σ⁻¹, lr, seed, ...). Its
K configurations × R seeds become one stacked Config of K·R replicas (`stack`): configuration k's
replicas are rows k·R … k·R + R - 1 (a *group*), and each group is summarised and reported on its
own, as if it had trained alone (`engine.run_groups`; every update and loss is per replica, so a
group's path does not depend on the others).

Configurations that differ in a field that cannot vary per replica (width, data size, the
architecture), and experiments without a stacked task (the scikit-learn GP), run one after another
in the one process instead: still one trial's actor, start-up and imports for the whole pack.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import trainables
from trainables import engine
from trainables.config import ExperimentConfig


def stack(
    config_cls: type[ExperimentConfig], configs: Sequence[Mapping[str, Any]]
) -> tuple[ExperimentConfig, list[slice]] | None:
    """One Config holding every configuration's replicas, and each one's rows; None when two
    configurations differ in a field that is not per-replica (they cannot share a model)."""
    parsed = [config_cls.from_mapping(c) for c in configs]
    per_replica = set(config_cls.per_replica_fields())
    first = parsed[0]
    for other in parsed[1:]:
        for f in dataclasses.fields(config_cls):
            if f.name not in per_replica | {"replicas"}:
                if getattr(other, f.name) != getattr(first, f.name):
                    return None
    values: dict[str, Any] = {f.name: getattr(first, f.name) for f in dataclasses.fields(first)}
    for name in per_replica:
        values[name] = tuple(v for c in parsed for v in c.each(name))
    values["replicas"] = sum(c.replicas for c in parsed)
    groups, start = [], 0
    for c in parsed:
        groups.append(slice(start, start + c.replicas))
        start += c.replicas
    return config_cls(**values), groups


def run_pack(
    experiment: str,
    configs: Sequence[Mapping[str, Any]],
    report: engine.GroupReporter,
    device: str | None = None,
) -> list[dict[str, Any]]:
    """Train a pack; `report(step, {k: metrics})` sees configuration k's own metrics, and returns
    the configurations to stop there. Returns each configuration's last metrics."""
    module = trainables.load(experiment)
    stacked = stack(module.Config, configs) if hasattr(module, "make_task") else None
    if stacked is not None:
        cfg, groups = stacked
        return engine.run_groups(cfg, module.make_task(cfg), report, device, groups)
    return [
        module.run(config, _MemberReporter(report, k), device) for k, config in enumerate(configs)
    ]


class _MemberReporter:
    """A single configuration's reporter, forwarding to the pack's."""

    def __init__(self, report: engine.GroupReporter, index: int) -> None:
        self.report, self.index = report, index

    def __call__(self, step: int, metrics: Mapping[str, Any]) -> bool:
        stop: Iterable[int] = self.report(step, {self.index: dict(metrics)})
        return self.index in set(stop)


def replica_cost(experiment: str, config: Mapping[str, Any]) -> tuple[int, int] | None:
    """(activation elements of one training step, parameters + data elements) of one replica of
    this config, measured on the CPU; None for an experiment without a stacked task."""
    import torch

    module = trainables.load(experiment)
    if not hasattr(module, "make_task"):
        return None
    cfg = module.Config.from_mapping({**config, "replicas": 1})
    task = module.make_task(cfg)
    x, _ = engine.batch_source(task.batches, task.data, cfg.seeds, torch.device("cpu"))(1)
    outputs = [x.numel()]
    hooks = [
        m.register_forward_hook(lambda m, i, out: outputs.append(out.numel()))
        for m in task.model.modules()
        if not list(m.children())
    ]
    fused = getattr(task.model, "fused", False)
    if fused:
        task.model.fused = False  # a fused net skips its layers' forward, and with it the hooks
    with torch.no_grad():
        task.model(x)
    if fused:
        task.model.fused = True
    for h in hooks:
        h.remove()
    params = sum(p.numel() for p in task.model.parameters())
    data = sum(s.x[0].numel() + s.y[0].numel() for s in task.data.values())
    return sum(outputs), params + data
