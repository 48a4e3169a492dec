"""Handwritten-digit robustness (paper 000 §3.5, eq. 8, Fig. 5; control A.2.2, Fig. 7).

The two-layer tanh net with σ-normalised weights (eq. 7) of the regression experiments, with 10
logits and cross-entropy. Larger σ⁻¹ (smaller weights, a smoother function) should trade clean
accuracy for accuracy under white Gaussian noise and under adversarial perturbations. The control
(Fig. 7) is a plain ReLU net with weight decay: `activation=relu normalise=false weight_decay=...`
(weight decay on σ-normalised weights would do nothing: eq. 7 is invariant to their scale).

Target metric: test_acc (max). One run: `smoothsweep train digits_robustness --set sigma_inv=2.0`.
Robustness metrics (`noise_acc_<std>`, `fgsm_acc_<eps>`, `l2_acc_<eps>`; `bim_acc_<eps>` when
`bim_eps` is set) are computed once, at the final evaluation, on the test set, by the evaluation
`spiral` shares (`trainables.robustness`); replica 0's accuracy-vs-ε curves go into the final report
as artifacts.

Data: scikit-learn's 8×8 digits (1797 images, shipped with the package) by default, with a seeded
train/test split per replica (1437/360); MNIST (official 60,000/10,000 split, every replica the same
data) when `mnist_dir` names a folder with the IDX files. Pixels are scaled to [0, 1]. The loaders
and the split are in `trainables.data.digits`; `run` is the one place that reads files.

What the paper leaves open, and what we chose:
- width: "the same two layer TanH model as above", i.e. the N = 10,000 of §3.4 (the default).
- batch size: not given; mini-batches of 128 (a full batch of MNIST at width 10,000 is ~1 TFLOP a
  step). `batch_size=0` trains full batch. Optimiser and schedule: A.1 (Adam, lr 1e-3, ×0.9 every
  500 steps, 50,000 steps in the `paper` profile).
- input scaling: pixels in [0, 1], no standardisation, so ε is in pixel units and every perturbed
  input is clipped back to [0, 1] (noise included, as in Hendrycks & Dietterich's corruptions).
- the attack: A.1 names the fast gradient sign attack (an L∞ attack), while eq. 8 and Fig. 5 bound
  the L2 norm. We report both: FGSM (`fgsm_acc_*`) and eq. 8 by projected gradient ascent with
  normalised gradients (`l2_acc_*`), `l2_steps` steps of 2.5·ε/steps from δ = 0; `l2_steps=1` is
  the one-step L2 fast gradient method, the closest reading of A.1 in Fig. 5's norm.
- robust accuracy counts a point only if it is classified correctly both clean and attacked
  (foolbox's convention), so it never exceeds clean accuracy; noise accuracy is plain accuracy.
- ε values: the paper's axes are not readable from the text; the defaults suit 8×8 digits (an
  image's L2 norm is ~5 here, ~9 on MNIST).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import torch
from torch import Tensor

from trainables import engine, robustness
from trainables.config import require
from trainables.data import Split
from trainables.data.digits import DIGITS_IMAGES, Images, digit_splits, load_digits, load_mnist
from trainables.nn import NetworkConfig, ReplicaMLP, replica_generators
from trainables.report import Metric, Reporter, declare, no_report
from trainables.robustness import RobustnessConfig

CHUNK = 4096  # points per forward pass at evaluation: bounds memory at width 10,000 on MNIST
PIXELS = (0.0, 1.0)  # the valid input range: every perturbed image is clipped back into it


@dataclass(frozen=True)
class Config(NetworkConfig, engine.TrainingConfig, RobustnessConfig):
    width: int = 10_000
    batch_size: int = 128
    """mini-batch size, drawn with replacement per replica; 0 trains full batch"""
    test_points: int = 360
    """held-out 8×8 digits per replica (the rest train); MNIST uses its own test set"""
    mnist_dir: str | None = None
    """folder with MNIST's IDX files (train-images-idx3-ubyte, ..., or .gz); none = 8×8 digits"""
    noise_stds: tuple[float, ...] = (0.1, 0.2, 0.4)
    """std of the white Gaussian noise for noise_acc_<std> (Fig. 5 right)"""
    fgsm_eps: tuple[float, ...] = (0.05, 0.1, 0.2)
    l2_eps: tuple[float, ...] = (0.5, 1.0, 2.0)
    """L2 sizes c of eq. 8 for l2_acc_<eps> (Fig. 5 left)"""

    objective: ClassVar[str] = "test_acc"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.batch_size >= 0, "batch_size", ">= 0 (0 = full batch)", self.batch_size)
        if self.mnist_dir is None:
            ok = 1 <= self.test_points < DIGITS_IMAGES
            require(ok, "test_points", f"in [1, {DIGITS_IMAGES - 1}]", self.test_points)

    def metrics(self) -> dict[str, Metric]:
        return {
            **declare(minimise=["train_loss", "test_loss"], maximise=["train_acc", "test_acc"]),
            **self.robustness_metrics(),
        }


