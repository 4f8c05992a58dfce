"""One resolved configuration for a run: preset file, then command-line overrides, then validation.

A preset is a TOML file: `model = "<kind>"` plus the sections of `RunConfig`: [data], [train] and one section per
model kind, named after it (each kind declares its section in `models/<kind>/`; see `models.kind`). One preset
configures every kind, so that `compare` trains them under the same recipe. Presets shipped with cnnlab live in
`cnnlab/config/presets/`; `--preset` also takes a path to a TOML file of one's own. Every value a preset sets can be
overridden from the command line, and the result is checked once here, against the bounds, entry counts and choices
each setting declares with its default (`common.settings.setting`), so later stages can trust it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import reprlib
import tomllib
import types
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from cnnlab.common.errors import CnnlabError, first_line
from cnnlab.common.settings import (FRACTION, LEARNING_RATE, MAX_EPOCHS, MAX_IMAGES, MAX_STEPS, UNIT_INTERVAL, Range,
                                    declared, setting)
from cnnlab.models.registry import KINDS

PRECISIONS = ("auto", "float32", "bfloat16", "float16")
CONVOLUTION_GRADIENTS = ("auto", "convolutions", "backend")
OPTIMIZERS = ("adam", "sgd", "muon")
LR_SCHEDULES = ("constant", "warmup_linear")
RESIZE_MODES = ("crop", "pad", "stretch")
TTA_LEVELS = (0, 1, 2)  # see TrainConfig.test_time_augmentation
MAX_TRANSLATE = 8
MAX_DEVICES = 4096  # devices of one machine (or one process) that train together; far past any real machine
MAX_PRESET_BYTES = 1 << 20  # presets are a few hundred bytes: a bigger file is not one, and is never read whole
# Python's TOML parser keeps a table per part of a dotted key or table header: a 40 KB preset of one 20,000-part key
# took 1.6 GB, 200 KB was killed at 22 GB. A cnnlab key has two parts ("train.epochs"): more than this is refused
# before parsing.
MAX_KEY_PARTS = 16
_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""  # a bare, a basic (with escapes) or a literal key
_LONG_KEY = re.compile(rf"(?:^|[\[{{,])[ \t]*(?:{_KEY_PART}[ \t]*\.[ \t]*){{{MAX_KEY_PARTS}}}", re.MULTILINE)


@dataclass(frozen=True)
class DataConfig:
    # None: the official CIFAR-10 archive, downloaded and hash-checked; else a local path: a CIFAR-10 archive or
    # extracted folder, or a folder of images in class subfolders (optionally under train/ and test/)
    source: str | None = None
    sha256: str | None = None  # a hash the local archive must match exactly (strict mode)
    # Validation images carved from the training set, stratified by class: below 1 a fraction, from 1 a count
    val_size: float = setting(0.1, bounds=Range(0, MAX_IMAGES))
    # For an image folder without test/: the test images carved from it (stratified, seeded), as val_size
    test_size: float = setting(0.2, bounds=Range(0.0, MAX_IMAGES, low_open=True))
    # Images are resized to image_size x image_size; None: the source's own size (CIFAR-10: 32), 64 for folders.
    # A kind that needs more upscales inside its model.
    image_size: int | None = setting(None, bounds=Range(16, 1024))
    # For images of another shape: "crop" the centre square, "pad" to a square, or "stretch"
    resize: str = setting("crop", choices=RESIZE_MODES)
    strict: bool = False  # an unreadable file in an image folder is an error, instead of skipped with a warning
    # Train on the first N training images (after the validation split)
    train_limit: int | None = setting(None, bounds=Range(1, MAX_IMAGES))
    # Score on N test images, a class-stratified sample that is the same every time (quick runs; every command alike)
    test_limit: int | None = setting(None, bounds=Range(1, MAX_IMAGES))
    flip: bool = False  # mirror training images left-right, every other epoch each
    translate: int = setting(0, bounds=Range(0, MAX_TRANSLATE))  # shift training images by up to N pixels (reflected)


@dataclass(frozen=True)
class TrainConfig:
    learning_rate: float = setting(0.001, bounds=LEARNING_RATE)  # of the first phase, for a kind trained in phases
    batch_size: int = setting(32, bounds=Range(1, 65_536))
    epochs: int = setting(50, bounds=Range(1, MAX_EPOCHS))  # of the first phase, for a kind trained in phases
    seed: int = setting(0, bounds=Range(0, 2**32 - 1))
    tensorboard: bool = False
    # Resume state is saved every epoch, and also every N steps when N > 0
    save_every_steps: int = setting(0, bounds=Range(0, MAX_STEPS))
    # "sgd" has momentum; "muon" is sgd with Muon's orthogonalised steps for convolution kernels (models/recipe.py)
    optimizer: str = setting("adam", choices=OPTIMIZERS)
    momentum: float = setting(0.9, bounds=FRACTION)  # sgd and muon
    nesterov: bool = False  # sgd and muon
    # muon only: the kernels' step is this times the scheduled learning rate, with this momentum (Nesterov's)
    muon_lr_scale: float = setting(0.16, bounds=Range(0.0, 1_000.0, low_open=True))
    muon_momentum: float = setting(0.6, bounds=FRACTION)
    label_smoothing: float = setting(0.0, bounds=FRACTION)
    # Or "warmup_linear": up from lr*warmup_start, then linearly down to lr*final
    lr_schedule: str = setting("constant", choices=LR_SCHEDULES)
    warmup_fraction: float = setting(0.2, bounds=FRACTION)
    warmup_start: float = setting(0.2, bounds=UNIT_INTERVAL)
    final_lr_fraction: float = setting(0.07, bounds=UNIT_INTERVAL)
    # Every N steps, pull the weights towards their running average; 0 disables
    lookahead_every: int = setting(0, bounds=Range(0, MAX_STEPS))
    # "auto": chosen per device (backends.choose_precision): bfloat16 on CPUs that compute it natively and on GPUs of
    # compute capability 8.0 and up, float16 (loss-scaled) on GPUs from 7.0, else float32
    precision: str = setting("auto", choices=PRECISIONS)
    # How the 3x3 convolutions of cnnlab's own networks and of backbones measured faster with it compute their
    # gradients: "convolutions" (forward convolutions, models/convolution.py), "backend" (the backend's own kernels)
    # or "auto": where measured faster (Engine.convolution_gradients). The same numbers either way, up to rounding.
    convolution_gradients: str = setting("auto", choices=CONVOLUTION_GRADIENTS)
    # Data-parallel training over this many of the machine's devices; 0: all of them
    devices: int = setting(1, bounds=Range(0, MAX_DEVICES))
    # Training steps per call into the backend; more cuts Python overhead
    steps_per_execution: int = setting(1, bounds=Range(1, 10_000))
    # 0: none, 1: average with the mirror image, 2: mirror and 1-pixel shifts
    test_time_augmentation: int = setting(0, bounds=Range(min(TTA_LEVELS), max(TTA_LEVELS)))

    @property
    def evaluation_batch_size(self) -> int:
        """The batch for validation and test: no gradients are kept, so bigger batches cost little memory and save
        per-call overhead (benchmarks/levers.py). A multiple of the training batch, so it splits over the same
        devices."""
        return self.batch_size * -(-256 // self.batch_size)


def _to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


# The sections every run has, then one per model kind, named after it (its settings, declared by the kind).
SECTIONS: dict[str, type] = {"data": DataConfig, "train": TrainConfig,
                             **{name: kind.settings for name, kind in KINDS.items()}}
TOP_LEVEL = {"description": str, "model": str}
MODEL_NAMES = tuple(KINDS)

# A run's whole configuration: the preset's name, a description, the model to train, then every section (a preset
# configures every kind, so that `compare` trains them under the same recipe).
RunConfig = dataclasses.make_dataclass(
    "RunConfig",
    [("preset", str, dataclasses.field(default="seed")), ("description", str, dataclasses.field(default="")),
     ("model", str, dataclasses.field(default=MODEL_NAMES[0])),
     *((name, section, dataclasses.field(default_factory=section)) for name, section in SECTIONS.items())],
    frozen=True, namespace={"to_dict": _to_dict, "__module__": __name__},
)

RANGES = {name: rule for section, cls in SECTIONS.items() for name, rule in declared(cls, section, "bounds").items()}
LENGTHS = {name: rule for section, cls in SECTIONS.items() for name, rule in declared(cls, section, "entries").items()}
CHOICES = {"model": MODEL_NAMES,
           **{name: rule for section, cls in SECTIONS.items() for name, rule in declared(cls, section, "choices").items()}}


def available_presets() -> list[str]:
    folder = resources.files(__name__) / "presets"
    return sorted(entry.name.removesuffix(".toml") for entry in folder.iterdir() if entry.name.endswith(".toml"))


def load_config(preset: str, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Resolve a preset name (or TOML path) plus `{"section.key": value}` overrides into a checked RunConfig."""
    raw = _read_preset(preset)
    name = Path(preset).stem if preset.endswith(".toml") else preset
    return with_overrides(_from_dict(raw, name), overrides or {})


