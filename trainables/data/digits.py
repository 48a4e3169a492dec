"""Handwritten digits (paper 000 §3.5): scikit-learn's 8×8 digits, or MNIST from its IDX files.

The loaders are the only functions here that read anything, and only what the caller names
(`load_digits` the copy shipped with scikit-learn, `load_mnist` a folder); `digit_splits` is a pure
function of the images and the replicas' generators. Pixels are scaled to [0, 1].
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from trainables.data import Split

DIGITS_IMAGES = 1797
MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class Images:
    """A labelled image set, x [N, d] in [0, 1] and y [N]; `test` is a fixed test set if any."""

    x: Tensor
    y: Tensor
    test: tuple[Tensor, Tensor] | None = None


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
    test = (_images(arrays["test_x"], 255.0), _labels(arrays["test_y"]))
    return Images(_images(arrays["train_x"], 255.0), _labels(arrays["train_y"]), test)


def load_digits() -> Images:
    """scikit-learn's 8×8 digits (1797 images, pixels 0..16), shipped with the package."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    return Images(_images(digits.data, 16.0), _labels(digits.target))


def digit_splits(
    images: Images, generators: Sequence[torch.Generator], test_points: int
) -> dict[str, Split]:
    """Train and test splits [R, N, d], R = len(generators): each replica's own random split of
    the images (`test_points` held out), or, when the images come with a test set (MNIST's
    official split), that split for every replica."""
    r = len(generators)
    if images.test is not None:
        tx, ty = images.test
        return {
            "train": Split(images.x.expand(r, -1, -1), images.y.expand(r, -1)),
            "test": Split(tx.expand(r, -1, -1), ty.expand(r, -1)),
        }
    n = len(images.x)
    perm = torch.stack([torch.randperm(n, generator=g) for g in generators])
    test, train = perm[:, :test_points], perm[:, test_points:]
    return {
        "train": Split(images.x[train], images.y[train]),
        "test": Split(images.x[test], images.y[test]),
    }


def _images(a: np.ndarray, scale: float) -> Tensor:
    return torch.from_numpy(a.reshape(len(a), -1).astype(np.float32) / scale)


def _labels(a: np.ndarray) -> Tensor:
    return torch.from_numpy(a.astype(np.int64))
