"""The shared run path: reporting cadence, divergence, early stop, batch sources, probes.

That replicas equal solo runs, for every experiment, is tests/trainables/test_registry.py's job.
"""

from __future__ import annotations

import math

import pytest
import torch

from trainables import engine, sinusoid
from trainables.data import Split
from trainables.report import summarise


def small(**kw):
    return {
        "width": 32,
        "steps": 60,
        "eval_every": 20,
        "train_points": 40,
        "test_points": 50,
        "ood_points": 50,
        **kw,
    }


def test_reporter_sees_every_evaluation_and_can_stop():
    seen: list[int] = []

    def report(step, metrics):
        seen.append(step)
        assert {"train_mse", "test_mse", "ood_mse", "test_mse/r0"} <= set(metrics)
        return step >= 40

    out = sinusoid.run(small(), report)
    assert seen == [20, 40]
    assert "diverged" not in out  # stopped early: no final verdict


def test_final_report_marks_convergence():
    reports = []
    sinusoid.run(small(), lambda s, m: reports.append((s, dict(m))))
    assert [s for s, _ in reports] == [20, 40, 60]
    assert reports[-1][1]["diverged"] == 0.0


def test_huge_lr_diverges_with_a_reason_and_no_exception():
    reports = []
    out = sinusoid.run(
        small(normalise=False, activation="relu", lr=1e12, steps=200, eval_every=100),
        lambda s, m: reports.append(dict(m)),
    )
    assert out["diverged"] == 1.0
    assert "non-finite loss" in out["failure_reason"] and "lr=1e+12" in out["failure_reason"]
    assert reports[-1] == out


def test_summarise_mean_and_replicas():
    out = summarise({"m": torch.tensor([1.0, 2.0, 6.0])})
    assert out == {"m": 3.0, "m/r0": 1.0, "m/r1": 2.0, "m/r2": 6.0}


def test_minibatches_are_per_replica_and_reproducible():
    split = Split(torch.arange(20.0).view(1, 20, 1).repeat(2, 1, 1), torch.zeros(2, 20, 1))
    source, cpu = engine.Minibatches(5), torch.device("cpu")
    a = engine.batch_source(source, {"train": split}, [0, 1], cpu)(1)[0]
    b = engine.batch_source(source, {"train": split}, [0, 1], cpu)(1)[0]
    solo_data = {"train": Split(split.x[1:], split.y[1:])}
    solo = engine.batch_source(source, solo_data, [1], cpu)(1)[0]
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[1:], solo)
    assert not torch.equal(a[0], a[1])


def test_cross_entropy_matches_torch_per_replica():
    logits, labels = torch.randn(3, 7, 4), torch.randint(4, (3, 7))
    expected = torch.stack(
        [torch.nn.functional.cross_entropy(logits[r], labels[r]) for r in range(3)]
    )
    torch.testing.assert_close(engine.cross_entropy(logits, labels), expected)
    assert math.isclose(
        engine.accuracy(torch.eye(2).expand(1, 2, 2), torch.tensor([[0, 0]])).item(), 0.5
    )


def test_grad_probe_sees_the_gradients_of_evaluation_steps():
    from trainables.nn import ReplicaMLP, replica_generators

    model = ReplicaMLP([1, 4, 1], replica_generators([0, 1], "init"), activation="relu")
    split = Split(torch.linspace(-1, 1, 8).view(1, 8, 1).repeat(2, 1, 1), torch.zeros(2, 8, 1))
    seen = []

    def probe(m):
        grads = m.layers[0].weight.grad
        seen.append(grads.clone())
        return {"grad_norm": grads.flatten(1).norm(dim=1)}

    cfg = engine.TrainingConfig(replicas=2, steps=4, lr=0.1, eval_every=2)
    task = engine.Task(model, {"train": split}, engine.mse, lambda m, d: {}, grad_probe=probe)
    reports = []
    engine.run(cfg, task, lambda s, m: reports.append(m))
    assert len(seen) == 2  # steps 2 and 4 only
    assert reports[0]["grad_norm/r1"] == pytest.approx(seen[0][1].norm().item())


def test_many_replicas_are_summarised_not_listed():
    values = torch.arange(40.0)
    out = summarise({"m": values})
    assert out["m"] == pytest.approx(19.5) and out["m/min"] == 0.0 and out["m/max"] == 39.0
    assert out["m/std"] == pytest.approx(values.std().item())
    assert not any("/r" in k for k in out)


