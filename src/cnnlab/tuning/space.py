"""A search space: which settings a search tries, over what values, read from a TOML file and checked whole before
anything trains.

Each entry names a setting as `--set` does (`train.learning_rate`, or a bare `learning_rate` where one section alone
has it; TOML's own tables work too: `[train]` then `learning_rate = ...`) and gives it one distribution:

    train.learning_rate = {log_uniform = [1e-4, 1e-2]}
    cnn.batch_norm = {choice = [true, false]}
    train.epochs = {int = [4, 12]}
    cnn.dense_dropout = {uniform = [0.0, 0.6]}

Every end of a range and every choice is checked against the setting's own rules, so a space that names an unknown
setting, an empty range, a log range that reaches 0 or a value the setting refuses is one line before any trial.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.common.errors import CnnlabError
from cnnlab.config import SECTIONS, TOP_LEVEL, RunConfig, read_toml_file, toml_value, with_overrides

DISTRIBUTIONS = ("log_uniform", "uniform", "int", "choice")
# What makes trials comparable: the images they train and are scored on, and their seed. A search holds these fixed.
HELD_FIXED = ("data.source", "data.sha256", "data.val_size", "data.test_size", "data.train_limit", "data.test_limit",
              "train.seed")
EXAMPLE = "{log_uniform = [1e-4, 1e-2]}"


@dataclass(frozen=True)
class Dimension:
    """One setting searched: its dotted name, its distribution, and the distribution's range (low, high) or
    choices."""

    key: str
    distribution: str
    values: tuple

    def suggest(self, trial) -> Any:
        """The value an Optuna trial draws for this setting."""
        if self.distribution == "choice":
            # Optuna's categories are scalars: a list choice (cnn.conv_blocks) goes in as its TOML text.
            shown = [toml_value(value) if isinstance(value, list) else value for value in self.values]
            drawn = trial.suggest_categorical(self.key, shown)
            return self.values[shown.index(drawn)]
        if self.distribution == "int":
            return trial.suggest_int(self.key, *self.values)
        return trial.suggest_float(self.key, *self.values, log=self.distribution == "log_uniform")

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "distribution": self.distribution, "values": list(self.values)}

    def __str__(self) -> str:
        if self.distribution == "choice":
            return f"one of {', '.join(map(toml_value, self.values))}"
        low, high = self.values
        return f"{self.distribution.replace('_', '-')} in [{low:g}, {high:g}]"


def read_space(path: Path, config: RunConfig) -> list[Dimension]:
    """The dimensions of the search space in `path`, each checked against `config` (the preset it searches)."""
    raw = read_toml_file(Path(path), "search space")
    dimensions = [_dimension(key, entry, config) for key, entry in _entries(raw)]
    if not dimensions:
        raise CnnlabError(f"search space {path} names no settings (write lines such as "
                          f"train.learning_rate = {EXAMPLE})")
    keys = [dimension.key for dimension in dimensions]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise CnnlabError(f"search space: {', '.join(twice)} is given more than once")
    return dimensions


def space_from_dicts(entries: list[dict]) -> list[Dimension]:
    """Dimensions as `Dimension.to_dict` wrote them (a search's plan file)."""
    return [Dimension(entry["key"], entry["distribution"], tuple(entry["values"])) for entry in entries]


def _entries(table: dict, prefix: str = ""):
    """(dotted key, distribution table) of each entry; nested tables ([train], or train.x = ... in TOML) are walked."""
    for key, value in table.items():
        name = prefix + key
        if isinstance(value, dict) and value and all(isinstance(inner, list) for inner in value.values()):
            yield name, value  # a distribution: its arguments are always lists
        elif isinstance(value, dict) and value:
            yield from _entries(value, name + ".")
        else:
            raise CnnlabError(f"search space: {name} must be a distribution such as {EXAMPLE}, got {value!r:.60}")


def _dimension(key: str, entry: dict, config: RunConfig) -> Dimension:
    key = _setting_name(key)
    if len(entry) != 1 or next(iter(entry)) not in DISTRIBUTIONS:
        raise CnnlabError(f"search space: {key} needs exactly one of {', '.join(DISTRIBUTIONS)}, got "
                          f"{', '.join(map(str, entry))}")
    (distribution, values), = entry.items()
    if key in HELD_FIXED:
        raise CnnlabError(f"search space: {key} is held fixed in a search (every trial trains and is scored on the "
                          "same images, with the same seed); set it with the command's options instead")
    dimension = Dimension(key, distribution, tuple(_checked_values(key, distribution, values)))
    for value in (*dimension.values, *_inside(dimension)):  # each end, each choice, a value between: all accepted
        try:
            with_overrides(config, {key: value})
        except CnnlabError as exc:
            raise CnnlabError(f"search space: {key} = {toml_value(value)} is refused: "
                              f"{str(exc).removeprefix('config: ')}") from None
    return dimension


def _inside(dimension: Dimension) -> tuple:
    """A value a float range draws between its ends (where an integer setting would refuse it); none otherwise."""
    if dimension.distribution not in ("uniform", "log_uniform"):
        return ()
    low, high = map(float, dimension.values)
    return (math.sqrt(low * high) if dimension.distribution == "log_uniform" else (low + high) / 2 + 1e-3 * (high - low),)


def _setting_name(key: str) -> str:
    """The dotted name of a setting: as given, or for a bare name the one section that has it."""
    if "." in key or key in TOP_LEVEL:
        return key
    sections = [section for section, cls in SECTIONS.items() if key in typing.get_type_hints(cls)]
    if len(sections) == 1:
        return f"{sections[0]}.{key}"
    if not sections:
        raise CnnlabError(f"search space: unknown setting {key!r:.60}")
    raise CnnlabError(f"search space: {key} is a setting of {', '.join(sections)}: write "
                      f"{' or '.join(f'{section}.{key}' for section in sections)}")


def _checked_values(key: str, distribution: str, values: Any) -> list:
    if distribution == "choice":
        if not isinstance(values, list) or not values:
            raise CnnlabError(f"search space: {key} choice must be a non-empty list of values")
        if len({toml_value(value) for value in values}) != len(values):
            raise CnnlabError(f"search space: {key} choice lists a value twice")
        return values
    number = int if distribution == "int" else (int, float)
    if not (isinstance(values, list) and len(values) == 2
            and all(isinstance(value, number) and not isinstance(value, bool) for value in values)):
        kind = "integers" if distribution == "int" else "numbers"
        raise CnnlabError(f"search space: {key} {distribution} must be a range of two {kind} [low, high]")
    low, high = values
    if not all(map(math.isfinite, values)):
        raise CnnlabError(f"search space: {key} {distribution} range must be finite")
    if not low < high:
        raise CnnlabError(f"search space: {key} {distribution} range [{low}, {high}] is empty (its low end must be "
                          "below its high end)")
    if distribution == "log_uniform" and low <= 0:
        raise CnnlabError(f"search space: {key} log_uniform range [{low}, {high}] must lie above 0 (a log scale "
                          "has no 0 or negative values)")
    return values
