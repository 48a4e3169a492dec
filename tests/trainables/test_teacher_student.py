"""Teacher/student (paper 003 A): frozen N(0, 1) teacher, fresh labelled batches, student sizes."""

from __future__ import annotations

import pytest
import torch

from trainables import engine
from trainables import teacher_student as ts

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
    teacher = ts.make_teacher(cfg.seeds)
    before = teacher_params(teacher).clone()
    batches = ts.TeacherBatches(teacher, cfg.batch_size, cfg.seeds)
    student = ts.make_student(cfg)
    start = teacher_params(student).clone()
    engine.train(student, batches, engine.mse, lambda m: {}, cfg.schedule)
    assert torch.equal(teacher_params(teacher), before)
    assert not torch.equal(teacher_params(student), start)  # while the student did move


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


def test_batches_are_fresh_every_step_and_labelled_by_the_teacher():
    teacher = ts.make_teacher([0, 1])
    batches = ts.TeacherBatches(teacher, 128, [0, 1])
    x1, y1 = batches(1)
    x2, y2 = batches(2)
    assert x1.shape == (2, 128, 100) and y1.shape == (2, 128, 1)
    assert x1.min() >= 0 and x1.max() <= 2 and x1.mean().item() == pytest.approx(1.0, abs=0.02)
    assert not torch.equal(x1, x2) and not torch.equal(x1[0], x1[1])
    torch.testing.assert_close(y2, teacher(x2))
    assert batches.last is not None and torch.equal(batches.last[0], x2)
    # same seeds, same stream of batches
    again = ts.TeacherBatches(teacher, 128, [0, 1])
    assert torch.equal(again(1)[0], x1)


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
