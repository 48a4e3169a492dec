"""Robustness of a trained classifier to input noise and adversarial perturbations.

One evaluation for every classification experiment (paper 000 §3.5 `digits_robustness`, paper
004 ch. 4.3 `spiral`), so that the two cannot drift apart: a config mixin with the perturbation
sizes and their one validation, the final-evaluation callback, its metric declarations and the
accuracy-vs-size curves. The attacks themselves are in `trainables.attacks`.

Each metric is measured once, at the final evaluation, on the test split, per replica:
- `noise_acc_<std>`: plain accuracy under white Gaussian noise (a random perturbation has no point
  to be robust against); each replica draws its noise from its own seed's "noise" stream, so its
  value does not depend on the replicas beside it;
- `fgsm_acc_<eps>`, `l2_acc_<eps>`, `bim_acc_<eps>`: robust accuracy, a point counting only if it is
  classified correctly both clean and attacked (foolbox's convention), so it never exceeds clean
  accuracy.

A size enters its metric's name formatted with `:g` (six significant digits): two sizes that format
alike would report under one name, so `RobustnessConfig` refuses them by name, before any compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import nn

from trainables import artifacts, attacks, engine
from trainables.config import ExperimentConfig, require
from trainables.nn import NetworkConfig, replica_generators
from trainables.report import Metric, declare


@dataclass(frozen=True)
class Perturbation:
    prefix: str  # its metrics are named f"{prefix}_{size:g}"
    sizes: str  # the config field that lists its sizes
    robust: bool  # count a point only if it is also classified correctly clean
    x_label: str  # of its accuracy-vs-size curve
    curve: str  # the curve's artifact name


PERTURBATIONS = (
    Perturbation("noise_acc", "noise_stds", False, "noise std", "accuracy_vs_noise"),
    Perturbation("fgsm_acc", "fgsm_eps", True, "L∞ ε (FGSM)", "accuracy_vs_fgsm_eps"),
    Perturbation("l2_acc", "l2_eps", True, "L2 ε (eq. 8)", "accuracy_vs_l2_eps"),
    Perturbation("bim_acc", "bim_eps", True, "L∞ ε (BIM)", "accuracy_vs_bim_eps"),
)


def metric_name(prefix: str, size: float) -> str:
    return f"{prefix}_{size:g}"


@dataclass(frozen=True)
class RobustnessConfig(ExperimentConfig):
    """The perturbation sizes of the final evaluation; an empty list measures none of that kind."""

    noise_stds: tuple[float, ...] = ()
    """std of the white Gaussian noise for noise_acc_<std> (final evaluation)"""
    fgsm_eps: tuple[float, ...] = ()
    """L∞ sizes for fgsm_acc_<eps>: one signed gradient step (final evaluation)"""
    l2_eps: tuple[float, ...] = ()
    """L2 sizes c of paper 000 eq. 8 for l2_acc_<eps> (final evaluation)"""
    l2_steps: int = 10
    """projected gradient ascent steps of the L2 attack, 2.5·ε/steps each (1 = one-step L2 FGM)"""
    bim_eps: tuple[float, ...] = ()
    """L∞ sizes for bim_acc_<eps>: iterative FGSM, step 0.5·ε, clipped to the ε-ball"""
    bim_steps: int = 10
    """iterations of BIM"""

    def __post_init__(self) -> None:
        super().__post_init__()
        for p in PERTURBATIONS:
            values = list(getattr(self, p.sizes))
            require(all(v >= 0 for v in values), p.sizes, "a list of values >= 0", values)
            names = [metric_name(p.prefix, v) for v in values]
            repeated = sorted({n for n in names if names.count(n) > 1})
            require(
                not repeated, p.sizes,
                f"a list of distinct values, each naming its own metric ({', '.join(repeated)} "
                "would be reported twice: sizes are named to 6 significant digits)",
                values,
            )  # fmt: skip
        require(self.l2_steps >= 1, "l2_steps", ">= 1", self.l2_steps)
        require(self.bim_steps >= 1, "bim_steps", ">= 1", self.bim_steps)

    def robustness_names(self) -> list[str]:
        return [metric_name(p.prefix, s) for p in PERTURBATIONS for s in getattr(self, p.sizes)]

    def robustness_metrics(self) -> dict[str, Metric]:
        """The declarations of what `evaluate` reports: accuracies, better high, final only."""
        return declare(maximise=self.robustness_names(), final=True)


def evaluate(
    model: nn.Module,
    data: engine.Data,
    cfg: RobustnessConfig,
    *,
    split: str = "test",
    clip: attacks.Clip = None,
    chunk: int | None = None,
) -> engine.Measured:
    """Accuracy on `data[split]` under every configured perturbation, per replica (a Task's
    `final_evaluate` as `partial(evaluate, cfg=cfg)`). `clip` keeps perturbed inputs in the valid
    range (pixels in [0, 1], noise included); `chunk` bounds the points per forward pass."""
    test = data[split]
    attack = {
        "noise_acc": attacks.noise_attack(replica_generators(cfg.seeds, "noise"), clip),
        "fgsm_acc": partial(attacks.fgsm, clip=clip),
        "l2_acc": partial(attacks.l2_attack, steps=cfg.l2_steps, clip=clip),
        "bim_acc": partial(attacks.bim, steps=cfg.bim_steps, clip=clip),
    }
    out = {}
    for p in PERTURBATIONS:
        accs = attacks.robust_accuracy(
            model, test.x, test.y, attack[p.prefix], getattr(cfg, p.sizes),
            require_clean=p.robust, chunk=chunk,
        )  # fmt: skip
        out.update({metric_name(p.prefix, s): acc for s, acc in accs.items()})
    return out


def curves(
    cfg: RobustnessConfig,
    final: engine.Measured,
    replica: int = 0,
    *,
    label: str,
    title: str = "test accuracy",
    clean: str = "test_acc",
) -> dict[str, Any]:
    """One replica's accuracy against perturbation size, its clean accuracy (`final[clean]`) at
    size 0 (paper 000 Fig. 5's curves): one artifact per kind of perturbation configured."""
    out = {}
    for p in PERTURBATIONS:
        sizes = sorted(getattr(cfg, p.sizes))
        if not sizes:
            continue
        ys = [float(final[clean][replica])]
        ys += [float(final[metric_name(p.prefix, s)][replica]) for s in sizes]
        out[p.curve] = artifacts.curves(
            {label: ([0.0, *sizes], ys)}, title=title, x_label=p.x_label, y_label="accuracy"
        )
    return out


def replica_label(cfg: NetworkConfig, replica: int = 0) -> str:
    """What sets a replica's smoothness: σ⁻¹ of a σ-normalised net, else its weight decay (`cfg`
    is an experiment's Config: a NetworkConfig and an `engine.TrainingConfig`)."""
    if cfg.normalise:
        return f"σ⁻¹={cfg.each('sigma_inv')[replica]:.3g}"
    return f"wd={cfg.each('weight_decay')[replica]:.3g}"
