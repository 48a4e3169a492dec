"""The sweep spec: YAML with `fixed`, `axes` and `search`, validated into a `Spec`.

- `fixed`: config values every trial shares.
- `axes`: values swept exhaustively; every combination is a *cell* (the curves' groups, e.g. width).
- `search`: parameters Optuna optimises inside each cell (σ⁻¹, lr, λ), one study per cell, so that
  every cell gets dense coverage instead of one study chasing the easiest cell.

Profiles (`smoke`, `paper`) are partial specs merged over the base. Every error names the field, the
rule and the value, and is raised as a one-line `SpecError`, before any compute: the objective too
is checked against the metrics the experiment's Config declares (`Config.metrics()`).

One validation system for the spec and the configs: the spec's parts are frozen dataclasses built
by the same strict `from_mapping` as every experiment's Config (`trainables.config.Strict`), with
cross-field rules in `__post_init__` as `require(...)`. A schema library would be a second one, and
it would have to be taught what the configs already know: per-replica fields (`PerReplica[X]`, one
value or a list of one per replica); YAML 1.1's quirks (`1e-3` read as a string, yes/no as bools);
that a bool is not an int; one message style for every field of spec and config ("`field` must be
RULE, but got VALUE", the dotted path of a nested one); a did-you-mean for unknown keys; and no
second schema language to read.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

import trainables
from service.conventions import dumps
from service.errors import SpecError
from trainables.config import (
    INT64,
    ConfigError,
    ExperimentConfig,
    Strict,
    parse_override,
    require,
    unknown_keys,
)
from trainables.report import Metric

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


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


def _usable_numbers(raw: Mapping[str, Any]) -> None:
    """NaN, ±inf and integers beyond 64 bits are never a setting (profiles: when applied).

    Checked before any field is typed, so that `fixed` and `axes` (typed by the Config, later) are
    covered too, and a 4000-digit integer never reaches a message.
    """
    body = {k: v for k, v in raw.items() if k != "profiles"}
    for path, value in _numbers(body):
        if isinstance(value, float) and not math.isfinite(value):
            shown = repr(value)
        elif isinstance(value, int) and not -INT64 <= value < INT64:
            shown = f"a {value.bit_length()}-bit integer"
        else:
            continue
        raise ConfigError(
            f"`{path}`: {shown} is not a usable value "
            f"(numbers must be finite, integers within 64 bits)"
        )


@dataclass(frozen=True)
class SearchParam(Strict):
    """One searched parameter: a float or int range (optionally log-uniform) or a set of choices."""

    type: Literal["float", "int", "categorical"] = "float"
    low: float | None = None
    high: float | None = None
    log: bool = False
    """sample log-uniformly (low must be > 0)"""
    choices: list[Any] | None = None
    """the values of a categorical parameter"""

    def __post_init__(self) -> None:
        if self.type == "categorical":
            rule = "a non-empty list for a categorical parameter"
            require(bool(self.choices), "choices", rule, self.choices)
            return
        for bound in ("low", "high"):
            if getattr(self, bound) is None:
                raise ConfigError(f"must be given for a {self.type} parameter", bound)
        if not self.low < self.high:
            raise ConfigError(f"`low < high` must hold, but got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ConfigError(f"`low > 0` must hold when log is true, but got low={self.low}")

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


@dataclass(frozen=True)
class Objective(Strict):
    metric: str
    """a metric the experiment's Config declares (`metrics()`)"""
    mode: Literal["min", "max"] | None = None
    """the better side; may be left out where the Config declares it (then it is filled in)"""


@dataclass(frozen=True)
class Asha(Strict):
    """Asynchronous successive halving over reports (each evaluation is one report)."""

    grace_period: int = 1
    reduction_factor: float = 2.0
    max_t: int | None = None

    def __post_init__(self) -> None:
        require(self.grace_period >= 1, "grace_period", ">= 1", self.grace_period)
        require(self.reduction_factor > 1, "reduction_factor", "> 1", self.reduction_factor)
        require(self.max_t is None or self.max_t >= 1, "max_t", ">= 1 or null", self.max_t)


@dataclass(frozen=True)
class Precision(Strict):
    """Close a cell once its optimum is known this well: trials_per_cell becomes the cap."""

    ci_ratio: float
    """the CI of x_opt, high / low, at which a cell has enough trials (e.g. 1.3)"""
    min_trials: int = 8
    """finished trials a cell has before its CI is trusted"""
    x: str | None = None
    """the parameter whose optimum is meant (default: the searched length scale)"""

    def __post_init__(self) -> None:
        require(self.ci_ratio > 1, "ci_ratio", "> 1 (CI high / low)", self.ci_ratio)
        require(self.min_trials >= 3, "min_trials", ">= 3", self.min_trials)


@dataclass(frozen=True)
class Budget(Strict):
    """Limits on the whole sweep besides its trial count; the sweep ends cleanly at the first."""

    time_s: float | None = None
    """wall-clock seconds of the sweep (Tune's time budget); its running trials end KILLED"""

    def __post_init__(self) -> None:
        require(self.time_s is None or self.time_s > 0, "time_s", "> 0 seconds", self.time_s)


