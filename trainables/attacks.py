"""Input perturbations for replica-batched classifiers: FGSM, an L2 attack, BIM and Gaussian noise.

A model maps x [R, B, d] to logits [R, B, C] (the `ReplicaMLP` convention). Every attack takes
(model, x, labels [R, B], eps) and returns the perturbed inputs, of x's shape. The loss an attack
ascends is the *sum* of the per-point cross-entropies, so each point's input gradient is exactly the
gradient it would have alone: points and replicas are attacked independently, in one batch.

Side effects: none. Gradients are taken with `torch.autograd.grad` with respect to the input only,
so the parameters' `.grad` stay as they were, and the model's train/eval mode is never touched.

- `fgsm`: x + ε·sign(∇ₓL), the fast gradient sign method (Goodfellow et al. 2014), an L∞ ball.
- `l2_attack`: paper 000 eq. 8, max L_CE(f(x + δ), y) s.t. ‖δ‖₂ ≤ ε, by projected gradient ascent
  with per-point normalised gradients from δ = 0. With `steps=1` it is the one-step L2 fast gradient
  method (paper 000 A.1 names the fast gradient sign attack; its Fig. 5 bounds the L2 norm).
- `bim`: iterative FGSM (Kurakin et al. 2016), each iterate clipped to the L∞ ε-ball around x.
- `gaussian_noise`: white noise of a given std (paper 000 Fig. 5 right).

`clip=(low, high)` keeps the perturbed inputs in a valid range (pixels in [0, 1]). Clipping to a box
that contains x never moves a point farther from x, so the result stays inside the ε-ball.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

Clip = tuple[float, float] | None
Attack = Callable[[nn.Module, Tensor, Tensor, float], Tensor]  # (model, x, labels, eps) -> x'


def input_gradient(model: nn.Module, x: Tensor, labels: Tensor) -> Tensor:
    """∇ₓ of the summed per-point cross-entropy, [R, B, d]; the parameters get no gradient."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        loss = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum"
        )
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(model: nn.Module, x: Tensor, labels: Tensor, eps: float, clip: Clip = None) -> Tensor:
    """One signed gradient step of size ε: the worst case of a linearised loss in the L∞ ball."""
    _check_eps(eps)
    if eps == 0:
        return x.detach().clone()
    return _clip(x.detach() + eps * input_gradient(model, x, labels).sign(), clip)


def l2_attack(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    clip: Clip = None,
) -> Tensor:
    """Projected gradient ascent on eq. 8 in the L2 ball of radius ε (per point).

    Each step moves δ by `step_size` (default 2.5·ε/steps, Madry et al.'s choice) along the point's
    normalised input gradient, then projects δ back onto the ball and x + δ into the clip range.
    """
    _check_eps(eps)
    if steps < 1:
        raise ValueError(f"`steps` must be >= 1, but got {steps}")
    if eps == 0:
        return x.detach().clone()
    x = x.detach()
    size = 2.5 * eps / steps if step_size is None else step_size
    delta = torch.zeros_like(x)
    for _ in range(steps):
        grad = input_gradient(model, x + delta, labels)
        delta = delta + size * grad / _norm(grad).clamp_min(1e-12)
        delta = delta * (eps / _norm(delta).clamp_min(1e-12)).clamp(max=1.0)
        delta = _clip(x + delta, clip) - x
    return x + delta


def bim(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    clip: Clip = None,
) -> Tensor:
    """Iterative FGSM: `steps` signed steps of `step_size` (default 0.5·ε), kept in the L∞ ball."""
    _check_eps(eps)
    if steps < 1:
        raise ValueError(f"`steps` must be >= 1, but got {steps}")
    if eps == 0:
        return x.detach().clone()
    x = x.detach()
    size = 0.5 * eps if step_size is None else step_size
    adv = x.clone()
    for _ in range(steps):
        adv = adv + size * input_gradient(model, adv, labels).sign()
        adv = _clip(torch.minimum(torch.maximum(adv, x - eps), x + eps), clip)
    return adv


def gaussian_noise(
    x: Tensor,
    std: float,
    generator: torch.Generator | Sequence[torch.Generator],
    clip: Clip = None,
) -> Tensor:
    """x + N(0, std²) white noise. With one generator per replica, replica r's noise is drawn
    from its own stream, so it does not depend on how many replicas share the batch."""
    _check_eps(std, "std")
    if std == 0:
        return x.detach().clone()
    if isinstance(generator, torch.Generator):
        noise = torch.randn(x.shape, generator=generator)
    else:
        if len(generator) != x.shape[0]:
            raise ValueError(
                f"one generator per replica needed: {x.shape[0]}, but got {len(generator)}"
            )
        noise = torch.stack([torch.randn(x.shape[1:], generator=g) for g in generator])
    return _clip(x.detach() + std * noise.to(device=x.device, dtype=x.dtype), clip)


def noise_attack(generators: Sequence[torch.Generator], clip: Clip = None) -> Attack:
    """`gaussian_noise` in the attack signature (model and labels unused; eps is the std)."""
    return lambda model, x, labels, std: gaussian_noise(x, std, generators, clip)


def robust_accuracy(
    model: nn.Module,
    x: Tensor,
    labels: Tensor,
    attack: Attack,
    eps_values: Iterable[float],
    *,
    require_clean: bool = True,
    chunk: int | None = None,
) -> dict[float, Tensor]:
    """{eps: accuracy per replica [R]} under `attack`, over chunks of `chunk` points.

    With `require_clean` a point counts only if the model classifies it correctly both clean and
    perturbed (foolbox's robust accuracy), so robust accuracy never exceeds clean accuracy; without
    it, it is the plain accuracy on the perturbed inputs (right for random noise).
    """
    n = x.shape[1]
    step = n if chunk is None else chunk
    out = {}
    for eps in eps_values:
        correct = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        for start in range(0, n, step):
            xc, yc = x[:, start : start + step], labels[:, start : start + step]
            perturbed = attack(model, xc, yc, eps)
            with torch.no_grad():
                ok = model(perturbed).argmax(dim=-1) == yc
                if require_clean:
                    ok &= model(xc).argmax(dim=-1) == yc
            correct += ok.double().sum(dim=1)
        out[eps] = correct / n
    return out


def _norm(v: Tensor) -> Tensor:
    return torch.linalg.vector_norm(v, dim=-1, keepdim=True)


def _clip(x: Tensor, clip: Clip) -> Tensor:
    return x if clip is None else x.clamp(clip[0], clip[1])


def _check_eps(eps: float, name: str = "eps") -> None:
    if not eps >= 0:
        raise ValueError(f"`{name}` must be >= 0, but got {eps!r}")
