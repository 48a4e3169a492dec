"""`Strict.from_mapping`: the one validation system of configs and specs, table-driven."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from trainables.config import ConfigError, Strict, require


@dataclass(frozen=True)
class Inner(Strict):
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        require(self.low < self.high, "high", f"> low ({self.low})", self.high)


@dataclass(frozen=True)
class Outer(Strict):
    name: str
    inner: Inner = field(default_factory=Inner)
    maybe: Inner | None = None
    table: dict[str, Inner] = field(default_factory=dict)
    values: list[int] = field(default_factory=list)
    anything: Any = None
    side: Literal["min", "max"] | None = None


GOOD = {"name": "x", "inner": {"low": "1e-3"}, "table": {"a": {"high": 2}}, "values": [1, 2.0]}

BAD = [
    ({"nme": "x"}, r"^unknown key `nme` in Outer; did you mean `name`\? \(valid keys: anything, "),
    ({}, r"^missing required key `name` in Outer$"),
    ({"name": 1}, r"^`name` must be a string, but got 1$"),
    ({"name": "x", "inner": 3}, r"^`inner` must be a mapping, but got 3$"),
    ({"name": "x", "inner": {"hihg": 2}}, r"^unknown key `hihg` in `inner`; did you mean `high`"),
    ({"name": "x", "inner": {"high": -1}}, r"^`inner.high` must be > low \(0.0\), but got -1.0$"),
    ({"name": "x", "maybe": {"low": True}}, r"^`maybe.low` must be a number, but got True$"),
    ({"name": "x", "table": {"a": {"low": 5}}}, r"^`table.a.high` must be > low \(5.0\)"),
    (
        {"name": "x", "table": {1: {}}},
        r"^`table` must be a mapping with string keys, but got key",
    ),
    ({"name": "x", "values": [1, 2.5]}, r"^`values` must be an integer, but got 2.5$"),
    ({"name": "x", "values": (1,)}, r"^`values` must be a list, but got \(1,\)$"),
    ({"name": "x", "values": [2**70]}, r"^`values` must be an integer within 64 bits, but got a "),
    ({"name": "x", "side": "mid"}, r"^`side` must be one of \['min', 'max'\], but got 'mid'$"),
]


def test_good_values_are_converted_where_lossless():
    out = Outer.from_mapping({**GOOD, "anything": {"kept": [1]}})
    assert out.inner == Inner(0.001, 1.0) and out.table == {"a": Inner(0.0, 2.0)}
    assert out.values == [1, 2] and isinstance(out.values[1], int)
    assert out.anything == {"kept": [1]} and out.maybe is None and out.side is None


@pytest.mark.parametrize("values,message", BAD, ids=[m for _, m in BAD])
def test_bad_values_fail_in_one_line_naming_the_dotted_path(values, message):
    with pytest.raises(ConfigError, match=message) as info:
        Outer.from_mapping(values)
    assert "\n" not in str(info.value)


def test_errors_from_a_nested_post_init_keep_their_path_when_raised_again():
    with pytest.raises(ConfigError) as info:
        Outer.from_mapping({"name": "x", "inner": {"high": -1}}, "spec.part")
    assert str(info.value) == "`spec.part.inner.high` must be > low (0.0), but got -1.0"
    assert str(ConfigError("`a < b` must hold").at("x.y")) == "`x.y`: `a < b` must hold"
