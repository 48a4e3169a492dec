"""Malformed specs, fuzzed: every one ends in one line naming the field, exit 2, nothing written.

The shipped specs are mutated by hypothesis into specs that are invalid by construction: a required
key deleted, an unknown key added, a value of the wrong type (string, list, mapping, null, bool,
NaN, ±inf, an integer beyond 64 bits, a negative count), an empty or inverted search range, an
unknown experiment or config field, an objective the experiment does not report (or on the wrong
side, or final-only under ASHA), an empty axis, a top level that is not a mapping, YAML text that
does not parse, and YAML tags a safe loader must refuse. Each goes through the real CLI
(`smoothsweep run SPEC`) in this process, and must come back as exit 2 with exactly one line on
stderr that names the mutated field (or, for text that is not a spec at all, the file), with no
traceback, no MLflow store, no sweep directory and no Ray.

A mutation is never allowed to be valid by accident: `run_sweep` is replaced by a tripwire, so a
spec that got through validation fails the test with the mutation's label instead of starting a
sweep.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import types
import typing
from collections import Counter
from pathlib import Path
from typing import Any, Literal
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import trainables
from service import cli
from service.errors import SpecError
from service.spec import Asha, Objective, Resources, SearchParam, Spec, load_spec, shipped_specs
from trainables.config import is_per_replica
from trainables.report import Metric

SHIPPED = {name: path for name, path in sorted(shipped_specs().items())}
BASES = {name: yaml.safe_load(path.read_text()) for name, path in SHIPPED.items()}
TEXTS = {name: path.read_text() for name, path in SHIPPED.items()}
MARKER = "{marker}"  # replaced by a path in the example's directory that must never be created
ROOT = Path(__file__).resolve().parents[2]


def config_hints(experiment: str) -> dict[str, Any]:
    config = trainables.load(experiment).Config
    hints = typing.get_type_hints(config)
    return {f.name: hints[f.name] for f in dataclasses.fields(config)}


ALL_CONFIG_FIELDS = sorted({f for e in trainables.REGISTRY for f in config_hints(e)})


def keys(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


SPEC_KEYS = keys(Spec)
MODEL_KEYS = {
    "objective": keys(Objective),
    "resources": keys(Resources),
    "asha": keys(Asha),
    "search_param": keys(SearchParam),
}
# Config fields whose meaning rules out a negative value (a count, a size, a rate, a scale, a noise
# level, a seed: NumPy refuses negative seeds); each Config's __post_init__ must enforce it.
NON_NEGATIVE = {
    "seed",
    "replicas", "steps", "eval_every", "decay_every", "epochs", "width", "depth", "batch_size",
    "train_points", "test_points", "ood_points", "train_eval_points", "grid_size", "l2_steps",
    "bim_steps", "lr", "sigma_inv", "length_scale", "weight_decay", "noise_std", "jitter",
    "tooth_tol", "distance", "momentum", "codimension", "lr_decay", "noise_stds", "fgsm_eps",
    "l2_eps", "bim_eps",
}  # fmt: skip
KNOWN_GAPS: set[tuple[str, str]] = set()  # Config fields whose bad values only fail in a trial


def known_gap(experiment: str, field: str) -> bool:
    return (experiment, field) in KNOWN_GAPS or ("*", field) in KNOWN_GAPS


NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
INT64 = 2**63


# --- values that are wrong for a slot, whatever the loader's coercions ------------------------


def _is_number_text(text: str) -> bool:
    """A float field reads '3', ' 1e-3 ', '1_0', 'inf', 'nan' as numbers (YAML 1.1 leaves 1e-3 a
    string)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


TEXT = st.text(max_size=12).filter(lambda s: not _is_number_text(s))
WORDS = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
HUGE = st.integers(min_value=INT64, max_value=10**400) | st.integers(-(10**400), -INT64)
FRACTIONS = st.floats(-1e6, 1e6).filter(lambda x: not x.is_integer())
LISTS = st.lists(st.integers(-3, 3) | WORDS, max_size=3)
WORD_LISTS = st.lists(TEXT, min_size=1, max_size=3)
DICTS = st.dictionaries(WORDS, st.integers(-3, 3), max_size=2)
NUMBERS = st.integers(-(10**6), 10**6) | st.floats(-1e6, 1e6)
ANY_SCALAR = NUMBERS | st.booleans() | st.none()


