"""How a section of settings declares itself: each field with its default, the values it allows and why.

A section is a frozen dataclass whose fields are made by `setting`: `config` reads the bounds, entry counts and
choices from there to check every value, so a setting is declared once, where its default is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """The values a numeric setting allows; an open end excludes the bound itself."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def holds(self, value: float) -> bool:
        # Comparisons that NaN fails: NaN is refused along with everything out of range.
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        if isinstance(self.low, int) and isinstance(self.high, int) and not (self.low_open or self.high_open):
            return f"between {self.low:,} and {self.high:,}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


def setting(default: Any = dataclasses.MISSING, *, bounds: Range | None = None, entries: Range | None = None,
            choices: tuple | None = None) -> Any:
    """A field of a settings section: its `default`, the `bounds` a number (or each number of a list) must keep,
    how many `entries` a list may hold, and the `choices` a value must be one of."""
    return dataclasses.field(default=default, metadata={"bounds": bounds, "entries": entries, "choices": choices})


def declared(section: type, name: str, rule: str) -> dict[str, Any]:
    """{dotted name: rule} for each field of `section` (named `name`) that declares `rule` ("bounds", "entries" or
    "choices")."""
    return {f"{name}.{field.name}": field.metadata[rule] for field in dataclasses.fields(section)
            if field.metadata.get(rule) is not None}


# Every numeric setting has upper bounds as well as lower ones: a value far past any real run (a 300-digit batch size,
# a learning rate of 1e400) would otherwise reach NumPy or Keras and overflow there, or allocate without end.
MAX_IMAGES = 1_000_000  # far above CIFAR-10's 50,000 training images; the data loader checks the real count
MAX_EPOCHS = 10_000
MAX_STEPS = 10**9
# Finite, so the memory estimate stays a number; that estimate refuses far narrower layers on any real machine.
MAX_LAYER_WIDTH = 2**31 - 1
MAX_LAYERS = 16  # convs in one block, dense layers in one head
FRACTION = Range(0.0, 1.0, high_open=True)
UNIT_INTERVAL = Range(0.0, 1.0)
# Far past any useful rate, yet finite: a rate that makes training diverge on purpose (to see the NaN guard work)
# is still accepted.
LEARNING_RATE = Range(0.0, 1e10, low_open=True)


def flat_settings(table: dict, prefix: str = "") -> dict[str, object]:
    """{"train.learning_rate": 0.001, ...}: a nested table of settings (a configuration's dict) with dotted keys, as
    --set names them."""
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(flat_settings(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat
