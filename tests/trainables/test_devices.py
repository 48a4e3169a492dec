"""The trainables run on whatever device they are given, unchanged: CUDA is the same code path.

On a machine without CUDA the GPU comparison is skipped; the device plumbing (an explicit device is
honoured, every tensor follows it) is still checked on the CPU.
"""

from __future__ import annotations

import pytest
import torch

import trainables

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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(SMALL))
def test_cuda_gives_the_cpu_result(name):
    cpu, gpu = _final(name, "cpu"), _final(name, "cuda")
    objective = trainables.load(name).Config.objective
    assert gpu[objective] == pytest.approx(cpu[objective], rel=1e-3, abs=1e-5)