def with_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """`config` with `{"section.key": value}` overrides applied, the result checked as `load_config` checks it."""
    for dotted, value in overrides.items():
        config = _override(config, dotted, value)
    _check_ranges(config)
    return config


def config_from_dict(raw: Any) -> RunConfig:
    """Rebuild a RunConfig from a run directory's config.json (the output of `RunConfig.to_dict`)."""
    if not isinstance(raw, dict):
        raise CnnlabError(f"config: a saved configuration must be a table of settings, got {type(raw).__name__}")
    raw = dict(raw)
    preset = _coerce("preset", raw.pop("preset", "unknown"), str)
    config = _from_dict(raw, preset)
    _check_ranges(config)
    return config


def to_toml(config: RunConfig) -> str:
    """`config` as a preset file: what `load_config` reads back into the same settings (under the file's name).
    Unset values (None) are left out: a missing key is unset; so is the section of a kind other than the config's
    model while it holds its defaults."""
    settings = config.to_dict()
    lines = [f"{key} = {toml_value(settings[key])}" for key in TOP_LEVEL]
    for section in SECTIONS:
        if section in KINDS and section != config.model and getattr(config, section) == SECTIONS[section]():
            continue  # another kind's section at its defaults: left out, it reads back the same
        lines += ["", f"[{section}]"]
        lines += [f"{key} = {toml_value(value)}" for key, value in settings[section].items() if value is not None]
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    """One TOML value: a string (JSON's escapes are TOML's), a boolean, a number or a (nested) array of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # \\uXXXX surrogate pairs, which TOML refuses, never appear
    return repr(value)


def preset_measured() -> dict[str, list[str]]:
    """What each preset measured, and where, a line per result: generated from benchmarks/results by
    benchmarks/tables.py."""
    resource = resources.files(__name__) / "presets" / "measured.json"
    return json.loads(resource.read_text(encoding="utf-8")) if resource.is_file() else {}


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` arguments as `load_config` overrides: VALUE is read as one TOML value, else taken as text."""
    overrides = {}
    for item in items:
        key, equals, text = item.partition("=")
        if not equals or not key.strip():
            raise CnnlabError(f"--set expects KEY=VALUE, got {_brief(item)}")
        try:
            document = _parse_toml(f"value = {text}", f"--set {_name(key.strip())}")
        except tomllib.TOMLDecodeError:
            document = {"value": text}  # a bare word is taken as a string
        # Text that holds more than one value (`3\nmodel = "other"`) is not one value: it is kept whole, as text.
        overrides[key.strip()] = document["value"] if len(document) == 1 else text
    return overrides


