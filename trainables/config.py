"""Typed experiment configs: strict `from_mapping`, like nanoGPT's overrides and cleanrl's Args.

Every experiment's `Config` is a frozen dataclass deriving from `ExperimentConfig`. A sweep passes
a plain dict; `from_mapping` rejects unknown keys and wrong types by name, so a typo in a spec fails
before any compute is spent. Field docstrings double as documentation (`smoothsweep experiments`).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, TypeVar

C = TypeVar("C", bound="ExperimentConfig")


class ConfigError(ValueError):
    """A config value that breaks a rule; the message names the field, the rule and the value."""


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Fields shared by every experiment: seeding and replicas."""

    seed: int = 0
    """first seed; replica r uses seed + r for its data and its initialisation"""
    replicas: int = 1
    """seeds trained together as one stacked model (a tensor dimension, one optimizer step)"""

    objective: ClassVar[str] = "test_mse"

    def __post_init__(self) -> None:
        require(self.replicas >= 1, "replicas", ">= 1", self.replicas)
        require(self.seed >= 0, "seed", ">= 0 (NumPy and torch seeds are unsigned)", self.seed)

    @property
    def seeds(self) -> list[int]:
        return [self.seed + r for r in range(self.replicas)]

    @classmethod
    def from_mapping(cls: type[C], values: Mapping[str, Any]) -> C:
        """Build a config from a plain mapping; unknown keys and wrong types fail by name."""
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ConfigError(
                f"unknown config key(s) {unknown} for {cls.__module__}.{cls.__name__}; "
                f"valid keys: {names}"
            )
        return cls(**{k: coerce(k, v, hints[k]) for k, v in values.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def describe(cls) -> dict[str, dict[str, Any]]:
        """Field name -> {type, default, doc}: what `smoothsweep experiments` prints."""
        docs = field_docs(cls)
        hints = typing.get_type_hints(cls)
        return {
            f.name: {
                "type": type_name(hints[f.name]),
                "default": f.default,
                "doc": docs.get(f.name, ""),
            }
            for f in dataclasses.fields(cls)
        }


def require(ok: bool, field: str, rule: str, value: Any) -> None:
    """Raise the Optuna-style message "`field` must be rule, but got value"."""
    if not ok:
        raise ConfigError(f"`{field}` must be {rule}, but got {value!r}")


def coerce(name: str, value: Any, hint: Any) -> Any:
    """Check (and where lossless, convert) one value against its type hint."""
    origin = typing.get_origin(hint)
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
    if hint is bool:
        require(isinstance(value, bool), name, "true or false", value)
        return value
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if isinstance(value, float) and value.is_integer():
            return int(value)  # YAML writes 1e3 as a float
        require(ok, name, "an integer", value)
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