def not_a_string(optional: bool = False) -> st.SearchStrategy[Any]:
    pool = [NUMBERS, HUGE, NON_FINITE, st.booleans(), LISTS, DICTS]
    return st.one_of(*pool, *([] if optional else [st.none()]))


def not_a_mapping(optional: bool = False) -> st.SearchStrategy[Any]:
    pool = [st.text(max_size=12), NUMBERS, HUGE, NON_FINITE, st.booleans(), LISTS]
    return st.one_of(*pool, *([] if optional else [st.none()]))


def not_a_list() -> st.SearchStrategy[Any]:
    return st.one_of(st.text(max_size=12), NUMBERS, NON_FINITE, st.booleans(), st.none(), DICTS)


def not_a_choice(choices: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    text = st.text(max_size=12).filter(lambda s: s not in choices)
    return st.one_of(text, NUMBERS, NON_FINITE, st.booleans(), st.none(), LISTS, DICTS)


def not_a_number(*, optional: bool = False, integer: bool = False, at_most: float | None = None):
    """Wrong for a spec-level number: text, containers, null, bool, non-finite, huge, too small."""
    pool = [TEXT, LISTS, DICTS, st.booleans(), NON_FINITE, HUGE]
    if not optional:
        pool.append(st.none())
    if integer:
        pool.append(FRACTIONS)
    if at_most is not None:  # below the field's minimum
        pool.append(st.integers(-(10**6), int(at_most)) if integer else st.floats(-1e6, at_most))
    return st.one_of(*pool)


def not_a_bool() -> st.SearchStrategy[Any]:
    """Only true and false are bools: not 0 and 1, nor 'yes' and 'no' (YAML 1.1's bools as text)."""
    text = st.sampled_from(["yes", "no", "on", "off", "true", "True", "y", "1"]) | TEXT
    return st.one_of(text, NUMBERS, NON_FINITE, st.none(), LISTS, DICTS)


def wrong_for_config(hint: Any) -> st.SearchStrategy[Any]:
    """A value no config field of type `hint` accepts (checked by the type's kind, not the code)."""
    if is_per_replica(hint):  # a wrong value, or a list of them: never one per replica
        item = typing.get_args(hint)[0]
        scalar = wrong_for_config(item).filter(lambda v: not isinstance(v, list))
        return scalar | st.lists(wrong_for_config(item), max_size=3)
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    base = next(a for a in args if a is not type(None)) if optional else hint
    pool = [DICTS, NON_FINITE, HUGE]
    if not optional:
        pool.append(st.none())
    if base is int:
        pool += [TEXT, st.booleans(), FRACTIONS, LISTS]
    elif base is float:
        pool += [TEXT, st.booleans(), LISTS]
    elif base is bool:
        pool += [st.text(max_size=12), NUMBERS, LISTS]
    elif base is str:
        pool += [NUMBERS, st.booleans(), LISTS]
    elif typing.get_origin(base) is Literal:
        pool += [st.text(max_size=12).filter(lambda s: s not in typing.get_args(base))]
        pool += [NUMBERS, st.booleans(), LISTS]
    elif typing.get_origin(base) is tuple:
        pool += [TEXT, NUMBERS, st.booleans(), WORD_LISTS]
    else:  # pragma: no cover - a new config type: teach this function about it
        raise AssertionError(f"unknown config type {hint!r}")
    return st.one_of(*pool)


def negative_for_config(hint: Any) -> st.SearchStrategy[Any]:
    if is_per_replica(hint):  # one negative value for every replica
        hint = typing.get_args(hint)[0]
    if typing.get_origin(hint) is tuple:
        return st.lists(st.floats(-1e6, -1e-6), min_size=1, max_size=3)
    if hint is int:
        return st.integers(-(10**6), -1)
    return st.floats(-1e6, -1e-6)


# --- the cases ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Case:
    kind: str
    label: str
    spec: Any  # a mapping or other YAML value (dumped), or str / bytes (written as they are)
    names: tuple[str, ...]  # every one must appear in the error line
    profile: str | None = None
    files: dict[str, str] = dataclasses.field(default_factory=dict)  # more files beside the spec


def at(raw: dict, path: tuple) -> Any:
    node = raw
    for key in path:
        node = node[key]
    return node


def put(raw: dict, path: tuple, value: Any) -> dict:
    at(raw, path[:-1])[path[-1]] = value
    return raw


def typo(word: str, draw) -> str:
    i = draw(st.integers(0, len(word) - 1))
    how = draw(st.sampled_from(["drop", "double", "swap", "case"]))
    if how == "drop":
        return word[:i] + word[i + 1 :]
    if how == "double":
        return word[:i] + word[i] + word[i:]
    if how == "swap" and i + 1 < len(word):
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word[:i] + word[i].swapcase() + word[i + 1 :]


def unknown_key(draw, known: set[str], near: list[str]) -> str:
    """A key that is not in `known`: a typo of a real one, another experiment's field, or noise."""
    strategies = [
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,15}", fullmatch=True),
        st.text(st.characters(categories=["Lu", "Ll", "Lo"]), min_size=1, max_size=8),
        st.sampled_from(ALL_CONFIG_FIELDS),
    ]
    key = draw(st.one_of(*strategies))
    if draw(st.booleans()):
        key = typo(draw(st.sampled_from(near)), draw)
    assume(key not in known)
    return key