def _read_preset(preset: str) -> dict[str, Any]:
    if preset.endswith(".toml"):
        return read_toml_file(Path(preset), "preset")
    resource = resources.files(__name__) / "presets" / f"{preset}.toml"
    if not resource.is_file():
        raise CnnlabError(f"unknown preset {_brief(preset)} (available: {', '.join(available_presets())})")
    return _toml_document(resource.read_text(encoding="utf-8"), f"preset {_brief(preset)}")


def read_toml_file(path: Path, what: str) -> dict[str, Any]:
    """A small TOML file of settings (`what`: "preset", "search space"), with one-line errors naming it."""
    if not path.is_file():
        raise CnnlabError(f"{what} file not found: {_name(str(path))}")
    try:
        if path.stat().st_size > MAX_PRESET_BYTES:
            raise CnnlabError(f"{what} file {_name(str(path))} is over {MAX_PRESET_BYTES:,} bytes: not a {what}")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CnnlabError(f"cannot read {what} file {_name(str(path))}: {first_line(exc)}") from None
    return _toml_document(text, f"{what} {_brief(str(path))}")


def _toml_document(text: str, what: str) -> dict[str, Any]:
    try:
        return _parse_toml(text, what)
    except tomllib.TOMLDecodeError as exc:
        raise CnnlabError(f"{what} is not valid TOML: {first_line(exc)}") from None