# --- data -----------------------------------------------------------------------------------------


def load_images(cfg: Config) -> Images:
    """The I/O boundary: MNIST from `mnist_dir`, else scikit-learn's 8×8 digits."""
    return load_digits() if cfg.mnist_dir is None else load_mnist(cfg.mnist_dir)


def make_data(cfg: Config, images: Images) -> dict[str, Split]:
    """Train and test splits [R, N, d]: a seeded split per replica, or MNIST's own (shared)."""
    return digit_splits(images, replica_generators(cfg.seeds, "data"), cfg.test_points)


def make_model(cfg: Config, n_in: int) -> ReplicaMLP:
    return cfg.make_mlp(n_in, 10)


# --- evaluation -----------------------------------------------------------------------------------


@torch.no_grad()
def clean_metrics(model: ReplicaMLP, splits: Mapping[str, Split]) -> dict[str, Tensor]:
    """{split}_acc and {split}_loss per replica, in chunks of CHUNK points."""
    out = {}
    for name, split in splits.items():
        n = len(split)
        correct = loss = 0.0
        for start in range(0, n, CHUNK):
            x, y = split.x[:, start : start + CHUNK], split.y[:, start : start + CHUNK]
            logits = model(x)
            correct = correct + (logits.argmax(dim=-1) == y).double().sum(dim=1)
            loss = loss + engine.cross_entropy(logits, y).double() * x.shape[1]
        out[f"{name}_acc"], out[f"{name}_loss"] = correct / n, loss / n
    return out


def evaluate(model: ReplicaMLP, data: engine.Data) -> engine.Measured:
    return clean_metrics(model, {k: data[k] for k in ("train", "test")})


def plots(
    model: ReplicaMLP, data: engine.Data, final: engine.Measured, replica: int, cfg: Config
) -> dict[str, Any]:
    """One replica's test accuracy against noise std and ε (Fig. 5's curves)."""
    label = robustness.replica_label(cfg, replica)
    title = f"test accuracy ({cfg.activation})"
    return robustness.curves(cfg, final, replica, label=label, title=title)


def make_task(cfg: Config, images: Images | None = None) -> engine.Task:
    images = load_images(cfg) if images is None else images
    data = make_data(cfg, images)
    return engine.Task(
        make_model(cfg, images.x.shape[-1]),
        data,
        engine.cross_entropy,
        evaluate,
        batches=engine.Minibatches(cfg.batch_size) if cfg.batch_size else engine.FullBatch(),
        final_evaluate=partial(robustness.evaluate, cfg=cfg, clip=PIXELS, chunk=CHUNK),
        artifacts=partial(plots, cfg=cfg),
    )


def run(
    config: Mapping[str, Any], report: Reporter = no_report, device: str | None = None
) -> dict[str, Any]:
    cfg = Config.from_mapping(config)
    return engine.run(cfg, make_task(cfg), report, device)
