"""Distribution distances and shared histograms: hand-computed values and invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.linalg import block_diag

from trainables import probes


def test_w1_hand_computed_values():
    assert probes.wasserstein_1([0.0, 1.0], [1.0, 2.0]) == pytest.approx(1.0)
    # F_a = 1 on [0, 2), F_b = 1/2 there: ∫ |F_a - F_b| = 2 · 1/2
    assert probes.wasserstein_1([0.0], [0.0, 2.0]) == pytest.approx(1.0)
    assert probes.wasserstein_1([0.0, 0.0, 3.0], [0.0, 3.0, 3.0]) == pytest.approx(1.0)


def test_w1_zero_on_itself_symmetric_and_shift_invariant():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=500), rng.standard_t(3, size=300)
    assert probes.wasserstein_1(a, a) == 0.0
    assert probes.wasserstein_1(rng.permutation(a), a) == 0.0
    assert probes.wasserstein_1(a, b) == pytest.approx(probes.wasserstein_1(b, a))
    assert probes.wasserstein_1(a + 5, b + 5) == pytest.approx(probes.wasserstein_1(a, b))
    assert probes.wasserstein_1(a, a - 0.7) == pytest.approx(0.7)


def test_w1_equal_sizes_is_mean_gap_of_sorted_values():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=400), rng.uniform(-1, 3, size=400)
    expected = np.abs(np.sort(a) - np.sort(b)).mean()
    assert probes.wasserstein_1(a, b) == pytest.approx(expected)


def test_w1_takes_tensors_with_grad_and_rejects_empty():
    a = torch.tensor([[0.0, 1.0]], requires_grad=True)
    assert probes.wasserstein_1(a, torch.tensor([1.0, 2.0])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="non-empty"):
        probes.wasserstein_1([], [1.0])


def test_replica_wasserstein_is_per_replica_and_concatenates_lists():
    a = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    b = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    assert probes.replica_wasserstein(a, b).tolist() == pytest.approx([1.0, 0.0])
    # a list of [R, ...] tensors pools each replica's values: {0, 1, 2, 3} vs {0, 1, 2, 3}
    parts = [torch.tensor([[0.0, 1.0]]), torch.tensor([[[2.0], [3.0]]])]
    assert probes.replica_wasserstein(parts, torch.tensor([[3.0, 2.0, 1.0, 0.0]])).item() == 0.0
    with pytest.raises(ValueError, match="replica counts differ"):
        probes.replica_wasserstein(torch.zeros(2, 3), torch.zeros(3, 3))


def test_shared_histograms_share_edges_and_count_everything():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=1000), rng.normal(3.0, 0.5, size=250)
    edges, (ha, hb) = probes.shared_histograms([a, b], bins=20, density=False)
    assert len(edges) == 21 and edges[0] == a.min() and edges[-1] == max(a.max(), b.max())
    assert ha.sum() == 1000 and hb.sum() == 250
    edges, heights = probes.shared_histograms([a, torch.as_tensor(b)], bins=20)
    for h in heights:  # densities integrate to 1 whatever the sample size
        assert (h * np.diff(edges)).sum() == pytest.approx(1.0)
    edges, (hc,) = probes.shared_histograms([np.ones(5)], bins=4, density=False)
    assert edges[0] < 1 < edges[-1] and hc.sum() == 5


def test_weight_statistics_match_numpy_on_a_known_matrix():
    import numpy as np
    import torch

    from trainables.probes import weight_statistics

    square = np.array([[2.0, 1.0], [0.0, 3.0]])  # eigenvalues 2 and 3
    tall = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]])
    stats = weight_statistics([torch.tensor(square)[None], torch.tensor(tall)[None]])
    sv = np.linalg.svd(square, compute_uv=False)
    assert stats["fro_norm_l0"].item() == pytest.approx(np.linalg.norm(square))
    assert stats["sv_max_l0"].item() == pytest.approx(sv[0])
    assert stats["cond_l0"].item() == pytest.approx(np.linalg.cond(square))
    assert stats["eig_abs_mean_l0"].item() == pytest.approx(2.5)
    assert stats["eig_abs_max_l0"].item() == pytest.approx(3.0)
    assert stats["sv_min_l1"].item() == pytest.approx(np.linalg.svd(tall, compute_uv=False)[-1])
    assert "eig_abs_mean_l1" not in stats  # not square


def rotation(theta: float) -> np.ndarray:
    return np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])


@pytest.mark.parametrize(
    "matrix,moduli",
    [
        (np.array([[2.0, 1.0], [0.0, 3.0]]), [2.0, 3.0]),  # triangular: λ on the diagonal
        (np.diag([-4.0, 0.5, 2.0]), [4.0, 0.5, 2.0]),  # a negative λ counts by its modulus
        (2.0 * rotation(0.7), [2.0, 2.0]),  # λ = 2e^{±0.7i}: complex, both of modulus 2
        (block_diag(rotation(1.2), [[3.0]]), [1.0, 1.0, 3.0]),  # a rotation beside a real λ = 3
        (np.array([[1.0, 10.0], [0.0, 1.0]]), [1.0, 1.0]),  # non-normal: σ spread, |λ| equal
    ],
)
def test_eigenvalue_statistics_of_matrices_with_known_eigenvalues(matrix, moduli):
    """The thesis's spread |λ|_max − |λ|_min (Fig. 4.6) and condition number |λ|_max / |λ|_min
    (App. D), both on eigenvalue moduli."""
    stats = probes.weight_statistics([torch.tensor(matrix)[None]])
    hi, lo = max(moduli), min(moduli)
    assert stats["eig_abs_max_l0"].item() == pytest.approx(hi)
    assert stats["eig_abs_min_l0"].item() == pytest.approx(lo)
    assert stats["eig_abs_mean_l0"].item() == pytest.approx(np.mean(moduli))
    assert stats["eig_spread_l0"].item() == pytest.approx(hi - lo, abs=1e-12)
    assert stats["eig_cond_l0"].item() == pytest.approx(hi / lo)
    # the SVD's condition number is another quantity: they agree only for a normal matrix
    normal = np.allclose(matrix @ matrix.T, matrix.T @ matrix)
    agree = stats["cond_l0"].item() == pytest.approx(hi / lo)
    assert agree == normal


def test_eigenvalue_statistics_are_per_replica_and_only_for_square_layers():
    stacked = torch.tensor(np.stack([np.diag([1.0, -5.0]), 3.0 * rotation(2.0)]))
    stats = probes.weight_statistics([stacked, torch.ones(2, 2, 3)])
    assert stats["eig_spread_l0"].tolist() == pytest.approx([4.0, 0.0], abs=1e-12)
    assert stats["eig_cond_l0"].tolist() == pytest.approx([5.0, 1.0])
    assert stats["eig_abs_min_l0"].tolist() == pytest.approx([1.0, 3.0])
    assert not any(k.endswith("_l1") and k.startswith("eig_") for k in stats)
    names = {k.rsplit("_l", 1)[0] for k in stats}
    assert names == {*probes.MATRIX_STATISTICS, *probes.EIGEN_STATISTICS}
    singular = probes.weight_statistics([torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])])
    assert singular["eig_cond_l0"].item() == float("inf")  # |λ|_min = 0
    assert singular["eig_spread_l0"].item() == pytest.approx(1.0)


def test_zero_gradient_fraction_counts_exact_zeros():
    import torch

    from trainables.nn import ReplicaLinear, replica_generators
    from trainables.probes import zero_gradient_fraction

    layer = ReplicaLinear(2, 2, replica_generators([0, 1], "init"))
    layer.weight.grad = torch.tensor([[[0.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 0.0]]])
    out = zero_gradient_fraction([layer])
    assert out["zero_grad_l0"].tolist() == [0.75, 0.25]
