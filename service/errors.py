"""The one exception family of the service.

The CLI turns a `SweepError` into a single line on stderr: exit 2 for usage errors (`SpecError`),
exit 1 for runtime errors (everything else). Anything that is not a `SweepError` is a bug and keeps
its traceback.
"""

from __future__ import annotations


class SweepError(Exception):
    """Base class: a user-facing error whose message is one line that says what to fix."""

    exit_code = 1


class SpecError(SweepError):
    """A malformed spec, an unknown experiment or config key, a bad `--set` override."""

    exit_code = 2


class TrackingError(SweepError):
    """The MLflow tracking store is unreachable or does not hold what was asked for."""


class ClusterError(SweepError):
    """Ray could not be started or reached, or a sweep's Ray state is missing."""
