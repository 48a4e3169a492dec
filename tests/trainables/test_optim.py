"""The replica optimizer is torch's Adam / SGD / Adadelta, with a learning rate per replica; its
Keras-default Adadelta is the same update with Keras 2.0's rho and epsilon."""

from __future__ import annotations

import pytest
import torch

from trainables.optim import ReplicaOptimizer

KINDS = {
    "adam": lambda p, lr, wd, m: torch.optim.Adam(p, lr=lr, weight_decay=wd),
    "sgd": lambda p, lr, wd, m: torch.optim.SGD(p, lr=lr, momentum=m, weight_decay=wd),
    "adadelta": lambda p, lr, wd, m: torch.optim.Adadelta(p, lr=lr, weight_decay=wd),
    # Keras's update is torch's (epsilon inside both square roots), with Keras 2.0's constants
    "adadelta_keras": lambda p, lr, wd, m: torch.optim.Adadelta(
        p, lr=lr, rho=0.95, eps=1e-8, weight_decay=wd
    ),
}


def quadratic_grads(params, step):
    """A loss whose gradients change with the parameters and the step: g = p³ - step·p."""
    return [p.detach() ** 3 - 0.1 * step * p.detach() + 0.05 for p in params]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_replica_takes_torchs_step_with_its_own_lr_and_weight_decay(kind):
    torch.manual_seed(0)
    lrs, wds, momentum = [1e-2, 3e-2, 5e-3], [0.0, 1e-2, 0.1], 0.9 if kind == "sgd" else 0.0
    start = [torch.randn(3, 4, 5), torch.randn(3, 5)]
    ours = [p.clone().requires_grad_() for p in start]
    opt = ReplicaOptimizer(ours, kind=kind, lr=lrs, weight_decay=wds, momentum=momentum,
                           lr_decay=0.5, decay_every=3)  # fmt: skip
    solos = []
    for r in range(3):
        params = [p[r].clone().requires_grad_() for p in start]
        solo = KINDS[kind](params, lrs[r], wds[r], momentum)
        solos.append((params, solo, torch.optim.lr_scheduler.StepLR(solo, 3, 0.5)))
    for step in range(10):
        for p, g in zip(ours, quadratic_grads(ours, step)):
            p.grad = g
        opt.step()
        for params, solo, decay in solos:
            for p, g in zip(params, quadratic_grads(params, step)):
                p.grad = g
            solo.step()
            decay.step()
    for r, (params, _, _) in enumerate(solos):
        for got, want in zip(ours, params):
            torch.testing.assert_close(got[r].detach(), want.detach(), rtol=1e-5, atol=1e-6)


def test_keras_adadelta_first_two_steps_by_hand():
    """Keras 2.0: a ← ρa + (1−ρ)g², Δ = g·√(d + ε)/√(a + ε), d ← ρd + (1−ρ)Δ², θ ← θ − lr·Δ."""
    rho, eps = 0.95, 1e-8
    p = torch.zeros(2, 1, dtype=torch.float64, requires_grad=True)
    opt = ReplicaOptimizer([p], kind="adadelta_keras", lr=[1.0, 0.5], weight_decay=[0, 0])
    g1, g2 = torch.tensor([[2.0], [-1.0]], dtype=torch.float64), 0.5
    p.grad = g1.clone()
    opt.step()
    a = (1 - rho) * g1**2
    delta1 = g1 * eps**0.5 / (a + eps).sqrt()  # d = 0 at the start: the step is ε-sized
    lr = torch.tensor([[1.0], [0.5]], dtype=torch.float64)
    torch.testing.assert_close(p.detach(), -lr * delta1, rtol=1e-12, atol=0)
    # replica 0: Δ₁ = 2·1e-4/√0.20000001 ≈ 4.472e-4, written out
    assert p[0, 0].item() == pytest.approx(-2e-4 / 0.20000001**0.5, rel=1e-12)
    p.grad = torch.full_like(p, g2)
    opt.step()
    d = (1 - rho) * delta1**2
    a = rho * a + (1 - rho) * g2**2
    delta2 = g2 * (d + eps).sqrt() / (a + eps).sqrt()
    torch.testing.assert_close(p.detach(), -lr * (delta1 + delta2), rtol=1e-12, atol=0)
    # torch's own defaults (rho 0.9, eps 1e-6) give a different first step
    q = torch.zeros(2, 1, dtype=torch.float64, requires_grad=True)
    torch_default = ReplicaOptimizer([q], kind="adadelta", lr=[1.0, 0.5], weight_decay=[0, 0])
    q.grad = g1.clone()
    torch_default.step()
    assert q[0, 0].item() == pytest.approx(-2e-3 / (0.1 * 4 + 1e-6) ** 0.5, rel=1e-12)


def test_an_unknown_optimizer_is_refused_with_the_known_names():
    known = "one of adam, sgd, adadelta, adadelta_keras, but got 'rms'"
    with pytest.raises(ValueError, match=known):
        ReplicaOptimizer([torch.zeros(1, 1)], kind="rms", lr=[1.0], weight_decay=[0])


def test_the_lr_decays_by_the_factor_every_period():
    p = torch.zeros(2, 1, requires_grad=True)
    opt = ReplicaOptimizer([p], kind="sgd", lr=[1.0, 2.0], weight_decay=[0, 0], lr_decay=0.5,
                           decay_every=10)  # fmt: skip
    lrs = []
    for _ in range(30):
        lrs.append(opt.current_lr().tolist())
        p.grad = torch.zeros_like(p)
        opt.step()
    assert lrs[9] == [1.0, 2.0] and lrs[10] == [0.5, 1.0] and lrs[20] == [0.25, 0.5]


def test_parameters_without_a_replica_dimension_are_refused():
    refusal = r"\[R, \.\.\.\] with R = 2 replicas, but got shape \(3, 4\)"
    with pytest.raises(ValueError, match=refusal):
        ReplicaOptimizer([torch.zeros(3, 4, requires_grad=True)], kind="adam", lr=[1, 1],
                         weight_decay=[0, 0])  # fmt: skip


def test_adam_over_all_parameters_at_once_is_bit_for_bit_the_one_tensor_update():
    """The foreach Adam does the single-tensor arithmetic, in its order: not merely close to it
    (a pack's numbers must not depend on how its optimizer batches its calls)."""
    torch.manual_seed(1)
    lrs = [1e-2, 3e-2]
    start = [torch.randn(2, 1, 7), torch.randn(2, 7), torch.randn(2, 7, 1)]
    ours = [p.clone().requires_grad_() for p in start]
    opt = ReplicaOptimizer(ours, kind="adam", lr=lrs, weight_decay=[0.0, 0.0])
    ref = [p.clone() for p in start]
    m, v = [torch.zeros_like(p) for p in ref], [torch.zeros_like(p) for p in ref]
    lr = torch.tensor(lrs, dtype=torch.float64)
    for t in range(1, 8):
        for p, g in zip(ours, quadratic_grads(ours, t)):
            p.grad = g
        opt.step()
        for i, g in enumerate(quadratic_grads(ref, t)):
            m[i].lerp_(g, 0.1)
            v[i].mul_(0.999).addcmul_(g, g, value=0.001)
            update = m[i] / (1 - 0.9**t) / (v[i].sqrt() / (1 - 0.999**t) ** 0.5 + 1e-8)
            ref[i] = ref[i] - lr.view((-1,) + (1,) * (ref[i].dim() - 1)).float() * update
        assert all(torch.equal(a.detach(), b) for a, b in zip(ours, ref)), f"step {t}"
