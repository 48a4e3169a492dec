"""Typed configs: strict `from_mapping`, like nanoGPT's overrides and cleanrl's Args.

Every experiment's `Config` is a frozen dataclass deriving from `ExperimentConfig`. A sweep passes
a plain dict; `from_mapping` rejects unknown keys and wrong types by name, so a typo in a spec fails
before any compute is spent. Field docstrings double as documentation (`smoothsweep experiments`).

The same machinery (`Strict`) validates the sweep spec itself (`service.spec`): nested frozen
dataclasses, `dict[str, X]`, `list[X]`, `tuple[X, ...]`, `Any`, Optional and Literal fields, with
errors that name the dotted path (`search.lr.low`) and state the rule and the value, in one line.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import math
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal, TypeVar, Union

C = TypeVar("C", bound="Strict")
V = TypeVar("V")
INT64 = 2**63  # NumPy's and torch's integers: a larger one is never a setting

# A field that may hold one value for every replica, or one value per replica (a list as long as
# `replicas`). Replicas with different values still train as one stacked model, each on exactly the
# path it would take alone: that is what lets many trials of a sweep share one tensor program.
PerReplica = Union[V, tuple[V, ...]]  # noqa: UP007 (a generic alias needs Union)


class ConfigError(ValueError):
    """A config value that breaks a rule; the message names the field, the rule and the value.

    `field` is the name the message starts with (`require`'s); `where` the dotted path of a mapping
    the message is about. `at(path)` names the same error from the mapping that holds it, so a rule
    checked inside `Resources` reads `resources.gpu` in the spec.
    """

    def __init__(self, message: str, field: str = "", where: str = "") -> None:
        self.message, self.field, self.where = message, field, where
        if field:
            text = f"`{_join(where, field)}` {message}"
        else:
            text = f"`{where}`: {message}" if where else message
        super().__init__(text)

    def at(self, path: str) -> ConfigError:
        if not path:
            return self
        return ConfigError(self.message, self.field, _join(path, self.where))


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path and key != "" else str(path or key)


@dataclasses.dataclass(frozen=True)
class Strict:
    """A frozen dataclass built from a plain mapping, strictly: `from_mapping`.

    Unknown keys fail with a did-you-mean, wrong types by name; rules that relate fields go in
    `__post_init__` as `require(...)` calls.
    """

    _noun: ClassVar[str] = "key"  # what an unknown key is called: "unknown config key `widht`"

    @classmethod
    def where(cls, path: str = "") -> str:
        """How an error names this mapping: its dotted path, or the class."""
        return f"`{path}`" if path else cls.__name__

    @classmethod
    def from_mapping(cls: type[C], values: Mapping[str, Any], path: str = "") -> C:
        """Build one from a plain mapping; unknown keys and wrong types fail by name.

        `path` is where the mapping sits in an enclosing one (`search.lr`); errors name it.
        """
        if not isinstance(values, Mapping):
            raise ConfigError(f"must be a mapping, but got {values!r}", path or cls.__name__)
        hints = _hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = [k for k in values if k not in fields]
        if unknown:
            raise unknown_keys(unknown, fields, cls.where(path), cls._noun)
        missing = [
            name
            for name, f in fields.items()
            if name not in values
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ConfigError(f"missing required key `{missing[0]}` in {cls.where(path)}")
        kwargs = {k: coerce(_join(path, k), v, hints[k]) for k, v in values.items()}
        try:
            return cls(**kwargs)
        except ConfigError as exc:  # a rule of __post_init__: name it from where it sits
            raise exc.at(path) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def unknown_keys(
    keys: Iterable[Any], valid: Iterable[str], where: str, noun: str = "key", valid_as: str = ""
) -> ConfigError:
    """One line for keys a mapping does not have: the closest valid key, then all of them."""
    keys, valid = [str(k) for k in keys], sorted(valid)
    names = ", ".join(f"`{k}`" for k in keys)
    text = f"unknown {noun}{'s' if len(keys) > 1 else ''} {names} in {where}"
    for key in keys:
        close = difflib.get_close_matches(key, valid, n=1)
        if close:
            text += f"; did you mean `{close[0]}`" + (f" for `{key}`" if len(keys) > 1 else "")
            text += "?"
            break
    return ConfigError(f"{text} ({valid_as or 'valid keys'}: {', '.join(valid)})")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig(Strict):
    """Fields shared by every experiment: seeding and replicas."""

    seed: PerReplica[int] = 0
    """first seed; replica r uses seed + r for its data and initialisation (a list: each one's)"""
    replicas: int = 1
    """seeds trained together as one stacked model (a tensor dimension, one optimizer step)"""

    objective: ClassVar[str] = "test_mse"
    _noun: ClassVar[str] = "config key"

    @classmethod
    def where(cls, path: str = "") -> str:
        return f"{cls.__module__.rsplit('.', 1)[-1]}'s Config"

    def __post_init__(self) -> None:
        require(self.replicas >= 1, "replicas", ">= 1", self.replicas)
        for name in self.per_replica_fields():
            value = getattr(self, name)
            if isinstance(value, tuple):
                require(
                    len(value) == self.replicas, name,
                    f"one value, or a list of one value per replica ({self.replicas})", list(value),
                )  # fmt: skip
        seeds = self.seeds
        require(min(seeds) >= 0, "seed", ">= 0 (NumPy and torch seeds are unsigned)", self.seed)

    @property
    def seeds(self) -> list[int]:
        if isinstance(self.seed, tuple):
            return list(self.seed)
        return [self.seed + r for r in range(self.replicas)]

    def each(self, name: str) -> tuple[Any, ...]:
        """A per-replica field's value for every replica (a shared value repeated)."""
        if name == "seed":
            return tuple(self.seeds)
        value = getattr(self, name)
        return value if isinstance(value, tuple) else (value,) * self.replicas

    @classmethod
    def per_replica_fields(cls) -> tuple[str, ...]:
        """The fields declared `PerReplica[...]`: those that may differ between replicas."""
        hints = typing.get_type_hints(cls)
        return tuple(f.name for f in dataclasses.fields(cls) if is_per_replica(hints[f.name]))

    def noise_floor(self, metric: str) -> float | None:
        """The lowest value a metric can take in expectation (label noise), where it is known."""
        return None

    def metrics(self) -> dict[str, Any]:
        """What a run with this config reports: metric name -> `trainables.report.Metric`.

        Declared, so that a spec naming a metric the experiment never reports fails before any
        compute; `tests/trainables/test_registry.py` checks every declaration against a real run.
        """
        raise NotImplementedError(f"{type(self).__module__}.Config must declare its metrics()")

    @classmethod
    def describe(cls) -> dict[str, dict[str, Any]]:
        """Field name -> {type, default, doc}: what `smoothsweep experiments` prints."""
        docs = field_docs(cls)
        hints = typing.get_type_hints(cls)
        return {
            f.name: {
                "type": type_name(hints[f.name]),
                "default": f.default,
                "per_replica": is_per_replica(hints[f.name]),
                "doc": docs.get(f.name, ""),
            }
            for f in dataclasses.fields(cls)
        }


def is_per_replica(hint: Any) -> bool:
    """Whether a type hint is `PerReplica[X]`, i.e. X | tuple[X, ...]."""
    args = typing.get_args(hint) if typing.get_origin(hint) in (types.UnionType, Union) else ()
    return len(args) == 2 and typing.get_args(args[1]) == (args[0], Ellipsis)


def require(ok: bool, field: str, rule: str, value: Any) -> None:
    """Raise the Optuna-style message "`field` must be rule, but got value"."""
    if not ok:
        raise ConfigError(f"must be {rule}, but got {value!r}", field)


def coerce(name: str, value: Any, hint: Any) -> Any:
    """Check (and where lossless, convert) one value against its type hint; `name` is its path."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin is Literal:
        choices = typing.get_args(hint)
        require(value in choices, name, f"one of {list(choices)}", value)
        return value
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(name, value, arg)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is tuple:
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        require(isinstance(value, (list, tuple)), name, "a list", value)
        return tuple(coerce(name, v, item) for v in value)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        require(isinstance(value, list), name, "a list", value)
        return [coerce(name, v, item) for v in value]
    if origin is dict:
        key_type, item = typing.get_args(hint) or (str, Any)
        require(isinstance(value, Mapping), name, "a mapping", value)
        for key in value:
            if not isinstance(key, key_type):
                raise ConfigError(f"must be a mapping with string keys, but got key {key!r}", name)
        return {k: coerce(_join(name, k), v, item) for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, Strict):
        require(isinstance(value, Mapping), name, "a mapping", value)
        return hint.from_mapping(value, name)
    if hint is bool:
        require(isinstance(value, bool), name, "true or false", value)
        return value
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # YAML writes 1e3 as a float
            ok = True
        require(ok, name, "an integer", value)
        if not -INT64 <= value < INT64:  # its repr may be thousands of digits: say its size
            raise ConfigError(f"must be an integer within 64 bits, but got a "
                              f"{value.bit_length()}-bit integer", name)  # fmt: skip
        return value
    if hint is float:
        if isinstance(value, str):
            value = _float_literal(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        require(ok, name, "a number", value)
        require(math.isfinite(float(value)), name, "a finite number", value)
        return float(value)
    if hint is str:
        require(isinstance(value, str), name, "a string", value)
        return value
    raise TypeError(f"unsupported config type {hint!r} for field {name!r}")


def _float_literal(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def type_name(hint: Any) -> str:
    if is_per_replica(hint):
        return f"{type_name(typing.get_args(hint)[0])} (or one per replica)"
    if typing.get_origin(hint) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def field_docs(cls: type) -> dict[str, str]:
    """The string literal that follows each field in the class body (PEP 257 attribute docs)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for stmt, nxt in zip(body, body[1:]):
            is_doc = isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and is_doc:
                docs[stmt.target.id] = str(nxt.value.value)
    return docs


def parse_override(text: str) -> tuple[str, Any]:
    """Parse a `--set key=value` override; the value is read as YAML (1e-3, true, [1, 2])."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"`--set` must look like key=value, but got {text!r}")
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        value = _float_literal(value)  # `--set lr=1e-3` means a number
    return key.strip(), value
