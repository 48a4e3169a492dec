"""Pack sizes: what `pack: K` and `pack: auto` make of a spec."""

from __future__ import annotations

import math

import pytest

from service import packing
from service.errors import SpecError
from service.spec import load_spec

SPEC = {
    "name": "t",
    "experiment": "sinusoid",
    "objective": {"metric": "test_mse"},
    "fixed": {"replicas": 4, "train_points": 100},
    "axes": {"width": [16, 1000]},
    "search": {"sigma_inv": {"low": 0.1, "high": 10.0, "log": True},
               "lr": {"low": 1e-3, "high": 1e-2, "log": True}},
    "trials_per_cell": 96,
    "max_concurrent": 2,
}  # fmt: skip


def test_an_explicit_pack_size_holds_for_every_cell_and_counts_tune_trials():
    spec = load_spec(SPEC, overrides=["pack=10"])
    sizes = packing.pack_sizes(spec)
    assert sizes == [10, 10] and packing.num_packs(spec, sizes) == 20  # 96 = 9 × 10 + 6


def test_auto_packs_small_models_wide_and_keeps_large_ones_in_cache():
    small, large = packing.pack_sizes(load_spec(SPEC))
    # activations of a replica: 100 points × (input, hidden units, output); 4 replicas a config
    fits = packing.CPU_ACTIVATIONS // (100 * (1 + 16 + 1)) // 4
    assert fits > 96 and small == 96  # the whole cell in one pack: two cells fill the two CPUs
    assert large == max(1, packing.CPU_ACTIVATIONS // (100 * (1 + 1000 + 1)) // 4)


def test_auto_leaves_a_cpu_for_every_concurrent_pack():
    spec = load_spec({**SPEC, "axes": {"width": [16]}, "max_concurrent": 4})
    assert packing.pack_sizes(spec) == [24]  # 96 configurations, 4 packs at a time


def test_configurations_that_cannot_stack_are_packed_a_few_at_a_time():
    spec = load_spec({**SPEC, "axes": {}, "search": {
        **SPEC["search"], "width": {"type": "int", "low": 8, "high": 64}}})  # fmt: skip
    assert packing.pack_sizes(spec) == [packing.SEQUENTIAL_PACK]
    gp = load_spec({"name": "g", "experiment": "gp", "objective": {"metric": "test_mse"},
                    "search": {"length_scale": {"low": 0.1, "high": 10.0}},
                    "trials_per_cell": 24})  # fmt: skip
    assert packing.pack_sizes(gp) == [packing.SEQUENTIAL_PACK]


def test_a_gpu_pack_fills_half_of_its_share_of_the_card(monkeypatch):
    monkeypatch.setattr(packing, "GPU_MEMORY_GIB", 1.0)
    spec = load_spec(SPEC, overrides=["resources.gpu=0.5", "trials_per_cell=1000"])
    activations, static = packing.replica_cost("sinusoid", {"width": 1000, "train_points": 100})
    assert static == 3001 + 2 * (100 + 2000 + 2000)  # parameters, then data: x and y per split
    per_replica = 4 * (4 * activations + 4 * static)
    k = int(0.25 * 2**30 // per_replica) // 4
    assert packing.pack_sizes(spec)[1] == math.ceil(1000 / math.ceil(1000 / k))  # balanced


@pytest.mark.parametrize("value", [0, -2, "big", 1.5])
def test_a_bad_pack_is_refused_by_name(value):
    with pytest.raises(SpecError, match="`pack`"):
        load_spec({**SPEC, "pack": value})