@dataclass(frozen=True)
class Resources(Strict):
    cpu: float = 1.0
    gpu: float = 0.0
    threads: int | None = None
    """torch intra-op threads per trial (default: the CPUs Ray gives it, at least one). Small nets
    want one: torch's default of one thread per core next to other trials' work slowed a
    width-1000 run from 9 s to 202 s on a 2-core machine"""

    def __post_init__(self) -> None:
        require(self.cpu > 0, "cpu", "> 0", self.cpu)
        require(self.gpu >= 0, "gpu", ">= 0", self.gpu)
        require(self.threads is None or self.threads >= 1, "threads", ">= 1 or null", self.threads)
        whole = self.gpu <= 1 or self.gpu.is_integer()  # Ray shares one GPU, never two and a half
        require(whole, "gpu", "at most 1 or a whole number", self.gpu)


@dataclass(frozen=True, kw_only=True)
class Spec(Strict):
    """A validated sweep spec; `load_spec` builds one from YAML, a profile and overrides."""

    name: str
    experiment: str
    description: str = ""
    objective: Objective
    fixed: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    search: dict[str, SearchParam] = field(default_factory=dict)
    trials_per_cell: int = 8
    max_concurrent: int = 2
    sampler: Literal["tpe", "cmaes", "qmc", "random", "gp"] = "tpe"
    sampler_seed: int = 0
    """seeds the Optuna sampler of cell i with sampler_seed + i; NumPy wants seeds in [0, 2**32)"""
    asha: Asha | None = None
    resources: Resources = field(default_factory=Resources)
    max_failures: int = 0
    nuisance: list[str] | None = None
    """searched parameters the analysis profiles out (default: every one besides the x)"""
    precision: Precision | None = None
    budget: Budget | None = None
    pack: int | Literal["auto"] = "auto"
    """configurations of a cell per Tune trial, trained as one stacked model (1: one each)"""
    overlay: str | None = None
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def where(cls, path: str = "") -> str:
        return "the spec"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], path: str = "") -> Spec:
        if isinstance(values, Mapping):
            _usable_numbers(values)
        return super().from_mapping(values, path)

    def __post_init__(self) -> None:
        rule = "letters, digits, '_', '.' or '-', starting with a letter or digit"
        require(NAME.fullmatch(self.name) is not None, "name", rule, self.name)
        require(self.trials_per_cell >= 1, "trials_per_cell", ">= 1", self.trials_per_cell)
        require(self.max_concurrent >= 1, "max_concurrent", ">= 1", self.max_concurrent)
        ok = 0 <= self.sampler_seed < 2**31
        require(ok, "sampler_seed", "in [0, 2**31)", self.sampler_seed)
        require(self.max_failures >= 0, "max_failures", ">= 0", self.max_failures)
        require(self.pack == "auto" or self.pack >= 1, "pack", ">= 1 or 'auto'", self.pack)
        searched = sorted(self.search)
        for name in self.nuisance or []:
            require(name in self.search, "nuisance", f"a list of searched parameters {searched}",
                    self.nuisance)  # fmt: skip
        if self.precision is not None:
            x = self.precision_x
            require(x in self.search, "precision.x", f"one of the searched {searched}", x)
            mt = self.precision.min_trials
            require(mt <= self.trials_per_cell, "precision.min_trials", "<= trials_per_cell", mt)
        config = self._config()
        declared = self._check_against_config(config)
        mode = self._check_objective(declared)
        if self.objective.mode is None:  # declared by the Config: the spec as run names it
            object.__setattr__(self, "objective", dataclasses.replace(self.objective, mode=mode))

    @property
    def precision_x(self) -> str | None:
        """The parameter whose optimum `precision` is about: named, or the length scale."""
        if self.precision is not None and self.precision.x is not None:
            return self.precision.x
        for name in ("sigma_inv", "length_scale", *self.search):
            if name in self.search:
                return name
        return None

    def _config(self) -> type[ExperimentConfig]:
        if self.experiment not in trainables.REGISTRY:
            known = sorted(trainables.REGISTRY)
            close = difflib.get_close_matches(self.experiment, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ";"
            raise ConfigError(f"unknown experiment {self.experiment!r}{hint} known: {known}")
        return trainables.load(self.experiment).Config

    def _check_against_config(self, config: type[ExperimentConfig]) -> list[dict[str, Metric]]:
        """Every key is a field of the Config, in one role; every trial's config is valid.

        Returns the metrics each trial's config declares (none yet for a Config being ported).
        """
        for axis, values in self.axes.items():
            require(bool(values), f"axes.{axis}", "a non-empty list of values", values)
        fields = {f.name for f in dataclasses.fields(config)}
        for role in ("fixed", "axes", "search"):
            unknown = [k for k in getattr(self, role) if k not in fields]
            if unknown:
                valid_as = f"fields of {self.experiment}'s Config"
                raise unknown_keys(unknown, fields, f"`{role}`", "config key", valid_as)
        roles = {"fixed": set(self.fixed), "axes": set(self.axes), "search": set(self.search)}
        for (a, ka), (b, kb) in itertools.combinations(roles.items(), 2):
            if ka & kb:
                raise ConfigError(f"keys {sorted(ka & kb)} appear in both `{a}` and `{b}`")
        examples = self._examples()
        variants = [examples]  # every choice, not only the example
        for key, param in self.search.items():
            for choice in param.choices[1:] if param.type == "categorical" else []:
                variants.append({**examples, key: choice})
        declared = []
        for cell in self.cells():
            for suggested in variants:
                cfg = config.from_mapping(self.trial_config(cell, suggested))
                declared.append(cfg.metrics())
        return declared

    def _check_objective(self, declared: list[dict[str, Metric]]) -> str:
        """The objective is a metric every trial reports, on the side it declares; the mode."""
        metric, mode = self.objective.metric, self.objective.mode
        for metrics in declared:
            if metric not in metrics:
                raise ConfigError(
                    f"`objective.metric` {metric!r} is not a metric {self.experiment} reports; "
                    f"it reports {', '.join(sorted(metrics))}"
                )
            better = metrics[metric].mode
            if better is None and mode is None:
                raise ConfigError(
                    f"must be 'min' or 'max': {self.experiment} declares no better side "
                    f"of {metric}",
                    "objective.mode",
                )
            rule = f"{better!r} for {metric} (as {self.experiment} declares)"
            require(better is None or mode in (None, better), "objective.mode", rule, mode)
            if self.asha is not None and metrics[metric].final:
                raise ConfigError(
                    f"`asha` needs the objective at every report, but `objective.metric` "
                    f"{metric!r} is final-only (measured once, at the end); set `asha: null`"
                )
            mode = mode or better
        return mode

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

    def resolved(self) -> dict[str, Any]:
        """The spec as run, as JSON-able data: profiles already applied, so they are dropped."""
        out = dataclasses.asdict(self)
        del out["profiles"]
        return out

    @property
    def sha256(self) -> str:
        return hashlib.sha256(dumps(self.resolved()).encode()).hexdigest()

    def live_nuisance(self, x: str | None) -> list[str]:
        """What a live refit of x's optimum profiles out (the precision target, the parent run's
        x_opt): the spec's nuisance, else the other searched numbers; two at most, to stay fast."""
        searched = [k for k, p in self.search.items() if p.type != "categorical"]
        nuisance = self.nuisance if self.nuisance is not None else searched
        return [n for n in nuisance if n != x][:2]

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


def spec_experiment(path: Path) -> str | None:
    """The experiment a spec file names (None when it names none or is not a mapping)."""
    raw = read_yaml(path)
    return raw.get("experiment") if isinstance(raw, dict) else None


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
        return Spec.from_mapping(raw)
    except ConfigError as exc:
        raise SpecError(f"{source}: {exc}") from None
    except RecursionError:
        raise SpecError(f"{source}: not a spec: a value nested too deeply") from None


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


SPEC_KEYS = {
    "name", "trials_per_cell", "max_concurrent", "sampler", "sampler_seed", "max_failures", "pack",
    "overlay", "nuisance",
}  # fmt: skip
# Spec sections that are mappings: `--set resources.gpu=0.25` sets one field inside them.
SPEC_SECTIONS = {"resources", "objective", "asha", "budget"}


def _require_config_field(raw: Mapping[str, Any], key: str, text: str) -> None:
    """A `--set` key that is neither a spec key nor a field of the spec's experiment: the user's
    `--set`, not the spec file, is what to fix (an unknown experiment is reported elsewhere)."""
    name = raw.get("experiment")
    if not isinstance(name, str) or name not in trainables.REGISTRY:
        return
    fields = {f.name for f in dataclasses.fields(trainables.load(name).Config)}
    if key not in fields:
        valid = sorted(fields | SPEC_KEYS | {f"{s}.FIELD" for s in SPEC_SECTIONS})
        raise SpecError(
            f"`--set {text}`: "
            + str(unknown_keys([key], valid, f"{name}'s config or the spec", "field", "settable"))
        )


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
        if section == "search" and field.count(".") == 1:  # `search.sigma_inv.high=50`
            name, _, bound = field.partition(".")
            space = (out.get("search") or {}).get(name)
            if not isinstance(space, dict):
                known = sorted(out.get("search") or {})
                raise SpecError(
                    f"{source}: `--set {text}`: {name!r} is not searched by this spec "
                    f"(searched: {', '.join(known) or 'none'})"
                )
            out["search"][name] = {**space, bound: value}
            continue
        if dot and section in SPEC_SECTIONS:
            if not isinstance(out.get(section) or {}, dict):
                raise SpecError(f"{source}: `{section}` must be a mapping to set `{key}`")
            out[section] = {**(out.get(section) or {}), field: value}
            continue
        _require_config_field(out, key, text)
        for role in ("axes", "search"):
            if isinstance(out.get(role), dict):
                out[role].pop(key, None)
        out.setdefault("fixed", {})
        if not isinstance(out["fixed"], dict):
            raise SpecError(f"{source}: `fixed` must be a mapping, but got {out['fixed']!r}")
        out["fixed"][key] = value
    return out
