"""smoothsweep service: specs, sweeps on Ray Tune + Optuna, MLflow tracking and analysis.

Modules are imported on demand (`from service import analysis`) so that importing the package
does not pull in Ray or MLflow.
"""

from service.errors import ClusterError, SpecError, SweepError, TrackingError

__all__ = ["ClusterError", "SpecError", "SweepError", "TrackingError"]