def free_config_fields(raw: dict, hints: dict[str, Any]) -> list[str]:
    taken = set(raw.get("axes") or {}) | set(raw.get("search") or {})
    for profile in (raw.get("profiles") or {}).values():
        taken |= set(profile.get("axes") or {}) | set(profile.get("search") or {})
    return [f for f in hints if f not in taken]


@st.composite
def delete_required(draw, name: str, raw: dict) -> Case:
    paths = [("name",), ("experiment",), ("objective",), ("objective", "metric")]
    paths += [("search", p, bound) for p in raw.get("search", {}) for bound in ("low", "high")]
    path = draw(st.sampled_from(paths))
    del at(raw, path[:-1])[path[-1]]
    return Case("delete_required", f"del {'.'.join(path)}", raw, tuple(path[-2:]))


@st.composite
def add_unknown_key(draw, name: str, raw: dict) -> Case:
    hints = config_hints(raw["experiment"])
    places = ["top", "fixed", "axes", "search", "objective", "resources", "asha"]
    where = draw(st.sampled_from(places + (["search_param"] if raw.get("search") else [])))
    if where == "top":
        key = unknown_key(draw, SPEC_KEYS, sorted(SPEC_KEYS))
        raw[key] = draw(ANY_SCALAR)
        return Case("unknown_key", f"+{key!r}", raw, (key,))
    if where in ("fixed", "axes", "search"):
        key = unknown_key(draw, set(hints), sorted(hints))
        value = {"fixed": draw(ANY_SCALAR), "axes": [1], "search": {"low": 0.5, "high": 2.0}}
        raw.setdefault(where, {})[key] = value[where]
        return Case("unknown_config_field", f"+{where}.{key!r}", raw, (key,))
    if where == "search_param":
        param = draw(st.sampled_from(sorted(raw["search"])))
        key = unknown_key(draw, MODEL_KEYS[where], sorted(MODEL_KEYS[where]))
        raw["search"][param][key] = draw(ANY_SCALAR)
        return Case("unknown_key", f"+search.{param}.{key!r}", raw, (param, key))
    key = unknown_key(draw, MODEL_KEYS[where], sorted(MODEL_KEYS[where]))
    if not isinstance(raw.get(where), dict):
        raw[where] = {}
    raw[where][key] = draw(ANY_SCALAR)
    return Case("unknown_key", f"+{where}.{key!r}", raw, (where, key))


