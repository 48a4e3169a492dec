"""digits_robustness: data, σ-normalised length scale, training, robustness metrics, IDX files."""

from __future__ import annotations

import gzip
import math
import struct

import numpy as np
import pytest
import torch

from trainables import digits_robustness as dr
from trainables.config import ConfigError
from trainables.data import digits

SMALL = {
    "width": 64,
    "steps": 300,
    "eval_every": 100,
    "lr": 1e-2,
    "replicas": 2,
    "batch_size": 0,
    "noise_stds": [0.2],
    "fgsm_eps": [0.05, 0.2],
    "l2_eps": [1.0],
    "l2_steps": 3,
}


def test_digits_split_is_seeded_disjoint_and_independent_of_replicas():
    cfg = dr.Config(seed=3, replicas=2)
    images = dr.load_images(cfg)
    assert images.x.shape == (1797, 64) and images.x.min() == 0 and images.x.max() == 1
    splits = dr.make_data(cfg, images)
    assert splits["train"].x.shape == (2, 1437, 64) and splits["test"].y.shape == (2, 360)
    one = dr.make_data(dr.Config(seed=4, replicas=1), images)
    assert torch.equal(one["test"].x[0], splits["test"].x[1])
    assert not torch.equal(splits["test"].x[0], splits["test"].x[1])
    # Disjoint: no test image appears in the training set of the same replica.
    train, test = splits["train"].x[0], splits["test"].x[0]
    same = (test[:, None, :] == train[None, :, :]).all(-1)
    duplicates = (images.x[:, None, :] == images.x[None, :, :]).all(-1).sum() - len(images.x)
    assert duplicates == 0 and not same.any()


def test_larger_sigma_inv_gives_smaller_effective_weights():
    stds = {}
    for inv in (0.5, 4.0):
        model = dr.make_model(dr.Config(width=100, sigma_inv=inv, replicas=2), 64)
        stds[inv] = [w.std(dim=(1, 2), correction=0) for w in model.effective_weights()]
        for w, n_in in zip(stds[inv], (64, 100)):
            torch.testing.assert_close(w, torch.full((2,), 1 / inv / math.sqrt(n_in)))
    assert all((big < small).all() for big, small in zip(stds[4.0], stds[0.5]))


def test_training_beats_chance_and_robustness_is_reported_once_at_the_end():
    reports = []
    out = dr.run(SMALL, lambda step, m: reports.append((step, m)))
    assert [s for s, _ in reports] == [100, 200, 300]
    assert "fgsm_acc_0.05" not in reports[0][1] and "l2_acc_1" in reports[-1][1]
    assert out["test_acc"] > 0.8  # chance is 0.1
    for r in ("/r0", "/r1"):
        clean = out["test_acc" + r]
        for name in ("fgsm_acc_0.05", "fgsm_acc_0.2", "l2_acc_1", "noise_acc_0.2"):
            assert 0 <= out[name + r] <= clean, (name, r)
        assert out["fgsm_acc_0.2" + r] < out["fgsm_acc_0.05" + r]
    (curve,) = out["artifacts"]["accuracy_vs_fgsm_eps"]["series"]  # replica 0's, by its σ⁻¹
    assert curve["label"] == "σ⁻¹=1" and curve["x"] == [0.0, 0.05, 0.2]
    assert curve["y"] == pytest.approx(
        [out[f"{m}/r0"] for m in ("test_acc", "fgsm_acc_0.05", "fgsm_acc_0.2")]
    )


def test_larger_sigma_inv_trades_clean_accuracy_for_l2_robustness():
    """Paper 000 Fig. 5 at a CI-sized budget: σ⁻¹ = 3 is more robust but less accurate than 0.3."""
    base = {**SMALL, "fgsm_eps": [], "noise_stds": [], "eval_every": 300, "width": 128}
    out = {inv: dr.run({**base, "sigma_inv": inv}) for inv in (0.3, 3.0)}
    assert out[3.0]["test_acc"] < out[0.3]["test_acc"]
    assert out[3.0]["l2_acc_1"] > out[0.3]["l2_acc_1"] + 0.05, out


