"""The trainables run on whatever device they are given, unchanged: CUDA is the same code path.

On a machine without CUDA the GPU comparison is skipped; the device plumbing (an explicit device is
honoured, every tensor follows it) is still checked on the CPU.
"""

from __future__ import annotations

import pytest
import torch

import trainables
from service.spec import load_spec, shipped_specs

SMALL = {
    "sinusoid": {"steps": 20, "eval_every": 10, "width": 16, "train_points": 20,
                 "test_points": 20, "ood_points": 20, "replicas": 2},
    "spiral": {"steps": 20, "eval_every": 10, "width": 16, "train_points": 40,
               "test_points": 40, "replicas": 2},
}  # fmt: skip


def _final(name: str, device: str) -> dict:
    return trainables.load(name).run(dict(SMALL[name]), lambda step, m: False, device=device)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_an_explicit_device_is_honoured(name, monkeypatch):
    seen: list[torch.device] = []
    original = torch.Tensor.to

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        seen.append(out.device)
        return out

    monkeypatch.setattr(torch.Tensor, "to", spy)
    metrics = _final(name, "cpu")
    assert seen and all(d.type == "cpu" for d in seen)
    assert metrics["diverged"] == 0.0


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
@pytest.mark.parametrize("name", sorted(SMALL))
def test_cuda_gives_the_cpu_result(name):
    cpu, gpu = _final(name, "cpu"), _final(name, "cuda")
    objective = trainables.load(name).Config.objective
    assert gpu[objective] == pytest.approx(cpu[objective], rel=1e-3, abs=1e-5)


@needs_cuda
@pytest.mark.parametrize("spec_name", sorted(shipped_specs()))
def test_every_shipped_spec_trains_on_cuda_like_on_the_cpu(spec_name):
    """One trial of each shipped spec's smoke profile, on both devices, from the same seed.

    Summation order differs between the devices, so the two runs drift apart by float rounding over
    the steps; a wrong device placement or a CPU-only operation fails outright instead.
    """
    spec = load_spec(spec_name, profile="smoke")
    config = spec.trial_config(spec.cells()[0], {k: p.example() for k, p in spec.search.items()})
    module = trainables.load(spec.experiment)
    cpu, gpu = (module.run(dict(config), lambda s, m: False, device=d) for d in ("cpu", "cuda"))
    objective = spec.objective.metric
    assert gpu["diverged"] == cpu["diverged"]
    assert gpu[objective] == pytest.approx(cpu[objective], rel=2e-2, abs=2e-3)
