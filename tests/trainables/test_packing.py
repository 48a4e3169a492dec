"""Packs: K configurations as one stacked model, each as if it had trained alone."""

from __future__ import annotations

import pytest

from trainables import packing, sinusoid

BASE = {"width": 16, "steps": 40, "eval_every": 20, "train_points": 30, "test_points": 40,
        "ood_points": 40, "replicas": 2}  # fmt: skip
MEMBERS = [{**BASE, "sigma_inv": s, "lr": lr} for s, lr in ((0.5, 1e-3), (1.0, 5e-3), (3.0, 2e-2))]


def collect(experiment, configs):
    seen: dict[int, list[tuple[int, dict]]] = {}

    def report(step, metrics):
        for k, m in metrics.items():
            seen.setdefault(k, []).append((step, m))
        return []

    last = packing.run_pack(experiment, configs, report, "cpu")
    return seen, last


def test_stack_lays_each_configuration_out_as_a_group_of_its_replicas():
    cfg, groups = packing.stack(sinusoid.Config, MEMBERS)
    assert cfg.replicas == 6 and groups == [slice(0, 2), slice(2, 4), slice(4, 6)]
    assert cfg.each("sigma_inv") == (0.5, 0.5, 1.0, 1.0, 3.0, 3.0)
    assert cfg.seeds == [0, 1, 0, 1, 0, 1]  # every configuration keeps its own seeds


def test_configurations_that_differ_beyond_per_replica_fields_do_not_stack():
    assert packing.stack(sinusoid.Config, [BASE, {**BASE, "width": 32}]) is None


def test_each_member_of_a_pack_reports_what_it_reports_alone():
    seen, last = collect("sinusoid", MEMBERS)
    for k, config in enumerate(MEMBERS):
        alone = []
        sinusoid.run(config, lambda s, m, alone=alone: alone.append((s, m)))
        assert [s for s, _ in seen[k]] == [s for s, _ in alone]
        for (_, packed), (_, solo) in zip(seen[k], alone):
            for key, value in solo.items():
                if key != "artifacts":
                    assert packed[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
        assert last[k]["diverged"] == 0.0


def test_an_unstackable_pack_runs_its_members_one_after_another():
    configs = [{**BASE, "width": 8}, {**BASE, "width": 24}]
    seen, last = collect("sinusoid", configs)
    for k, config in enumerate(configs):
        assert last[k]["test_mse"] == pytest.approx(sinusoid.run(config)["test_mse"], rel=1e-6)
    gp_configs = [{"replicas": 2, "test_points": 50, "length_scale": v} for v in (0.5, 2.0)]
    _, gp_last = collect("gp", gp_configs)
    from trainables import gp

    for k, config in enumerate(gp_configs):
        assert gp_last[k]["test_mse"] == gp.run(config)["test_mse"]
