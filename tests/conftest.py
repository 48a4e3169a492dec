"""Shared fixtures. Integration tests (real Ray, real MLflow) are marked `integration`."""

from __future__ import annotations

import os

# Keep torch from oversubscribing 2-core CI machines when tests and Ray workers run side by side.
os.environ.setdefault("OMP_NUM_THREADS", "1")
