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


def tracking_error(exc: BaseException, uri: str, what: str = "answer") -> TrackingError:
    """A one-line TrackingError for an MLflow failure: unreachable server, or what it says."""
    cause = connection_cause(exc)
    if cause is not None:
        return TrackingError(
            f"cannot reach the MLflow tracking server at {uri} ({type(cause).__name__}); "
            f"check the URI and that the server is running"
        )
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return TrackingError(f"the MLflow tracking store at {uri} failed to {what}: {lines[0][:300]}")


def connection_cause(exc: BaseException) -> BaseException | None:
    """The network error inside an MlflowException, if that is what it wraps.

    MLflow's REST client reports refused connections and exhausted retries as a generic
    MlflowException; the underlying `requests` error (an OSError) is only in the chain.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    if "API request to" in str(exc) and "failed with exception" in str(exc):
        return exc
    return None