def _parse_toml(text: str, what: str) -> dict[str, Any]:
    """tomllib.loads; its failures other than a TOMLDecodeError become one-line CnnlabErrors about `what`."""
    if _LONG_KEY.search(text):
        raise CnnlabError(f"{what}: a key or table name has more than {MAX_KEY_PARTS} dotted parts")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise
    except ValueError:  # int() refuses over 4,300 digits (Python's guard against quadratic-time conversion)
        raise CnnlabError(f"{what}: a number has too many digits") from None
    except RecursionError:  # tomllib reads nested arrays and inline tables recursively
        raise CnnlabError(f"{what}: values are nested too deeply") from None


def _from_dict(raw: dict[str, Any], preset: str) -> RunConfig:
    sections: dict[str, Any] = {key: _coerce(key, raw[key], kind) for key, kind in TOP_LEVEL.items() if key in raw}
    unknown = set(raw) - set(SECTIONS) - set(TOP_LEVEL)
    if unknown:
        known = ", ".join([*TOP_LEVEL, *(f"[{name}]" for name in SECTIONS)])
        raise CnnlabError(f"config: unknown key(s) {_names(unknown)} (known: {known})")
    for section, cls in SECTIONS.items():
        values = raw.get(section, {})
        if not isinstance(values, dict):
            raise CnnlabError(f"config: [{section}] must be a table")
        hints = typing.get_type_hints(cls)
        unknown = set(values) - set(hints)
        if unknown:
            raise CnnlabError(f"config: unknown key(s) in [{section}]: {_names(unknown)}")
        sections[section] = cls(**{key: _coerce(f"{section}.{key}", value, hints[key]) for key, value in values.items()})
    return RunConfig(preset=preset, **sections)