def test_fresh_samples_are_drawn_per_replica_and_labelled_on_the_device():
    source = engine.FreshSamples(lambda g, n: torch.rand(n, 2, generator=g), 4, lambda x: x.sum(-1))
    draw = engine.batch_source(source, {}, [0, 1], torch.device("cpu"))
    x1, y1 = draw(1)
    x2, _ = draw(2)
    solo_x, _ = engine.batch_source(source, {}, [1], torch.device("cpu"))(1)
    assert x1.shape == (2, 4, 2) and not torch.equal(x1, x2)
    torch.testing.assert_close(y1, x1.sum(-1))
    torch.testing.assert_close(x1[1:], solo_x)


def test_artifacts_receive_the_final_per_replica_metrics():
    seen = {}

    def plot(model, data, final, replica):
        seen.update(final)
        return {"p": {"kind": "curves", "series": []}}

    cfg = sinusoid.Config.from_mapping({**small(), "replicas": 2})
    task = engine.Task(sinusoid.make_model(cfg), sinusoid.make_data(cfg), engine.mse,
                       sinusoid.evaluate, artifacts=plot)  # fmt: skip
    out = engine.run(cfg, task)
    assert out["artifacts"] == {"p": {"kind": "curves", "series": []}}
    assert seen["test_mse"].tolist() == [out["test_mse/r0"], out["test_mse/r1"]]


def test_momentum_is_refused_by_name_for_optimizers_without_it():
    from trainables.config import ConfigError

    with pytest.raises(ConfigError, match="`momentum` must be unset with optimizer adam"):
        engine.TrainingConfig(momentum=0.5)
    assert engine.TrainingConfig(optimizer="sgd", momentum=0.5).sgd_momentum == 0.5


def test_points_every_replica_shares_move_as_one_copy():
    shared = Split(torch.randn(50, 3).expand(4, -1, -1), torch.zeros(50).expand(4, -1))
    moved = shared.to("cpu")
    assert moved.x.stride(0) == 0 and moved.y.stride(0) == 0
    torch.testing.assert_close(moved.x, shared.x)


def _pack(lrs, normalise=False):
    """Three one-seed configurations of a plain ReLU sinusoid net as one stacked model."""
    cfg = sinusoid.Config.from_mapping(
        {**small(normalise=normalise, activation="relu", steps=60), "replicas": len(lrs),
         "seed": [0] * len(lrs), "lr": lrs}
    )  # fmt: skip
    return cfg, sinusoid.make_task(cfg)


def test_a_diverging_group_stops_alone_and_the_others_train_as_without_it():
    reports: list[tuple[int, dict]] = []
    cfg, task = _pack([1e-3, 1e12, 5e-3])
    groups = [slice(0, 1), slice(1, 2), slice(2, 3)]
    last = engine.run_groups(cfg, task, lambda s, m: reports.append((s, m)) or [], "cpu", groups)
    assert last[1]["diverged"] == 1.0 and "lr=1e+12" in last[1]["failure_reason"]
    assert [s for s, m in reports if 1 in m] == [20]  # reported once, with its reason
    for g, lr in ((0, 1e-3), (2, 5e-3)):
        alone = sinusoid.run({**small(normalise=False, activation="relu", steps=60), "lr": lr})
        assert last[g]["test_mse"] == alone["test_mse"]  # bit for bit
        assert last[g]["diverged"] == 0.0


def test_a_group_the_reporter_stops_leaves_the_others_untouched():
    seen: dict[int, list[int]] = {0: [], 1: []}

    def report(step, metrics):
        for g in metrics:
            seen[g].append(step)
        return [0] if step == 20 else []

    cfg, task = _pack([1e-3, 5e-3])
    last = engine.run_groups(cfg, task, report, "cpu", [slice(0, 1), slice(1, 2)])
    assert seen == {0: [20], 1: [20, 40, 60]}
    alone = sinusoid.run({**small(normalise=False, activation="relu", steps=60), "lr": 5e-3})
    assert last[1]["test_mse"] == alone["test_mse"]
    assert "diverged" not in last[0]  # stopped early: no final verdict


def test_nmse_is_mse_over_the_target_variance_per_replica():
    y = torch.tensor([[1.0, 2.0, 3.0, 6.0], [5.0, 5.0, 5.0, 5.0]])[..., None]
    pred = torch.tensor([[2.0, 2.0, 2.0, 2.0], [5.0, 5.0, 5.0, 7.0]])[..., None]
    # replica 0: MSE (1 + 0 + 1 + 16) / 4 = 4.5; mean 3, variance (4 + 1 + 0 + 9) / 4 = 3.5
    assert engine.nmse(pred, y)[0].item() == pytest.approx(4.5 / 3.5)
    # constant targets: no variance, a huge but finite ratio instead of inf or nan
    assert engine.nmse(pred, y)[1].item() == pytest.approx(1.0 / 1e-30)
    assert engine.nmse(y.mean(dim=1, keepdim=True).expand_as(y), y)[0].item() == pytest.approx(1.0)
