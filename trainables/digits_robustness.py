"""Handwritten-digit robustness (paper 000 §3.5, eq. 8, Fig. 5; control A.2.2, Fig. 7).

The two-layer tanh net with σ-normalised weights (eq. 7) of the regression experiments, with 10
logits and cross-entropy. Larger σ⁻¹ (smaller weights, a smoother function) should trade clean
accuracy for accuracy under white Gaussian noise and under adversarial perturbations. The control
(Fig. 7) is a plain ReLU net with weight decay: `activation=relu normalise=false weight_decay=...`
(weight decay on σ-normalised weights would do nothing: eq. 7 is invariant to their scale).

Target metric: test_acc (max). One run: `smoothsweep train digits_robustness --set sigma_inv=2.0`.
Robustness metrics (`noise_acc_<std>`, `fgsm_acc_<eps>`, `l2_acc_<eps>`) are computed once, at the
final evaluation, on the test set; accuracy-vs-ε curves go into the final report as artifacts.

Data: scikit-learn's 8×8 digits (1797 images, shipped with the package) by default, with a seeded
train/test split per replica (1437/360); MNIST (official 60,000/10,000 split, every replica the same
data) when `mnist_dir` names a folder with the IDX files. Pixels are scaled to [0, 1].

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

import gzip
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from trainables import artifacts, attacks, engine
from trainables.config import require
from trainables.data import Split
from trainables.nn import NetworkConfig, ReplicaMLP, replica_generators

DIGITS_IMAGES = 1797
CHUNK = 4096  # points per forward pass at evaluation: bounds memory at width 10,000 on MNIST
MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class Config(NetworkConfig, engine.TrainingConfig):
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
    """L∞ sizes for fgsm_acc_<eps>"""
    l2_eps: tuple[float, ...] = (0.5, 1.0, 2.0)
    """L2 sizes c of eq. 8 for l2_acc_<eps> (Fig. 5 left)"""
    l2_steps: int = 10
    """projected gradient steps of the L2 attack (1 = the one-step fast gradient method)"""

    objective: ClassVar[str] = "test_acc"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.batch_size >= 0, "batch_size", ">= 0 (0 = full batch)", self.batch_size)
        if self.mnist_dir is None:
            ok = 1 <= self.test_points < DIGITS_IMAGES
            require(ok, "test_points", f"in [1, {DIGITS_IMAGES - 1}]", self.test_points)
        require(self.l2_steps >= 1, "l2_steps", ">= 1", self.l2_steps)
        for name in ("noise_stds", "fgsm_eps", "l2_eps"):
            values = getattr(self, name)
            require(all(v >= 0 for v in values), name, "a list of values >= 0", values)
            names = [f"{v:g}" for v in values]
            require(len(set(names)) == len(names), name, "a list of distinct values", values)


@dataclass(frozen=True)
class Images:
    """A labelled image set, x [N, d] in [0, 1] and y [N]; `test` is a fixed test set if any."""

    x: Tensor
    y: Tensor
    test: tuple[Tensor, Tensor] | None = None

    def to(self, device: torch.device | str) -> Images:
        test = None if self.test is None else (self.test[0].to(device), self.test[1].to(device))
        return Images(self.x.to(device), self.y.to(device), test)


# --- data -----------------------------------------------------------------------------------------


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (MNIST's format; gzip when the name ends in .gz) as a numpy array."""
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = 4 + 4 * ndim + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path}: {len(raw)} bytes, but shape {shape} needs {expected}")
    values = np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def load_mnist(folder: str | Path) -> Images:
    """MNIST from its four IDX files (plain or .gz); images flattened and scaled to [0, 1]."""
    arrays = {}
    for key, name in MNIST_FILES.items():
        candidates = [Path(folder) / name, Path(folder) / f"{name}.gz"]
        found = [p for p in candidates if p.is_file()]
        if not found:
            raise FileNotFoundError(f"`mnist_dir`: {folder} has no {name} (or {name}.gz)")
        arrays[key] = read_idx(found[0])

    def images(a: np.ndarray) -> Tensor:
        return torch.from_numpy(a.reshape(len(a), -1).astype(np.float32) / 255.0)

    def labels(a: np.ndarray) -> Tensor:
        return torch.from_numpy(a.astype(np.int64))

    test = (images(arrays["test_x"]), labels(arrays["test_y"]))
    return Images(images(arrays["train_x"]), labels(arrays["train_y"]), test)


def load_images(cfg: Config) -> Images:
    """The I/O boundary: scikit-learn's digits (pixels 0..16 → [0, 1]) or MNIST from `mnist_dir`."""
    if cfg.mnist_dir is not None:
        return load_mnist(cfg.mnist_dir)
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.data.astype(np.float32) / 16.0)
    return Images(x, torch.from_numpy(digits.target.astype(np.int64)))


