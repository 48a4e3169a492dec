"""Teacher/student (paper 003 A): frozen N(0, 1) teacher, fresh labelled batches, student sizes."""

from __future__ import annotations

import pytest
import torch

from trainables import engine
from trainables import teacher_student as ts
from trainables.data import Split
from trainables.report import REPORT_KEYS, Metric

SMALL = {"replicas": 2, "test_points": 2000, "steps": 300, "eval_every": 150, "lr": 1e-2}


def teacher_params(teacher):
    return torch.cat([p.detach().flatten(1) for p in teacher.parameters()], dim=1)


def test_teacher_is_frozen_standard_normal_and_per_replica():
    teacher = ts.make_teacher([0, 1, 2])
    assert [layer.weight.shape[1:] for layer in teacher.layers] == [
        (100, 75), (75, 50), (50, 10), (10, 1)
    ]  # fmt: skip
    assert all(not p.requires_grad for p in teacher.parameters())
    values = teacher_params(teacher)  # [3, 11896]
    assert values.mean().item() == pytest.approx(0.0, abs=0.02)
    assert values.std().item() == pytest.approx(1.0, abs=0.02)
    assert not torch.equal(values[0], values[1])  # one teacher per replica
    # replica 2's teacher depends on its seed only, not on the replicas beside it
    assert torch.equal(teacher_params(ts.make_teacher([2]))[0], values[2])


def test_teacher_is_unchanged_by_training():
    cfg = ts.Config(**{**SMALL, "steps": 20})
    task = ts.make_task(cfg)
    teacher = task.batches.label.teacher
    before = teacher_params(teacher).clone()
    start = teacher_params(task.model).clone()
    engine.run(cfg, task, device="cpu")
    assert torch.equal(teacher_params(teacher), before)
    assert not torch.equal(teacher_params(task.model), start)  # while the student did move


def test_student_sizes_and_exact_matches_teacher_parameter_count():
    counts = {
        s: ts.parameter_count(ts.make_student(ts.Config(student=s))) for s in ts.STUDENT_HIDDEN
    }
    teacher = ts.parameter_count(ts.make_teacher([0]))
    assert teacher == 100 * 75 + 75 + 75 * 50 + 50 + 50 * 10 + 10 + 10 + 1 == 11896
    assert counts["exact"] == teacher
    assert counts["under"] < teacher < counts["over"]
    over = ts.make_student(ts.Config(student="over"))
    assert [layer.n_out for layer in over.layers] == [200, 200, 200, 100, 1]


def draws(cfg):
    """The task's batch source on the CPU, as the engine draws it."""
    task = ts.make_task(cfg)
    return task, engine.batch_source(task.batches, task.data, cfg.seeds, torch.device("cpu"))


def test_batches_are_fresh_every_step_and_labelled_by_the_teacher():
    cfg = ts.Config(replicas=2, test_points=100)
    task, draw = draws(cfg)
    teacher = task.batches.label.teacher
    assert isinstance(task.batches, engine.FreshSamples) and task.batches.size == 128
    x1, y1 = draw(1)
    x2, y2 = draw(2)
    assert x1.shape == (2, 128, 100) and y1.shape == (2, 128, 1)
    assert x1.min() >= 0 and x1.max() <= 2 and x1.mean().item() == pytest.approx(1.0, abs=0.02)
    assert not torch.equal(x1, x2) and not torch.equal(x1[0], x1[1])
    torch.testing.assert_close(y2, teacher(x2))
    # same seeds, same stream of batches; replica 1's batches depend on its own seed only
    assert torch.equal(draws(cfg)[1](1)[0], x1)
    alone = ts.Config(replicas=1, seed=cfg.seeds[1], test_points=100)
    assert torch.equal(draws(alone)[1](1)[0][0], x1[1])


