"""Attacks: ε-balls and clip ranges hold, known values on a linear model, no side effects; and the
robustness evaluation the classification experiments share (`trainables.robustness`)."""

from __future__ import annotations

from functools import partial

import pytest
import torch

import trainables
from trainables import attacks, engine, robustness
from trainables.config import ConfigError
from trainables.data import Split
from trainables.nn import ReplicaLinear, ReplicaMLP, replica_generators

EPS = 0.3


def mlp(seeds: list[int], d: int = 8) -> ReplicaMLP:
    return ReplicaMLP([d, 32, 3], replica_generators(seeds, "init"), sigma_inv=0.5)


def points(r: int = 2, b: int = 40, d: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(r, b, d, generator=g), torch.randint(3, (r, b), generator=g)


ATTACKS = {
    "fgsm": (partial(attacks.fgsm, clip=(0.0, 1.0)), "inf"),
    "bim": (partial(attacks.bim, steps=5, clip=(0.0, 1.0)), "inf"),
    "l2": (partial(attacks.l2_attack, steps=5, clip=(0.0, 1.0)), "l2"),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("eps", [0.05, EPS, 2.0])
def test_perturbation_stays_in_its_ball_and_the_clip_range(name, eps):
    attack, norm = ATTACKS[name]
    x, y = points()
    adv = attack(mlp([0, 1]), x, y, eps)
    delta = adv - x
    size = delta.abs().amax(-1) if norm == "inf" else torch.linalg.vector_norm(delta, dim=-1)
    assert (size <= eps * (1 + 1e-5) + 1e-7).all()
    assert size.max() > 0.5 * min(eps, 0.5)  # it did move
    assert adv.min() >= 0 and adv.max() <= 1


def test_unclipped_attacks_use_the_whole_ball():
    x, y = points()
    model = mlp([0, 1])
    delta = attacks.fgsm(model, x, y, EPS) - x
    torch.testing.assert_close(delta.abs(), torch.full_like(x, EPS))
    norms = torch.linalg.vector_norm(attacks.l2_attack(model, x, y, EPS) - x, dim=-1)
    torch.testing.assert_close(norms, torch.full_like(norms, EPS))


def test_noise_is_clipped_and_has_its_std():
    x = torch.full((2, 2000, 8), 0.5)
    noisy = attacks.gaussian_noise(x, 0.1, replica_generators([0, 1], "noise"), clip=(0.0, 1.0))
    assert (noisy - x).std().item() == pytest.approx(0.1, rel=0.03)
    wide = attacks.gaussian_noise(x, 2.0, torch.Generator().manual_seed(0), clip=(0.0, 1.0))
    assert wide.min() == 0 and wide.max() == 1


def linear_model(w: torch.Tensor) -> ReplicaLinear:
    """Two logits: 0 and x·w, so for label 0 the loss gradient is p₁·w, along w."""
    model = ReplicaLinear(len(w), 2, replica_generators([0], "init"))
    with torch.no_grad():
        model.weight.zero_()
        model.weight[0, :, 1] = w
        model.bias.zero_()
    return model


def test_fgsm_on_a_linear_model_is_eps_sign_w_and_l2_is_along_w():
    w = torch.tensor([0.5, -2.0, 1.0, -0.1, 3.0])
    model = linear_model(w)
    x = torch.randn(1, 7, 5, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(1, 7, dtype=torch.long)
    assert torch.equal(attacks.fgsm(model, x, y, EPS), x + EPS * w.sign())
    one_step = attacks.l2_attack(model, x, y, EPS, steps=1)
    torch.testing.assert_close(one_step - x, (EPS * w / w.norm()).expand_as(x))
    # The loss is linear along w: more steps end at the same point of the ball.
    torch.testing.assert_close(attacks.l2_attack(model, x, y, EPS, steps=7), one_step)
    torch.testing.assert_close(attacks.bim(model, x, y, EPS, steps=4), x + EPS * w.sign())


@pytest.mark.parametrize(
    "attack",
    [attacks.fgsm, attacks.l2_attack, attacks.bim,
     lambda m, x, y, eps: attacks.gaussian_noise(x, eps, torch.Generator())],
)  # fmt: skip
def test_eps_zero_returns_x_unchanged(attack):
    x, y = points()
    assert torch.equal(attack(mlp([0, 1]), x, y, 0.0), x)


def test_negative_eps_is_rejected():
    x, y = points()
    with pytest.raises(ValueError, match="`eps` must be >= 0, but got -0.1"):
        attacks.fgsm(mlp([0, 1]), x, y, -0.1)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_replicas_are_attacked_independently(name):
    attack, _ = ATTACKS[name]
    x, y = points(r=3)
    together = attack(mlp([4, 5, 6]), x, y, EPS)
    alone = attack(mlp([5]), x[1:2], y[1:2], EPS)
    torch.testing.assert_close(together[1:2], alone, atol=1e-5, rtol=0)
    noise = attacks.gaussian_noise(x, 0.2, replica_generators([4, 5, 6], "noise"))
    noise_alone = attacks.gaussian_noise(x[1:2], 0.2, replica_generators([5], "noise"))
    assert torch.equal(noise[1:2], noise_alone)


@pytest.mark.parametrize("training", [True, False])
def test_attacks_leave_parameters_and_mode_alone(training):
    model = mlp([0, 1]).train(training)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = points()
    for attack, _ in ATTACKS.values():
        attack(model, x, y, EPS)
    assert model.training is training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))


def blobs(seed: int, n: int = 400) -> Split:
    """Three Gaussian blobs in 8 dimensions, inside [0, 1] mostly."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(3, (n,), generator=g)
    centres = torch.rand(3, 8, generator=torch.Generator().manual_seed(99))
    return Split((centres[y] + 0.1 * torch.randn(n, 8, generator=g)).clamp(0, 1), y)


def trained_model() -> tuple[ReplicaMLP, Split]:
    data = [blobs(0), blobs(1)]
    split = Split(torch.stack([d.x for d in data]), torch.stack([d.y for d in data]))
    model = mlp([0, 1])
    cfg = engine.TrainingConfig(replicas=2, steps=150, lr=2e-2, eval_every=150)
    task = engine.Task(model, {"train": split}, engine.cross_entropy, lambda m, d: {})
    engine.run(cfg, task, device="cpu")
    return model, split


def test_attacks_never_raise_accuracy_above_clean_accuracy():
    model, split = trained_model()
    with torch.no_grad():
        clean = engine.accuracy(model(split.x), split.y)
    assert (clean > 0.9).all()
    for attack, _ in ATTACKS.values():
        robust = attacks.robust_accuracy(model, split.x, split.y, attack, [0.0, 0.1, 0.3])
        torch.testing.assert_close(robust[0.0], clean)
        assert all((acc <= clean).all() and (acc <= 1).all() for acc in robust.values())
        plain = attacks.robust_accuracy(
            model, split.x, split.y, attack, [0.1, 0.3], require_clean=False
        )
        assert (plain[0.1] <= clean).all() and (plain[0.3] < plain[0.1]).all()


def test_robust_accuracy_in_chunks_equals_one_batch():
    model, split = trained_model()
    attack = ATTACKS["l2"][0]
    whole = attacks.robust_accuracy(model, split.x, split.y, attack, [0.2])
    chunked = attacks.robust_accuracy(model, split.x, split.y, attack, [0.2], chunk=64)
    torch.testing.assert_close(whole[0.2], chunked[0.2])


CLASSIFIERS = ["spiral", "digits_robustness"]  # the experiments that share trainables.robustness


@pytest.mark.parametrize("experiment", CLASSIFIERS)
@pytest.mark.parametrize("field", ["noise_stds", "fgsm_eps", "l2_eps", "bim_eps"])
def test_sizes_that_would_share_a_metric_name_are_refused_by_name(experiment, field):
    config = trainables.load(experiment).Config
    # 0.1 and 0.1000001 are two sizes, but both would report as <prefix>_0.1
    with pytest.raises(ConfigError, match=f"`{field}` must be a list of distinct values.*_0.1 "):
        config.from_mapping({field: [0.1, 0.1000001]})
    with pytest.raises(ConfigError, match=f"`{field}` must be a list of values >= 0"):
        config.from_mapping({field: [0.1, -0.2]})
    assert getattr(config.from_mapping({field: [0.1, 0.1001]}), field) == (0.1, 0.1001)


def test_the_evaluation_reports_what_it_declares_with_robust_accuracy_below_clean():
    model, split = trained_model()
    cfg = robustness.RobustnessConfig(
        replicas=2, noise_stds=(0.0, 0.3), fgsm_eps=(0.1,), l2_eps=(0.0, 0.5), bim_eps=(0.1,),
        l2_steps=3, bim_steps=3,
    )  # fmt: skip
    out = robustness.evaluate(model, {"test": split}, cfg, clip=(0.0, 1.0), chunk=64)
    assert set(out) == set(cfg.robustness_metrics())
    assert all(m.mode == "max" and m.final for m in cfg.robustness_metrics().values())
    with torch.no_grad():
        clean = engine.accuracy(model(split.x), split.y)
    torch.testing.assert_close(out["noise_acc_0"], clean)
    torch.testing.assert_close(out["l2_acc_0"], clean)
    for name in ("fgsm_acc_0.1", "l2_acc_0.5", "bim_acc_0.1"):
        assert (out[name] <= clean).all() and (out[name] < clean).any(), name
    assert (out["bim_acc_0.1"] <= out["fgsm_acc_0.1"] + 0.05).all()


def test_each_replica_draws_its_noise_from_its_own_seed():
    x, y = points(r=2, b=400)
    sizes = {"noise_stds": (0.2, 0.5), "fgsm_eps": (0.1,)}
    pair = robustness.RobustnessConfig(seed=(4, 5), replicas=2, **sizes)
    together = robustness.evaluate(mlp([4, 5]), {"test": Split(x, y)}, pair, chunk=128)
    alone = robustness.evaluate(
        mlp([5]), {"test": Split(x[1:], y[1:])}, robustness.RobustnessConfig(seed=5, **sizes),
        chunk=128,
    )  # fmt: skip
    for name, values in alone.items():
        torch.testing.assert_close(together[name][1:], values, atol=1e-12, rtol=0)


def test_curves_plot_replica_0_against_size_from_the_clean_accuracy():
    cfg = robustness.RobustnessConfig(replicas=2, fgsm_eps=(0.2, 0.1), bim_eps=())
    final = {
        "test_acc": torch.tensor([0.9, 0.5]),
        "fgsm_acc_0.1": torch.tensor([0.7, 0.1]),
        "fgsm_acc_0.2": torch.tensor([0.4, 0.0]),
    }
    plots = robustness.curves(cfg, final, label="σ⁻¹=2", title="t")
    assert list(plots) == ["accuracy_vs_fgsm_eps"]
    (series,) = plots["accuracy_vs_fgsm_eps"]["series"]
    assert series["label"] == "σ⁻¹=2" and series["x"] == [0.0, 0.1, 0.2]
    assert series["y"] == pytest.approx([0.9, 0.7, 0.4])
