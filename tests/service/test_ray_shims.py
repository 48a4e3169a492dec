"""Each private Ray API in service/ray_shims.py is still there: a Ray upgrade that drops one fails
here, naming the shim, instead of somewhere inside a sweep."""

from __future__ import annotations

import inspect

import pytest
import ray

from service import ray_shims


def gone(api: str) -> str:
    shim = ray_shims.PRIVATE_APIS[api].__name__
    return (
        f"service.ray_shims.{shim}: Ray {ray.__version__} no longer has {api} (the shim was "
        f"checked on Ray {ray_shims.CHECKED_ON}); its docstring says what it does: find what "
        f"this Ray offers instead"
    )


def test_every_shim_is_listed_with_the_version_it_was_checked_on():
    functions = inspect.getmembers(ray_shims, inspect.isfunction)
    shims = [f for name, f in functions if not name.startswith("_")]
    assert set(shims) == set(ray_shims.PRIVATE_APIS.values())
    for shim in shims:
        assert f"checked on Ray {ray_shims.CHECKED_ON}" in (shim.__doc__ or ""), shim.__name__


def test_resolve_ip_for_localhost_is_there_and_the_shim_keeps_loopback(monkeypatch):
    api = "ray._private.services.resolve_ip_for_localhost"
    import ray._private.services as services

    assert callable(getattr(services, "resolve_ip_for_localhost", None)), gone(api)
    monkeypatch.setattr(services, "resolve_ip_for_localhost", services.resolve_ip_for_localhost)
    ray_shims.keep_localhost_as_given()
    assert services.resolve_ip_for_localhost("127.0.0.1") == "127.0.0.1"
    assert services.canonicalize_bootstrap_address("127.0.0.1:6379") == "127.0.0.1:6379"


def test_ray_init_takes_the_node_ip_address():
    # Ray 2.60 takes its underscored arguments through **kwargs and pops each one by name.
    source = inspect.getsource(inspect.unwrap(ray.init))
    for name in ray_shims.loopback_node():
        assert f'kwargs.pop("{name}"' in source, gone("ray.init(_node_ip_address=...)")


def test_the_gcs_client_is_there():
    import ray._raylet

    assert hasattr(ray._raylet, "GcsClient"), gone("ray._raylet.GcsClient")


def test_a_restored_tuner_takes_fresh_callbacks(tmp_path):
    from ray import tune
    from ray.tune import Callback

    def trainable(config):
        return None

    stale, fresh = Callback(), Callback()
    config = tune.RunConfig(storage_path=str(tmp_path), name="x", callbacks=[stale])
    tune.Tuner(trainable, run_config=config)
    restored = tune.Tuner.restore(str(tmp_path / "x"), trainable=trainable)
    try:
        ray_shims.replace_callbacks(restored, [fresh])
        callbacks = restored._local_tuner._run_config.callbacks
    except AttributeError as exc:
        pytest.fail(f"{gone('Tuner._local_tuner._run_config')} ({exc})")
    assert callbacks == [fresh]