# spec-level slots: path -> strategy of wrong values
def spec_slots(raw: dict) -> dict[tuple, st.SearchStrategy[Any]]:
    slots: dict[tuple, st.SearchStrategy[Any]] = {
        ("name",): not_a_string()
        | st.text(max_size=12).filter(lambda s: not re.fullmatch(NAME_PATTERN, s)),
        ("experiment",): not_a_string(),
        ("description",): not_a_string(),
        ("objective",): not_a_mapping(),
        ("objective", "metric"): not_a_string(),
        ("objective", "mode"): not_a_choice(("min", "max")).filter(lambda v: v is not None),
        ("fixed",): not_a_mapping(),
        ("axes",): not_a_mapping(),
        ("search",): not_a_mapping(),
        ("trials_per_cell",): not_a_number(integer=True, at_most=0),
        ("max_concurrent",): not_a_number(integer=True, at_most=0),
        ("sampler",): not_a_choice(("tpe", "cmaes", "qmc", "random")),
        ("sampler_seed",): not_a_number(integer=True, at_most=-1),
        ("asha",): not_a_mapping(optional=True),
        ("asha", "grace_period"): not_a_number(integer=True, at_most=0),
        ("asha", "reduction_factor"): not_a_number(at_most=1.0),
        ("asha", "max_t"): not_a_number(integer=True, at_most=0, optional=True),
        ("resources",): not_a_mapping(),
        ("resources", "cpu"): not_a_number(at_most=0.0),
        ("resources", "gpu"): not_a_number(at_most=-1e-9),
        ("max_failures",): not_a_number(integer=True, at_most=-1),
        ("overlay",): not_a_string(optional=True),
        ("profiles",): not_a_mapping(),
    }
    for param in raw.get("search", {}):
        slots[("search", param)] = not_a_mapping()
        slots[("search", param, "low")] = not_a_number()
        slots[("search", param, "high")] = not_a_number()
        slots[("search", param, "log")] = not_a_bool()
        slots[("search", param, "type")] = not_a_choice(("float", "int", "categorical"))
    for axis in raw.get("axes", {}):
        slots[("axes", axis)] = not_a_list()
    return slots


@st.composite
def wrong_type_spec(draw, name: str, raw: dict) -> Case:
    slots = spec_slots(raw)
    path = draw(st.sampled_from(sorted(slots, key=str)))
    value = draw(slots[path])
    if (
        path[0] in ("asha", "resources")
        and len(path) == 2
        and not isinstance(raw.get(path[0]), dict)
    ):
        raw[path[0]] = {}
    put(raw, path, value)
    return Case("wrong_type_spec", f"{'.'.join(path)}={value!r:.60}", raw, (path[-1],))


@st.composite
def wrong_type_config(draw, name: str, raw: dict) -> Case:
    """A config value of the wrong type (or sign): in `fixed`, or one value of an axis."""
    hints = config_hints(raw["experiment"])
    axes = sorted(raw.get("axes") or {})
    where = draw(st.sampled_from(["fixed", "negative"] + (["axes"] if axes else [])))
    if where == "axes":
        axis = draw(st.sampled_from(axes))
        values = raw["axes"][axis]
        i = draw(st.integers(0, len(values) - 1))
        values[i] = draw(wrong_for_config(hints[axis]))
        return Case("wrong_type_config", f"axes.{axis}[{i}]={values[i]!r:.60}", raw, (axis,))
    free = free_config_fields(raw, hints)
    if where == "negative":
        free = [f for f in free if f in NON_NEGATIVE and not known_gap(raw["experiment"], f)]
    field = draw(st.sampled_from(free))
    strategy = negative_for_config if where == "negative" else wrong_for_config
    value = draw(strategy(hints[field]))
    raw.setdefault("fixed", {})[field] = value
    return Case("wrong_type_config", f"fixed.{field}={value!r:.60}", raw, (field,))


@st.composite
def bad_search_range(draw, name: str, raw: dict) -> Case:
    hints = config_hints(raw["experiment"])
    param = draw(st.sampled_from(sorted(raw["search"])))
    how = draw(st.sampled_from(["inverted", "log_nonpositive", "no_choices", "bad_choice"]))
    finite = st.floats(-1e6, 1e6)
    if how == "inverted":
        low = draw(finite)
        high = draw(st.floats(-1e6, low))
        raw["search"][param] = {"low": low, "high": high, "log": draw(st.booleans())}
        return Case("bad_search_range", f"{param}: low={low} >= high={high}", raw, (param, "low"))
    if how == "log_nonpositive":
        low = draw(st.floats(-1e6, 0))
        high = draw(st.floats(1e-6, 1e6))
        raw["search"][param] = {"low": low, "high": high, "log": True}
        return Case("bad_search_range", f"{param}: log with low={low}", raw, (param, "low"))
    if how == "no_choices":
        choices = draw(st.sampled_from([[], None, "absent"]))
        raw["search"][param] = {"type": "categorical"}
        if choices != "absent":
            raw["search"][param]["choices"] = choices
        return Case("bad_search_range", f"{param}: choices={choices}", raw, (param, "choices"))
    good = raw["search"][param]["low"]
    bad = draw(wrong_for_config(hints[param]))
    choices = draw(st.permutations([good, bad]))
    raw["search"][param] = {"type": "categorical", "choices": choices}
    return Case("bad_search_range", f"{param}: choices={choices!r:.60}", raw, (param,))