def _override(config: RunConfig, dotted: str, value: Any) -> RunConfig:
    if dotted in TOP_LEVEL:
        return dataclasses.replace(config, **{dotted: _coerce(dotted, value, TOP_LEVEL[dotted])})
    section, _, key = dotted.partition(".")
    cls = SECTIONS.get(section)
    hints = typing.get_type_hints(cls) if cls else {}
    if key not in hints:
        raise CnnlabError(f"config: unknown setting {_brief(dotted)}")
    updated = dataclasses.replace(getattr(config, section), **{key: _coerce(dotted, value, hints[key])})
    return dataclasses.replace(config, **{section: updated})


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Check `value` against a field's type hint; ints are accepted where floats are expected."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _coerce(name, value, inner)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise CnnlabError(f"config: {name} must be a list, got {_brief(value)}")
        return tuple(_coerce(name, item, args[0]) for item in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise CnnlabError(f"config: {name} must be true or false, got {_brief(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise CnnlabError(f"config: {name} must be an integer, got {_brief(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CnnlabError(f"config: {name} must be a number, got {_brief(value)}")
        try:
            return float(value)
        except OverflowError:  # an integer beyond any float: out of every range, and float() cannot hold it
            raise CnnlabError(f"config: {name} must be {RANGES[name]}, got {_brief(value)}") from None
    if hint is str:
        if not isinstance(value, str):
            raise CnnlabError(f"config: {name} must be a string, got {_brief(value)}")
        return value
    raise TypeError(f"no coercion for {hint}")  # a programming error: a field type this module does not know


def _check_ranges(config: RunConfig) -> None:
    problems = [*_choice_problems(config), *_length_problems(config), *_range_problems(config)]
    sha256 = config.data.sha256
    if sha256 is not None and (len(sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha256)):
        problems.append("data.sha256 must be 64 hexadecimal digits")
    problems = problems or _kind_problems(config)  # with every value as its own rules allow: how the values combine
    if problems:
        raise CnnlabError("config: " + "; ".join(problems))


def _choice_problems(config: RunConfig) -> list[str]:
    problems = []
    for name, allowed in CHOICES.items():
        value = _setting(config, name)
        if value not in allowed:
            problems.append(f"{name} must be one of {', '.join(allowed)}, got {_brief(value)}")
    return problems


def _length_problems(config: RunConfig) -> list[str]:
    return [
        f"{name} must have {allowed} entries, got {len(_setting(config, name)):,}"
        for name, allowed in LENGTHS.items()
        if not allowed.holds(len(_setting(config, name)))
    ]


def _kind_problems(config: RunConfig) -> list[str]:
    """What each model kind checks of its own section beyond the declared rules (each value already keeps those)."""
    return [problem for name, kind in KINDS.items() for problem in kind.check_settings(getattr(config, name))]


def _range_problems(config: RunConfig) -> list[str]:
    problems = []
    for name, allowed in RANGES.items():
        value = _setting(config, name)
        outside = [number for number in _numbers(value) if not allowed.holds(number)]
        if outside:
            what = f"{name} entries" if isinstance(value, tuple) else name
            problems.append(f"{what} must be {allowed}, got {_brief(outside[0])}")
    return problems


def _setting(config: RunConfig, dotted: str) -> Any:
    value = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _numbers(value: Any) -> list[Any]:
    """The numbers of a setting: itself, none for an unset one, every entry of a (nested) list."""
    if value is None:
        return []
    if isinstance(value, tuple):
        return [number for item in value for number in _numbers(item)]
    return [value]


class _BriefRepr(reprlib.Repr):
    def repr_int(self, value: int, level: int) -> str:
        if value.bit_length() > 256:  # repr() refuses ints over 4,300 digits; nobody reads 78 digits anyway
            return f"<an integer of {math.floor(value.bit_length() * math.log10(2)) + 1} digits>"
        return super().repr_int(value, level)


_BRIEF = _BriefRepr()
_BRIEF.maxstring = _BRIEF.maxother = 60


def _brief(value: Any) -> str:
    """`value` as a message shows it: repr() cut short, on one line, for any value a user can write."""
    return _BRIEF.repr(value)


def _names(keys: set[Any]) -> str:
    shown = sorted(map(_name, keys))
    return ", ".join(shown[:5]) + (f" and {len(shown) - 5} more" if len(shown) > 5 else "")


def _name(key: Any) -> str:
    """A key as a message shows it: as written when it is short and printable, else like a value."""
    return key if isinstance(key, str) and key.isprintable() and len(key) <= 60 else _brief(key)