def test_standardised_batches_share_the_test_sets_scaling():
    cfg = ts.Config(replicas=2, test_points=3000, normalise_targets=True)
    task, draw = draws(cfg)
    teacher, test = task.batches.label.teacher, task.data["test"]
    shift, scale = ts.target_scaling(teacher(test.x), True)
    torch.testing.assert_close(test.y, (teacher(test.x) - shift) / scale)
    x, y = draw(1)
    torch.testing.assert_close(y, (teacher(x) - shift) / scale)


def test_train_mse_is_measured_on_the_steps_batch():
    cfg = ts.Config(replicas=2, test_points=100)
    task, draw = draws(cfg)
    x, y = draw(1)
    measured = task.evaluate(task.model, {**task.data, engine.LAST_BATCH: Split(x, y)})
    torch.testing.assert_close(measured["train_mse"], engine.mse(task.model(x), y))
    other = task.evaluate(task.model, {**task.data, engine.LAST_BATCH: Split(*draw(2))})
    assert not torch.equal(other["train_mse"], measured["train_mse"])
    assert torch.equal(other["test_mse"], measured["test_mse"])


def test_test_set_is_labelled_by_the_teacher_and_targets_can_be_standardised():
    cfg = ts.Config(replicas=2, test_points=3000)
    teacher = ts.make_teacher(cfg.seeds)
    test = ts.make_test_set(cfg, teacher)
    assert test.x.shape == (2, 3000, 100)
    torch.testing.assert_close(test.y, teacher(test.x))
    shift, scale = ts.target_scaling(test.y, True)
    z = (test.y - shift) / scale
    torch.testing.assert_close(z.mean(dim=(1, 2)), torch.zeros(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(dim=(1, 2)), torch.ones(2))
    shift, scale = ts.target_scaling(test.y, False)
    assert torch.equal((test.y - shift) / scale, test.y)


def test_parameter_distances_per_layer_only_for_the_exact_student():
    teacher = ts.make_teacher([0, 1])
    same = ts.parameter_distances(teacher, teacher)
    assert all(v.tolist() == [0.0, 0.0] for v in same.values())
    assert {f"w1_weight_l{i}" for i in range(4)} <= set(same)
    exact = ts.parameter_distances(ts.make_student(ts.Config(replicas=2)), teacher)
    # default init is U(±1/√n), far narrower than N(0, 1): the distance is of order 0.8
    assert all(0.3 < v < 1.0 for v in exact["w1_weights"].tolist())
    over = ts.parameter_distances(ts.make_student(ts.Config(replicas=2, student="over")), teacher)
    assert set(over) == {"w1_weights", "w1_biases", "w1_all"}


def test_short_run_reduces_test_mse_and_reports_the_metrics():
    cfg = ts.Config(**SMALL)
    teacher = ts.make_teacher(cfg.seeds)
    test = ts.make_test_set(cfg, teacher)
    initial = engine.mse(ts.predict(ts.make_student(cfg), test.x), test.y)
    seen = []
    final = ts.run(SMALL, report=lambda step, m: seen.append((step, m)))
    assert [step for step, _ in seen] == [150, 300]
    assert {"train_mse", "test_mse", "test_nmse", "w1_all", "w1_bias_l3", "test_mse/r1"} <= set(
        final
    )
    assert final["test_mse/r0"] < 0.5 * initial[0].item()
    assert final["test_mse/r1"] < 0.5 * initial[1].item()


@pytest.mark.parametrize("student", sorted(ts.STUDENT_HIDDEN))
def test_reports_exactly_the_declared_metrics(student):
    config = {"student": student, "steps": 2, "eval_every": 1, "test_points": 100}
    declared = ts.Config.from_mapping(config).metrics()
    final = ts.run(config)
    assert {k for k in final if "/" not in k} - set(REPORT_KEYS) == set(declared)
    assert set(final["artifacts"]) == {"weight_histogram", "bias_histogram"}
    per_layer = {f"w1_{k}_l{i}" for i in range(4) for k in ("weight", "bias")}
    assert (per_layer <= set(declared)) == (student == "exact")
    assert declared["test_mse"] == Metric("min") and declared["w1_all"] == Metric(None)