def declared_metrics(raw: dict) -> dict[str, Metric]:
    """What the first trial of a (valid) spec reports, by its Config's declaration."""
    spec = load_spec(raw)
    cell = spec.trial_config(spec.cells()[0], {k: p.example() for k, p in spec.search.items()})
    return trainables.load(spec.experiment).Config.from_mapping(cell).metrics()


@st.composite
def bad_objective(draw, name: str, raw: dict) -> Case:
    """A metric the experiment does not report, the wrong better side, or final-only under ASHA."""
    declared = declared_metrics(raw)
    final = sorted(k for k, m in declared.items() if m.final and m.mode is not None)
    sided = sorted(k for k, m in declared.items() if m.mode is not None)
    how = draw(st.sampled_from(["unknown", "wrong_mode"] + (["final_under_asha"] if final else [])))
    if how == "unknown":
        metric = draw(st.sampled_from(sorted(declared)))
        metric = typo(metric, draw) if draw(st.booleans()) else draw(WORDS)
        assume(metric not in declared)
        raw["objective"] = {**raw["objective"], "metric": metric}
        return Case("bad_objective", f"metric={metric!r}", raw, ("objective.metric", metric))
    if how == "wrong_mode":
        metric = draw(st.sampled_from(sided))
        wrong = {"min": "max", "max": "min"}[declared[metric].mode]
        raw["objective"] = {"metric": metric, "mode": wrong}
        return Case("bad_objective", f"{metric} mode={wrong}", raw, ("objective.mode", metric))
    metric = draw(st.sampled_from(final))
    raw["objective"] = {"metric": metric, "mode": declared[metric].mode}
    raw["asha"] = {"grace_period": 1}
    return Case("bad_objective", f"asha, final {metric}", raw, ("asha", metric))


@st.composite
def unknown_experiment(draw, name: str, raw: dict) -> Case:
    near = sorted(trainables.REGISTRY)
    experiment = draw(
        (
            WORDS
            | st.sampled_from(near).map(lambda w: w + "s")
            | st.sampled_from(near).map(str.upper)
        ).filter(lambda e: e not in trainables.REGISTRY)
    )
    raw["experiment"] = experiment
    return Case("unknown_experiment", f"experiment={experiment!r}", raw, ("experiment", experiment))


@st.composite
def empty_axis(draw, name: str, raw: dict) -> Case:
    hints = config_hints(raw["experiment"])
    axes = sorted(raw.get("axes") or {}) + free_config_fields(raw, hints)
    axis = draw(st.sampled_from(axes))
    raw.setdefault("axes", {})[axis] = []
    return Case("empty_axis", f"axes.{axis}=[]", raw, (axis,))


@st.composite
def bad_overlay(draw, name: str, raw: dict) -> Case:
    if draw(st.booleans()):  # neither a file nor a shipped spec
        target = draw(WORDS.filter(lambda w: w not in SHIPPED))
        raw["overlay"] = target
        return Case("bad_overlay", f"overlay={target!r}", raw, ("overlay",))
    # a companion file that is not a mapping, not YAML, or not a valid spec
    text = draw(st.sampled_from(["- 1\n", "just text\n", "", "[unclosed\n", "name: [x]\n"]))
    raw["overlay"] = "companion.yaml"
    return Case("bad_overlay", f"overlay -> {text!r}", raw, ("overlay",), None,
                {"companion.yaml": text})  # fmt: skip


