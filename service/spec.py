"""The sweep spec: YAML with `fixed`, `axes` and `search`, validated into a `Spec`.

- `fixed`: config values every trial shares.
- `axes`: values swept exhaustively; every combination is a *cell* (the curves' groups, e.g. width).
- `search`: parameters Optuna optimises inside each cell (σ⁻¹, lr, λ), one study per cell, so that
  every cell gets dense coverage instead of one study chasing the easiest cell.

Profiles (`smoke`, `paper`) are partial specs merged over the base. Every error names the field, the
rule and the value, and is raised as a one-line `SpecError`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

import trainables
from service.conventions import cell_label, dumps
from service.errors import SpecError
from trainables.config import ConfigError, parse_override


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _not_a_bool(value: Any) -> Any:
    # YAML reads yes/no/on/off as booleans; pydantic would take them as 1 and 0.
    if isinstance(value, bool):
        raise ValueError("Input should be a number, not a boolean")
    return value


Number = Annotated[float, BeforeValidator(_not_a_bool), AllowInfNan(False)]
Integer = Annotated[int, BeforeValidator(_not_a_bool)]
INT64 = 2**63


def _numbers(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every int and float in a YAML tree; bools are not numbers."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _numbers(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _numbers(value, f"{path}.{i}")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path, node


class SearchParam(_Strict):
    """One searched parameter: a float or int range (optionally log-uniform) or a set of choices."""

    type: Literal["float", "int", "categorical"] = "float"
    low: Number | None = None
    high: Number | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> SearchParam:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty `choices` list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs `low` and `high`")
        if not self.low < self.high:
            raise ValueError(f"`low < high` must hold, but got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"`low > 0` must hold when log is true, but got low={self.low}")
        return self

    def distribution(self) -> Any:
        import optuna

        if self.type == "categorical":
            return optuna.distributions.CategoricalDistribution(self.choices)
        if self.type == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log)
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log)

    def example(self) -> Any:
        """A value inside the range, used to type-check the space against the Config."""
        if self.type == "categorical":
            return self.choices[0]
        return int(self.low) if self.type == "int" else float(self.low)


class Objective(_Strict):
    metric: str
    mode: Literal["min", "max"]


class Asha(_Strict):
    """Asynchronous successive halving over reports (each evaluation is one report)."""

    grace_period: Integer = Field(1, ge=1)
    reduction_factor: Number = Field(2.0, gt=1)
    max_t: Integer | None = Field(None, ge=1)


class Resources(_Strict):
    cpu: Number = Field(1.0, gt=0)
    gpu: Number = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _whole_gpus(self) -> Resources:
        if self.gpu > 1 and not float(self.gpu).is_integer():
            raise ValueError(f"`gpu` above 1 must be a whole number, but got {self.gpu}")
        return self


class Spec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    experiment: str
    description: str = ""
    objective: Objective
    fixed: dict[str, Any] = {}
    axes: dict[str, list[Any]] = {}
    search: dict[str, SearchParam] = {}
    trials_per_cell: Integer = Field(8, ge=1)
    max_concurrent: Integer = Field(2, ge=1)
    sampler: Literal["tpe", "cmaes", "qmc", "random"] = "tpe"
    # seeds the Optuna sampler of cell i with sampler_seed + i; NumPy wants seeds in [0, 2**32)
    sampler_seed: Integer = Field(0, ge=0, lt=2**31)
    asha: Asha | None = None
    resources: Resources = Resources()
    max_failures: Integer = Field(0, ge=0)
    overlay: str | None = None
    profiles: dict[str, dict[str, Any]] = {}

    @model_validator(mode="before")
    @classmethod
    def _finite_numbers(cls, data: Any) -> Any:
        """NaN, ±inf and integers beyond 64 bits are never a setting (profiles: when applied)."""
        if not isinstance(data, Mapping):
            return data
        body = {k: v for k, v in data.items() if k != "profiles"}
        for path, value in _numbers(body):
            if isinstance(value, float) and not math.isfinite(value):
                shown = repr(value)
            elif isinstance(value, int) and not -INT64 <= value < INT64:
                shown = f"a {value.bit_length()}-bit integer"
            else:
                continue
            raise ValueError(
                f"`{path}`: {shown} is not a usable value "
                f"(numbers must be finite, integers within 64 bits)"
            )
        return data

    @model_validator(mode="after")
    def _check_against_config(self) -> Spec:
        if self.experiment not in trainables.REGISTRY:
            raise ValueError(
                f"unknown experiment {self.experiment!r}; known: {sorted(trainables.REGISTRY)}"
            )
        for axis, values in self.axes.items():
            if not values:
                raise ValueError(f"axis `{axis}` needs at least one value")
        config = trainables.load(self.experiment).Config
        fields = {f.name for f in dataclasses.fields(config)}
        for role in ("fixed", "axes", "search"):
            unknown = sorted(set(getattr(self, role)) - fields)
            if unknown:
                raise ValueError(
                    f"{role} keys {unknown} are not fields of {self.experiment}'s Config "
                    f"(see `smoothsweep experiments`)"
                )
        roles = {"fixed": set(self.fixed), "axes": set(self.axes), "search": set(self.search)}
        for (a, ka), (b, kb) in itertools.combinations(roles.items(), 2):
            if ka & kb:
                raise ValueError(f"keys {sorted(ka & kb)} appear in both `{a}` and `{b}`")
        try:
            examples = self._examples()
            for cell in self.cells():
                config.from_mapping(self.trial_config(cell, examples))
            for key, param in self.search.items():  # every choice, not only the example
                for choice in param.choices[1:] if param.type == "categorical" else []:
                    config.from_mapping(self.trial_config(cell, {**examples, key: choice}))
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    def _examples(self) -> dict[str, Any]:
        return {k: p.example() for k, p in self.search.items()}

    def cells(self) -> list[dict[str, Any]]:
        """Every combination of axis values, in a stable order."""
        names = sorted(self.axes)
        return [
            dict(zip(names, values)) for values in itertools.product(*(self.axes[n] for n in names))
        ]

    def trial_config(self, cell: Mapping[str, Any], suggested: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.fixed, **cell, **suggested}

    @property
    def num_trials(self) -> int:
        return len(self.cells()) * self.trials_per_cell

    def cell_labels(self) -> list[str]:
        return [cell_label(c) for c in self.cells()]

    def resolved(self) -> dict[str, Any]:
        """The spec as run: profiles already applied, so they are dropped."""
        return self.model_dump(mode="json", exclude={"profiles"})

    @property
    def sha256(self) -> str:
        return hashlib.sha256(dumps(self.resolved()).encode()).hexdigest()

    def search_bounds(self) -> dict[str, dict[str, Any]]:
        return {
            k: {"low": p.low, "high": p.high, "log": p.log}
            for k, p in self.search.items()
            if p.type != "categorical"
        }


# --- loading --------------------------------------------------------------------------------------


def overlay_spec(spec: Spec, profile: str | None = None) -> Spec | None:
    """The companion sweep a spec asks for (`overlay: gp_sinusoid`), on the same data.

    It runs with the same profile when it defines one, and inherits every fixed value both
    experiments' Configs share (seed, replicas, the data fields), so that for each seed the two
    sweeps see the same points.
    """
    if spec.overlay is None:
        return None
    try:
        path = resolve_path(spec.overlay)
        raw = read_yaml(path)
        profiles = raw.get("profiles") if isinstance(raw, dict) else None
        own = profile if isinstance(profiles, dict) and profile in profiles else None
        companion = load_spec(path, own)
        ours = {f.name for f in dataclasses.fields(trainables.load(spec.experiment).Config)}
        theirs = {f.name for f in dataclasses.fields(trainables.load(companion.experiment).Config)}
        shared = (ours & theirs & set(spec.fixed)) - set(companion.axes) - set(companion.search)
        overrides = [f"{k}={json.dumps(spec.fixed[k])}" for k in sorted(shared)]
        return load_spec(path, own, overrides)
    except SpecError as exc:
        raise SpecError(f"`overlay` {spec.overlay!r}: {exc}") from None


def shipped_specs() -> dict[str, Path]:
    """Specs shipped in the `search_spaces` package: name -> path."""
    root = resources.files("search_spaces")
    return {
        p.name.removesuffix(".yaml"): Path(str(p))
        for p in root.iterdir()
        if p.name.endswith(".yaml")
    }


def resolve_path(spec: str | Path) -> Path:
    path = Path(spec)
    if path.is_file():
        return path
    shipped = shipped_specs()
    if str(spec) in shipped:
        return shipped[str(spec)]
    raise SpecError(
        f"spec {str(spec)!r} is neither a file nor a shipped spec; shipped: {sorted(shipped)}"
    )


def load_spec(
    spec: str | Path | Mapping[str, Any],
    profile: str | None = None,
    overrides: Sequence[str] = (),
) -> Spec:
    """Read (YAML, safe loader), apply a profile and `key=value` overrides, validate."""
    source = "spec"
    if isinstance(spec, Mapping):
        raw = copy.deepcopy(dict(spec))
    else:
        path = resolve_path(spec)
        source = path.name
        raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: a spec must be a YAML mapping, but got {type(raw).__name__}")
    if profile is not None:
        profiles = raw.get("profiles", {})
        if not isinstance(profiles, dict):
            raise SpecError(
                f"{source}: `profiles` must be a mapping of name to partial spec, "
                f"but got {type(profiles).__name__}"
            )
        if profile not in profiles:
            raise SpecError(
                f"{source}: unknown profile {profile!r}; the spec defines {sorted(profiles)}"
            )
        if not isinstance(profiles[profile], dict):
            raise SpecError(
                f"{source}: `profiles.{profile}` must be a mapping (a partial spec), "
                f"but got {type(profiles[profile]).__name__}"
            )
        raw = deep_merge(raw, profiles[profile])
    raw = apply_overrides(raw, overrides, source)
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"{source}: {describe_error(exc)}") from None


def read_yaml(path: Path) -> Any:
    """The YAML document in `path`, read with the safe loader: a tag never builds an object."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"{path.name}: not UTF-8 text (byte {exc.start}): save the spec as UTF-8"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{path.name}: not valid YAML{where}: fix the syntax") from None
    except RecursionError:
        raise SpecError(f"{path.name}: not a spec: YAML nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal over Python's 4300-digit limit
        raise SpecError(f"{path.name}: not valid YAML: {str(exc).splitlines()[0]}") from None


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


SPEC_KEYS = {"name", "trials_per_cell", "max_concurrent", "sampler", "sampler_seed", "max_failures"}
# Spec sections that are mappings: `--set resources.gpu=0.25` sets one field inside them.
SPEC_SECTIONS = {"resources", "objective", "asha"}


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str], source: str) -> dict[str, Any]:
    """`--set k=v`: a spec-level key (trials_per_cell, resources.gpu, ...) or a config field.

    A config field set this way is pinned: it moves to `fixed` and leaves `axes` and `search`,
    which is what a user narrowing a sweep down to one value means.
    """
    out = copy.deepcopy(raw)
    for text in overrides:
        try:
            key, value = parse_override(text)
        except ConfigError as exc:
            raise SpecError(f"{source}: {exc}") from None
        if key in SPEC_KEYS:
            out[key] = value
            continue
        section, dot, field = key.partition(".")
        if dot and section in SPEC_SECTIONS:
            if not isinstance(out.get(section) or {}, dict):
                raise SpecError(f"{source}: `{section}` must be a mapping to set `{key}`")
            out[section] = {**(out.get(section) or {}), field: value}
            continue
        for role in ("axes", "search"):
            if isinstance(out.get(role), dict):
                out[role].pop(key, None)
        out.setdefault("fixed", {})
        if not isinstance(out["fixed"], dict):
            raise SpecError(f"{source}: `fixed` must be a mapping, but got {out['fixed']!r}")
        out["fixed"][key] = value
    return out


def describe_error(exc: ValidationError) -> str:
    """The first pydantic error as one line: `field.path`: message (got value)."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    where = f"`{loc}`: " if loc else ""
    got = err.get("input")
    shown = "" if not loc or isinstance(got, dict) else f" (got {got!r})"
    more = f" [+{exc.error_count() - 1} more]" if exc.error_count() > 1 else ""
    return f"{where}{msg}{shown}{more}".replace("\n", " ")
