"""On a CUDA machine: trials share one card as the spec asks, and each keeps to its share.

Skipped where torch sees no CUDA device (CI has none; the CPU side of this is covered by
tests/service/test_sweep.py's trial_device and reporter tests). On a GPU node:
`pytest tests/integration/test_gpu.py tests/trainables/test_devices.py`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from service import conventions as cv
from tests.integration.helpers import Workspace, child_runs

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SHARE = 0.25
TRIALS = 4
SMALL = {"steps": 200, "eval_every": 50, "width": 256, "replicas": 4,
         "train_points": 20, "test_points": 200, "ood_points": 200}  # fmt: skip


def _probe(config: dict) -> None:
    """The real trial function, then a look at what it held and what it may still take."""
    from ray import tune

    from service.trial import run_trial

    run_trial({**SMALL, "seed": config["seed"]}, "sinusoid", "test_mse", "min")
    peak = torch.cuda.max_memory_allocated()

    # Wait until every trial has trained: then all of them hold their share of the card at once.
    barrier = Path(config["barrier"])
    (barrier / str(config["seed"])).touch()
    deadline = time.monotonic() + 120
    while len(list(barrier.iterdir())) < TRIALS and time.monotonic() < deadline:
        time.sleep(0.2)
    together = len(list(barrier.iterdir())) == TRIALS

    total = torch.cuda.get_device_properties(0).total_memory

    def fits(share: float) -> bool:
        try:
            block = torch.empty(int(share * total), dtype=torch.uint8, device="cuda")
        except torch.OutOfMemoryError:
            return False
        del block
        torch.cuda.empty_cache()
        return True

    tune.report(
        {
            "peak_bytes": float(peak),
            "together": together,
            "fits_below_share": fits(SHARE - 0.05),
            "fits_above_share": fits(SHARE + 0.05),
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        }
    )


def test_quarter_gpu_trials_share_one_card_and_each_keeps_to_its_quarter(workspace: Workspace):
    import ray
    from ray import tune

    tmp_path = workspace.path
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    ray.init(num_cpus=TRIALS, num_gpus=1, include_dashboard=False, _temp_dir=str(workspace.ray_tmp))
    try:
        tuner = tune.Tuner(
            tune.with_resources(_probe, {"cpu": 1, "gpu": SHARE}),
            param_space={"seed": tune.grid_search(list(range(TRIALS))), "barrier": str(barrier)},
            tune_config=tune.TuneConfig(max_concurrent_trials=TRIALS),
            run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), name="gpu", verbose=0),
        )
        results = tuner.fit()
    finally:
        ray.shutdown()

    assert not results.errors
    final = [r.metrics for r in results]
    assert len(final) == TRIALS
    for m in final:
        assert m["peak_bytes"] > 0  # the replicas trained on the GPU
        assert m["visible"] == "0"  # all four on the same card
        assert m["together"]  # four quarter-card trials held it at the same time
        assert m["fits_below_share"]  # a trial may use its quarter ...
        # ... and not more, though most of the card is free: the cap, not a full card, refuses it
        assert not m["fits_above_share"]


def test_a_gpu_sweep_from_the_cli_lands_in_mlflow_with_each_trials_gpu_memory(workspace: Workspace):
    ws = workspace
    proc = ws.cli("run", "sinusoid", "--profile", "smoke", "--name", "gpu",
                  "--set", f"resources.gpu={SHARE}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = child_runs(ws.tracking_uri, "gpu")
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags[cv.TRIAL_ID] for r in runs}) == len(runs)
    assert all(r.data.metrics["gpu_memory_peak_mib"] > 0 for r in runs)