@st.composite
def bad_profile(draw, name: str, raw: dict) -> Case:
    """Mutations inside a profile, run with `--profile` (profiles are validated when applied)."""
    profile = draw(st.sampled_from(sorted(raw["profiles"])))
    body = raw["profiles"][profile]
    hints = config_hints(raw["experiment"])
    how = draw(st.sampled_from(["unknown_key", "unknown_field", "wrong_value", "shape"]))
    if how == "unknown_key":
        key = unknown_key(draw, SPEC_KEYS, sorted(SPEC_KEYS))
        body[key] = draw(ANY_SCALAR)
        return Case("bad_profile", f"profiles.{profile}.{key!r}", raw, (key,), profile)
    if how == "unknown_field":
        key = unknown_key(draw, set(hints), sorted(hints))
        body.setdefault("fixed", {})[key] = draw(ANY_SCALAR)
        label = f"profiles.{profile}.fixed.{key!r}"
        return Case("bad_profile", label, raw, (key,), profile)
    if how == "wrong_value":
        field = draw(st.sampled_from(free_config_fields(raw, hints)))
        value = draw(wrong_for_config(hints[field]))
        body.setdefault("fixed", {})[field] = value
        label = f"profiles.{profile}.fixed.{field}={value!r:.60}"
        return Case("bad_profile", label, raw, (field,), profile)
    if draw(st.booleans()):
        raw["profiles"][profile] = draw(not_a_mapping())
        label = f"profiles.{profile}={raw['profiles'][profile]!r:.60}"
        return Case("bad_profile", label, raw, ("profiles", profile), profile)
    raw["profiles"] = draw(LISTS | NUMBERS | st.booleans() | st.none())
    return Case("bad_profile", f"profiles={raw['profiles']!r:.60}", raw, ("profiles",), profile)


@st.composite
def not_a_mapping_top(draw, name: str, raw: dict) -> Case:
    value = draw(
        st.one_of(
            st.just([[k, v] for k, v in raw.items()]),
            st.just(sorted(raw)),
            NUMBERS,
            st.booleans(),
            st.text(max_size=20).filter(lambda s: s.strip() != ""),
        )
    )
    if draw(st.booleans()):
        text = draw(st.sampled_from(["", "\n", "# only a comment\n", "---\n", "null\n", "~\n"]))
        return Case("not_a_mapping", f"text {text!r}", text, (f"{name}.yaml", "mapping"))
    text = yaml.safe_dump(value)  # a top-level string must be dumped too, not written as is
    return Case("not_a_mapping", f"top={value!r:.60}", text, (f"{name}.yaml", "mapping"))


KEY_LINE = re.compile(r"^(?P<indent>[ ]*)(?P<key>[A-Za-z_][A-Za-z0-9_]*):[ ]+(?P<value>\S.*)$")
EVIL = [
    '!!python/object/apply:os.system ["touch {marker}"]',
    '!!python/object/apply:subprocess.check_call [["touch", "{marker}"]]',
    '!!python/object/new:os.system ["touch {marker}"]',
    "!!python/object/apply:builtins.exec [\"open('{marker}', 'w')\"]",
    "!!python/name:os.system",
    "!!python/module:os",
    "!!python/object:argparse.Namespace {a: 1}",
    "!custom 1",
]


