"""Attacks: ε-balls and clip ranges hold, known values on a linear model, no side effects."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from trainables import attacks, engine
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
    schedule = engine.Schedule(steps=150, lr=2e-2, eval_every=150)
    engine.train(model, engine.full_batch(split), engine.cross_entropy, lambda m: {}, schedule)
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
