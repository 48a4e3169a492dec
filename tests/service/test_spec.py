"""Spec validation: table-driven, every error names the field, the rule and the value."""

from __future__ import annotations

import copy

import pytest

from service.errors import SpecError
from service.spec import Spec, load_spec, shipped_specs

BASE = {
    "name": "t",
    "experiment": "sinusoid",
    "objective": {"metric": "test_mse", "mode": "min"},
    "fixed": {"steps": 10},
    "axes": {"width": [8, 16]},
    "search": {"sigma_inv": {"low": 0.1, "high": 10.0, "log": True}},
    "trials_per_cell": 2,
}


def mutate(path: str, value):
    raw = copy.deepcopy(BASE)
    *parents, leaf = path.split(".")
    node = raw
    for p in parents:
        node = node[p]
    if value is DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return raw


DELETE = object()

BAD = [
    ("experiment", "sinus", r"unknown experiment 'sinus'; known: \[.*'sinusoid'.*\]"),
    ("objective.mode", "minimise", r"`objective.mode`: Input should be 'min' or 'max'"),
    ("objective", DELETE, r"`objective`: Field required"),
    ("search.sigma_inv.low", -1.0, r"`low > 0` must hold when log is true, but got low=-1.0"),
    ("search.sigma_inv.high", 0.01, r"`low < high` must hold, but got low=0.1, high=0.01"),
    ("search.sigma_inv.lo", 1.0, r"`search.sigma_inv.lo`: Extra inputs are not permitted"),
    ("fixed.widht", 3, r"fixed keys \['widht'\] are not fields of sinusoid's Config"),
    ("axes.sigma_inv", [1.0], r"keys \['sigma_inv'\] appear in both `axes` and `search`"),
    ("fixed.width", 3, r"keys \['width'\] appear in both `fixed` and `axes`"),
    ("axes.width", [], r"axis `width` needs at least one value"),
    ("axes.width", ["wide"], r"`width` must be an integer, but got 'wide'"),
    ("fixed.steps", "1e3", r"`steps` must be an integer, but got '1e3'"),
    (
        "trials_per_cell",
        0,
        r"`trials_per_cell`: Input should be greater than or equal to 1 \(got 0\)",
    ),
    ("sampler", "grid", r"`sampler`: Input should be 'tpe', 'cmaes', 'qmc' or 'random'"),
    ("resources", {"cpu": 0}, r"`resources.cpu`: Input should be greater than 0"),
    ("resources", {"gpu": 1.5}, r"`gpu` above 1 must be a whole number, but got 1.5"),
    ("name", "a b", r"`name`: String should match pattern"),
    ("bogus", 1, r"`bogus`: Extra inputs are not permitted"),
]


@pytest.mark.parametrize("path,value,message", BAD, ids=[b[0] for b in BAD])
def test_bad_specs_fail_with_a_one_line_message(path, value, message):
    with pytest.raises(SpecError, match=message) as info:
        load_spec(mutate(path, value))
    assert "\n" not in str(info.value)


def test_good_spec_cells_and_hash():
    spec = load_spec(BASE)
    assert spec.cells() == [{"width": 8}, {"width": 16}]
    assert spec.num_trials == 4
    assert spec.sha256 == load_spec(copy.deepcopy(BASE)).sha256
    assert spec.sha256 != load_spec(mutate("fixed.steps", 11)).sha256


def test_overrides_pin_axes_and_reach_spec_keys():
    spec = load_spec(BASE, overrides=["width=32", "trials_per_cell=5", "lr=1e-2"])
    assert spec.axes == {} and spec.fixed["width"] == 32 and spec.fixed["lr"] == 0.01
    assert spec.trials_per_cell == 5
    with pytest.raises(SpecError, match="`--set` must look like key=value"):
        load_spec(BASE, overrides=["width"])


def test_dotted_overrides_set_one_field_of_a_spec_section():
    spec = load_spec(BASE, overrides=["resources.gpu=0.25", "resources.cpu=2"])
    assert (spec.resources.cpu, spec.resources.gpu) == (2, 0.25)
    assert "resources.gpu" not in spec.fixed
    assert load_spec(BASE, overrides=["objective.mode=max"]).objective.metric == "test_mse"
    with pytest.raises(SpecError, match="`gpu` above 1 must be a whole number"):
        load_spec(BASE, overrides=["resources.gpu=1.5"])
    with pytest.raises(SpecError, match="resources.gpus"):
        load_spec(BASE, overrides=["resources.gpus=1"])


def test_profiles_merge_and_unknown_profile_is_named():
    raw = {**BASE, "profiles": {"smoke": {"fixed": {"steps": 2}, "axes": {"width": [4]}}}}
    spec = load_spec(raw, profile="smoke")
    assert spec.fixed == {"steps": 2} and spec.axes == {"width": [4]}
    with pytest.raises(SpecError, match=r"unknown profile 'paper'; the spec defines \['smoke'\]"):
        load_spec(raw, profile="paper")


def test_yaml_errors_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="bad.yaml: not valid YAML at line"):
        load_spec(bad)
    with pytest.raises(SpecError, match="neither a file nor a shipped spec"):
        load_spec(tmp_path / "missing.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n")
    with pytest.raises(SpecError, match="a spec must be a YAML mapping"):
        load_spec(listy)


def test_yaml_is_never_evaluated(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(evil)


@pytest.mark.parametrize("name", sorted(shipped_specs()))
def test_every_shipped_spec_and_profile_validates(name):
    import yaml

    raw = yaml.safe_load(shipped_specs()[name].read_text())
    assert isinstance(load_spec(name), Spec)
    assert "smoke" in raw["profiles"], "every shipped spec needs a smoke profile"
    for profile in raw["profiles"]:
        assert load_spec(name, profile=profile).num_trials >= 1


def test_overlay_inherits_the_shared_data_and_seed_fields():
    from service.spec import overlay_spec

    spec = load_spec("sinusoid", profile="smoke", overrides=["seed=7", "noise_std=0.1"])
    gp = overlay_spec(spec, "smoke")
    assert gp.experiment == "gp"
    assert gp.fixed["seed"] == 7 and gp.fixed["noise_std"] == 0.1 and gp.fixed["replicas"] == 2
    assert "steps" not in gp.fixed  # not a field of the GP's Config
    assert gp.trials_per_cell == 3  # the gp spec's own smoke profile
    assert overlay_spec(load_spec(BASE)) is None