def make_data(cfg: Config, images: Images) -> dict[str, Split]:
    """Train and test splits [R, N, d]: a seeded split per replica, or MNIST's own (shared)."""
    r = cfg.replicas
    if images.test is not None:  # one data set for every replica: a view, no copies
        tx, ty = images.test
        return {
            "train": Split(images.x.expand(r, -1, -1), images.y.expand(r, -1)),
            "test": Split(tx.expand(r, -1, -1), ty.expand(r, -1)),
        }
    n = len(images.x)
    gens = replica_generators(cfg.seeds, "data")
    perm = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(images.x.device)
    test, train = perm[:, : cfg.test_points], perm[:, cfg.test_points :]
    return {
        "train": Split(images.x[train], images.y[train]),
        "test": Split(images.x[test], images.y[test]),
    }


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


def robustness(model: ReplicaMLP, test: Split, cfg: Config) -> dict[str, Tensor]:
    """Test accuracy under noise, FGSM and the L2 attack at every configured size."""
    clip = (0.0, 1.0)
    noise = attacks.noise_attack(replica_generators(cfg.seeds, "noise"), clip)
    fgsm = partial(attacks.fgsm, clip=clip)
    l2 = partial(attacks.l2_attack, steps=cfg.l2_steps, clip=clip)
    out = {}
    for prefix, attack, sizes, clean in (
        ("noise_acc", noise, cfg.noise_stds, False),
        ("fgsm_acc", fgsm, cfg.fgsm_eps, True),
        ("l2_acc", l2, cfg.l2_eps, True),
    ):
        accs = attacks.robust_accuracy(
            model, test.x, test.y, attack, sizes, require_clean=clean, chunk=CHUNK
        )
        out.update({f"{prefix}_{eps:g}": acc for eps, acc in accs.items()})
    return out


def robustness_curves(cfg: Config, metrics: Mapping[str, Tensor]) -> dict[str, Any]:
    """Mean accuracy against perturbation size, the clean accuracy at size 0 (Fig. 5's curves)."""
    clean = float(metrics["test_acc"].mean())
    out = {}
    for prefix, sizes, x_label, name in (
        ("noise_acc", cfg.noise_stds, "noise std", "accuracy_vs_noise"),
        ("fgsm_acc", cfg.fgsm_eps, "L∞ ε (FGSM)", "accuracy_vs_fgsm_eps"),
        ("l2_acc", cfg.l2_eps, "L2 ε (eq. 8)", "accuracy_vs_l2_eps"),
    ):
        if not sizes:
            continue
        xs = [0.0, *sizes]
        ys = [clean, *(float(metrics[f"{prefix}_{s:g}"].mean()) for s in sizes)]
        label = f"σ⁻¹={cfg.sigma_inv:.3g}" if cfg.normalise else f"wd={cfg.weight_decay:.3g}"
        out[name] = artifacts.curves(
            {label: (xs, ys)}, title=f"test accuracy ({cfg.activation})", x_label=x_label,
            y_label="accuracy",
        )  # fmt: skip
    return out


@dataclass
class Robustness:
    """The engine's final evaluation: robustness metrics, kept for the accuracy-vs-ε artifacts."""

    cfg: Config
    test: Split
    final: dict[str, Tensor] = field(default_factory=dict)

    def __call__(self, model: ReplicaMLP) -> dict[str, Tensor]:
        self.final = {
            **clean_metrics(model, {"test": self.test}),
            **robustness(model, self.test, self.cfg),
        }
        return self.final

    def curves(self, model: ReplicaMLP) -> dict[str, Any]:
        return robustness_curves(self.cfg, self.final) if self.final else {}


def run(
    config: Mapping[str, Any], report: engine.Reporter = engine.no_report, device: str | None = None
) -> dict[str, Any]:
    cfg = Config.from_mapping(config)
    dev = engine.pick_device(device)
    splits = make_data(cfg, load_images(cfg).to(dev))
    train = splits["train"]
    source = (
        engine.minibatches(train, cfg.batch_size, cfg.seeds)
        if cfg.batch_size
        else engine.full_batch(train)
    )
    final = Robustness(cfg, splits["test"])
    outcome = engine.train(
        make_model(cfg, train.x.shape[-1]).to(dev),
        source,
        engine.cross_entropy,
        partial(clean_metrics, splits=splits),
        cfg.schedule,
        report,
        final_evaluate=final,
        artifacts=final.curves,
    )
    return outcome.metrics
