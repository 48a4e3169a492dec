"""The shared loop: replicas equal solo runs, the decay schedule, divergence, early stop."""

from __future__ import annotations

import math

import pytest
import torch

from trainables import engine, sinusoid, spiral


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


@pytest.mark.parametrize(
    "module,extra", [(sinusoid, {}), (spiral, {"train_points": 40, "test_points": 40})]
)
def test_replicas_train_exactly_like_solo_runs(module, extra):
    cfg = {**small(), **extra}
    if module is spiral:
        cfg = {k: v for k, v in cfg.items() if k != "ood_points"}
    together = module.run({**cfg, "seed": 3, "replicas": 3})
    for r in range(3):
        alone = module.run({**cfg, "seed": 3 + r, "replicas": 1})
        for key, value in alone.items():
            if key.endswith("/r0"):
                base = key[: -len("/r0")]
                assert together[f"{base}/r{r}"] == pytest.approx(value, rel=1e-5, abs=1e-5), key


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


def test_lr_decays_by_factor_every_period():
    model = torch.nn.Linear(1, 1)
    sched = engine.Schedule(steps=1, lr=1.0, lr_decay=0.5, decay_every=10)
    opt = engine.make_optimizer(model.parameters(), sched)
    decay = torch.optim.lr_scheduler.StepLR(opt, sched.decay_every, sched.lr_decay)
    lrs = []
    for _ in range(30):
        opt.step()
        decay.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[8] == 1.0 and lrs[9] == 0.5 and lrs[19] == 0.25


def test_summarise_mean_and_replicas():
    out = engine.summarise({"m": torch.tensor([1.0, 2.0, 6.0])})
    assert out == {"m": 3.0, "m/r0": 1.0, "m/r1": 2.0, "m/r2": 6.0}


def test_minibatches_are_per_replica_and_reproducible():
    from trainables.data import Split

    split = Split(torch.arange(20.0).view(1, 20, 1).repeat(2, 1, 1), torch.zeros(2, 20, 1))
    a = engine.minibatches(split, 5, [0, 1])(1)[0]
    b = engine.minibatches(split, 5, [0, 1])(1)[0]
    solo = engine.minibatches(Split(split.x[1:], split.y[1:]), 5, [1])(1)[0]
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
    from trainables.data import Split
    from trainables.nn import ReplicaMLP, replica_generators

    model = ReplicaMLP([1, 4, 1], replica_generators([0, 1], "init"), activation="relu")
    split = Split(torch.linspace(-1, 1, 8).view(1, 8, 1).repeat(2, 1, 1), torch.zeros(2, 8, 1))
    seen = []

    def probe(m):
        grads = m.layers[0].weight.grad
        seen.append(grads.clone())
        return {"grad_norm": grads.flatten(1).norm(dim=1)}

    sched = engine.Schedule(steps=4, lr=0.1, eval_every=2)
    reports = []
    engine.train(model, engine.full_batch(split), engine.mse, lambda m: {}, sched,
                 lambda s, m: reports.append(m), grad_probe=probe)  # fmt: skip
    assert len(seen) == 2  # steps 2 and 4 only
    assert reports[0]["grad_norm/r1"] == pytest.approx(seen[0][1].norm().item())


def test_many_replicas_are_summarised_not_listed():
    values = torch.arange(40.0)
    out = engine.summarise({"m": values})
    assert out["m"] == pytest.approx(19.5) and out["m/min"] == 0.0 and out["m/max"] == 39.0
    assert out["m/std"] == pytest.approx(values.std().item())
    assert not any("/r" in k for k in out)