@st.composite
def invalid_yaml(draw, name: str, raw: dict) -> Case:
    text = TEXTS[name]
    lines = text.splitlines(keepends=True)
    key_lines = [i for i, line in enumerate(lines) if KEY_LINE.match(line.rstrip("\n"))]
    profiles_at = next(i for i, line in enumerate(lines) if line.startswith("profiles:"))
    i = draw(st.sampled_from(key_lines))
    m = KEY_LINE.match(lines[i].rstrip("\n"))
    how = draw(
        st.sampled_from(["unclosed", "tab", "alias", "control", "utf8", "evil", "deep", "two_docs"])
    )
    file = f"{name}.yaml"
    head = f"{m['indent']}{m['key']}: "
    if how == "unclosed":
        opener = draw(st.sampled_from(["[", "{"]))
        lines[i] = f"{head}{opener}{m['value']}\n"
        names = (file, "YAML", "line")
    elif how == "tab":
        lines[i] = "\t" + lines[i]
        names = (file, "YAML", "line")
    elif how == "alias":
        lines[i] = f"{head}*undefined\n"
        names = (file, "YAML", "line")
    elif how == "control":
        char = draw(st.sampled_from(["\x00", "\x07", "\x1b", "\x7f", "\ufffe"]))
        at_ = draw(st.integers(0, len(lines[i])))
        lines[i] = lines[i][:at_] + char + lines[i][at_:]
        names = (file, "YAML")
    elif how == "evil":
        lines[i] = f"{head}{draw(st.sampled_from(EVIL))}\n"
        names = (file, "YAML", "line")
    elif how == "deep":  # outside `profiles`, where any value passes until the profile is used
        i = draw(st.sampled_from([k for k in key_lines if k < profiles_at]))
        m = KEY_LINE.match(lines[i].rstrip("\n"))
        head = f"{m['indent']}{m['key']}: "
        depth = draw(st.integers(200, 800))  # parses, or too deep for the loader
        lines[i] = f"{head}{'[' * depth}{']' * depth}\n"
        names = (file,)
    elif how == "two_docs":
        lines = [text, "---\n", text]
        names = (file, "YAML", "line")
    out = "".join(lines)
    if how == "utf8":
        data = out.encode()
        at_ = draw(st.integers(0, len(data)))
        bad = draw(st.sampled_from([b"\xff", b"\xfe", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80"]))
        data = data[:at_] + bad + data[at_:]
        with pytest.raises(UnicodeDecodeError):
            data.decode()
        return Case("invalid_yaml", f"utf8 {bad!r} at byte {at_}", data, (file, "UTF-8"))
    if how != "deep":  # the mutation must really break the YAML, not only look as if it does
        with pytest.raises(yaml.YAMLError):
            yaml.safe_load(out.replace(MARKER, "/nonexistent"))
    return Case("invalid_yaml", f"{how} at line {i + 1}", out, names)


KINDS = {
    "delete_required": delete_required,
    "unknown_key": add_unknown_key,
    "wrong_type_spec": wrong_type_spec,
    "wrong_type_config": wrong_type_config,
    "bad_search_range": bad_search_range,
    "bad_objective": bad_objective,
    "unknown_experiment": unknown_experiment,
    "empty_axis": empty_axis,
    "bad_overlay": bad_overlay,
    "bad_profile": bad_profile,
    "not_a_mapping": not_a_mapping_top,
    "invalid_yaml": invalid_yaml,
}


@st.composite
def cases(draw) -> tuple[str, Case]:
    """(shipped spec name, a mutation of it that must be rejected)."""
    name = draw(st.sampled_from(sorted(BASES)))
    raw = yaml.safe_load(TEXTS[name])  # a fresh copy to mutate
    # a spec that searches nothing (spiral_thesis: one trial a cell) has no range to break
    kinds = [k for k in sorted(KINDS) if raw.get("search") or k != "bad_search_range"]
    kind = draw(st.sampled_from(kinds))
    return name, draw(KINDS[kind](name, raw))


# --- running one case through the CLI -------------------------------------------------------------


class SpecAccepted(BaseException):
    """The tripwire: validation let a mutated spec through to `run_sweep`."""


def write(case: Case, root: Path, name: str) -> Path:
    path = root / f"{name}.yaml"
    spec = case.spec
    if isinstance(spec, str):
        spec = spec.replace(MARKER, str(root / "pwned"))
    if isinstance(spec, bytes):
        path.write_bytes(spec)
    elif isinstance(spec, str):
        path.write_text(spec)
    else:
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
    for other, text in case.files.items():
        (root / other).write_text(text)
    return path


def run_case(case: Case, name: str) -> tuple[int, str, str, set[str], float]:
    with tempfile.TemporaryDirectory(prefix="specfuzz-") as tmp, contextlib.chdir(tmp):
        root = Path(tmp)
        path = write(case, root, name)
        written = {p.name for p in root.iterdir()}
        argv = ["run", str(path), "--name", "x", "--storage", str(root / "sweeps")]
        argv += ["--tracking-uri", f"sqlite:///{root}/mlflow.db"]
        if case.profile is not None:
            argv += ["--profile", case.profile]
        out, err = io.StringIO(), io.StringIO()
        accepted = SpecAccepted(f"{case.kind}: {case.label}: the mutated spec was accepted")
        start = time.perf_counter()
        with (
            mock.patch("service.sweep.run_sweep", side_effect=accepted),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            try:
                code = cli.main(argv)
            except (Exception, SystemExit) as exc:  # a traceback: report it with its case
                raise AssertionError(
                    f"{case.kind}: {case.label}: {type(exc).__name__}: {exc}"
                ) from exc
        elapsed = time.perf_counter() - start
        left = {p.name for p in root.iterdir()} - written
        return code, out.getvalue(), err.getvalue(), left, elapsed


@pytest.fixture(scope="module")
def warm():
    """Import what `run` imports, and load every shipped spec: the bases must be valid."""
    import service.sweep  # noqa: F401  (Ray, MLflow, Optuna: seconds, once)

    for name in SHIPPED:
        load_spec(name)
        for profile in BASES[name].get("profiles") or {}:
            load_spec(name, profile)


def test_mutated_specs_fail_with_one_line_naming_the_field(warm):
    import ray

    seen: Counter[str] = Counter()
    slowest: list[float] = [0.0]

    @settings(
        max_examples=600,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(cases())
    def check(named_case):
        name, case = named_case
        event(case.kind)
        seen[case.kind] += 1

        code, out, err, left, elapsed = run_case(case, name)
        slowest[0] = max(slowest[0], elapsed)
        where = f"{case.kind}: {case.label}"
        assert code == 2, f"{where}: exit {code}, stderr {err!r}"
        assert "Traceback" not in err + out, where
        assert err.startswith("smoothsweep: error: "), f"{where}: {err!r}"
        assert err.endswith("\n") and err.count("\n") == 1, f"{where}: not one line: {err!r}"
        for needle in case.names:
            shown = (needle, repr(needle)[1:-1])
            assert any(s in err for s in shown), f"{where}: {needle!r} not named in {err!r}"
        assert not left, f"{where}: wrote {sorted(left)}"  # no mlflow.db, no sweeps/, no mlruns/
        assert not ray.is_initialized(), where
        assert elapsed < 1.0, f"{where}: took {elapsed:.2f} s"

    check()
    assert sum(seen.values()) >= 500, seen
    kinds = set(KINDS) | {"unknown_config_field"}  # add_unknown_key labels config fields apart
    assert set(seen) == kinds, f"kinds never drawn: {kinds - set(seen)}"
    assert slowest[0] < 1.0


# --- the same, as a real process ------------------------------------------------------------------


def test_mutated_specs_fail_the_same_way_as_a_process(tmp_path):
    raw = yaml.safe_load(TEXTS["sinusoid"])
    raw["search"]["sigma_inv"]["high"] = "wide"
    specs = {
        "wrong_type.yaml": (yaml.safe_dump(raw), "sigma_inv.high"),
        "evil.yaml": (
            TEXTS["sinusoid"].replace(
                "name: sinusoid",
                f'name: !!python/object/apply:os.system ["touch {tmp_path}/pwned"]',
            ),
            "evil.yaml: not valid YAML at line",
        ),
        "list.yaml": (
            "- name: sinusoid\n- experiment: sinusoid\n",
            "a spec must be a YAML mapping",
        ),
    }
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = {}
    for file, (text, _) in specs.items():
        (tmp_path / file).write_text(text)
        cmd = [sys.executable, "-m", "service.cli", "run", str(tmp_path / file), "--name", "x"]
        cmd += ["--storage", str(tmp_path / "sweeps")]
        cmd += ["--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
        procs[file] = subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    for file, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (file, err)
        assert err.startswith("smoothsweep: error: ") and err.count("\n") == 1, (file, err)
        assert specs[file][1] in err and "Traceback" not in err, (file, err)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(specs)  # no mlflow.db, no sweeps/, no pwned


@pytest.mark.parametrize(
    "experiment,field,value",
    [("sinusoid", "seed", -2), ("spiral", "train_points", -2), ("spiral", "test_points", 0),
     ("sinusoid", "noise_std", "inf"), ("sinusoid", "lr", "nan")],
)  # fmt: skip
def test_config_rejects_values_that_would_only_fail_inside_a_trial(experiment, field, value):
    objective = next(b["objective"] for b in BASES.values() if b["experiment"] == experiment)
    raw = {"name": "t", "experiment": experiment, "objective": objective}
    with pytest.raises(SpecError, match=field):
        load_spec({**raw, "fixed": {field: value}})