def test_relu_control_passes_weight_decay_to_the_optimizer():
    """Two replicas of one seed, one with weight decay: only the penalty tells them apart."""
    base = {**SMALL, "activation": "relu", "normalise": False, "steps": 100, "eval_every": 100}
    cfg = {**base, "seed": [0, 0], "weight_decay": [0.0, 0.05], "fgsm_eps": [], "l2_eps": []}
    out = dr.run({**cfg, "noise_stds": [0.2]})
    assert out["test_acc/r0"] > 0.5 and out["test_acc/r1"] > 0.5
    assert out["train_loss/r1"] > out["train_loss/r0"]  # the penalty holds the fit back
    (curve,) = out["artifacts"]["accuracy_vs_noise"]["series"]
    assert curve["label"] == "wd=0"  # replica 0's smoothness, here its weight decay


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"l2_eps": [0.5, -1.0]}, "`l2_eps` must be a list of values >= 0"),
        ({"fgsm_eps": [-0.1]}, "`fgsm_eps` must be a list of values >= 0"),
        ({"noise_stds": [0.1, 0.1]}, "`noise_stds` must be a list of distinct values"),
        ({"bim_eps": [0.1, -0.1]}, "`bim_eps` must be a list of values >= 0"),
        ({"bim_steps": 0}, "`bim_steps` must be >= 1"),
        ({"l2_steps": 0}, "`l2_steps` must be >= 1"),
        ({"weight_decay": -1.0}, "`weight_decay` must be >= 0"),
        ({"batch_size": -2}, "`batch_size` must be >= 0"),
        ({"test_points": 1797}, "`test_points` must be in \\[1, 1796\\]"),
        ({"l2_eps": 0.5}, "`l2_eps` must be a list"),
    ],
)
def test_config_rejects_bad_values(values, message):
    with pytest.raises(ConfigError, match=message):
        dr.Config.from_mapping(values)


def write_idx(path, array: np.ndarray, code: int = 0x08) -> None:
    """IDX by hand: two zero bytes, the type code, the rank, big-endian dims, big-endian data."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    body = array.astype(array.dtype.newbyteorder(">")).tobytes()
    data = header + body
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


@pytest.mark.parametrize(
    ("code", "dtype"), [(0x08, np.uint8), (0x0C, np.int32), (0x0D, np.float32)]
)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, code, dtype, suffix):
    array = (np.arange(2 * 3 * 4) * 7 % 256).reshape(2, 3, 4).astype(dtype)
    path = tmp_path / f"a-idx3-ubyte{suffix}"
    write_idx(path, array, code)
    back = digits.read_idx(path)
    assert back.dtype == dtype and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, array)


def test_idx_rejects_bad_magic_and_truncated_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an IDX file"):
        digits.read_idx(tmp_path / "bad")
    write_idx(tmp_path / "ok", np.zeros((4, 2), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "ok").read_bytes()[:-1])
    with pytest.raises(ValueError, match="19 bytes, but shape \\(4, 2\\) needs 20"):
        digits.read_idx(tmp_path / "short")


def fake_mnist(folder, n_train: int = 60, n_test: int = 20) -> None:
    """MNIST-shaped IDX files with 6×6 images whose lit pixel encodes the label."""
    rng = np.random.default_rng(0)
    for prefix, n, gz in (("train", n_train, ".gz"), ("t10k", n_test, "")):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.zeros((n, 6, 6), np.uint8)
        images[np.arange(n), labels // 6, labels % 6] = 255
        write_idx(folder / f"{prefix}-images-idx3-ubyte{gz}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{gz}", labels)


def test_mnist_from_idx_files_trains_end_to_end(tmp_path):
    fake_mnist(tmp_path)
    cfg = dr.Config(mnist_dir=str(tmp_path), replicas=2)
    images = dr.load_images(cfg)
    assert images.x.shape == (60, 36) and images.x.max() == 1 and images.test[0].shape == (20, 36)
    splits = dr.make_data(cfg, images)
    assert splits["train"].x.shape == (2, 60, 36)
    assert torch.equal(splits["test"].y[0], splits["test"].y[1])
    moved = splits["train"].to("cpu")  # one copy for every replica, wherever it goes
    assert moved.x.stride(0) == 0 and moved.y.stride(0) == 0 and torch.equal(moved.x[1], images.x)
    out = dr.run({**SMALL, "mnist_dir": str(tmp_path), "batch_size": 16, "steps": 200})
    assert out["test_acc"] > 0.9 and "l2_acc_1" in out
    with pytest.raises(FileNotFoundError, match="no t10k-labels-idx1-ubyte"):
        (tmp_path / "t10k-labels-idx1-ubyte").unlink()
        dr.load_images(cfg)
