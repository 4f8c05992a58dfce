"""One resolved configuration for a run: preset file, then command-line overrides, then validation.

A preset is a TOML file: `model = "cnn" | "vgg16" | "fastnet"` plus the sections of `RunConfig` ([data], [train],
[cnn], [vgg16], [fastnet]); one preset configures both the CNN and VGG16, so that `compare` trains them under the same
recipe. Presets shipped with cnnlab live in `cnnlab/presets/`; `--preset` also takes a path to a TOML file of one's own. Every value a preset sets can be
overridden from the command line, and the result is checked once here, so later stages can trust it.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cnnlab.common.errors import CnnlabError, first_line


@dataclass(frozen=True)
class DataConfig:
    # None: the official CIFAR-10 archive, downloaded and hash-checked; else a local path: a CIFAR-10 archive or
    # extracted folder, or a folder of images in class subfolders (optionally under train/ and test/)
    source: str | None = None
    sha256: str | None = None  # a hash the local archive must match exactly (strict mode)
    # Validation images carved from the training set, stratified by class: below 1 a fraction, from 1 a count
    val_size: float = 0.1
    # For an image folder without test/: the test images carved from it (stratified, seeded), as val_size
    test_size: float = 0.2
    # Images are resized to image_size x image_size; None: the source's own size (CIFAR-10: 32), 64 for folders
    image_size: int | None = None
    resize: str = "crop"  # for images of another shape: "crop" the centre square, "pad" to a square, or "stretch"
    strict: bool = False  # an unreadable file in an image folder is an error, instead of skipped with a warning
    train_limit: int | None = None  # train on the first N training images (after the validation split)
    # Score on N test images, a class-stratified sample that is the same every time (quick runs; every command alike)
    test_limit: int | None = None
    flip: bool = False  # mirror training images left-right, every other epoch each
    translate: int = 0  # shift training images by up to N pixels (reflected border)


@dataclass(frozen=True)
class CnnConfig:
    conv_blocks: tuple[tuple[int, ...], ...] = ((32, 32), (64, 64))  # filters of each conv, block by block
    batch_norm: bool = False
    conv_dropout: float = 0.25  # after each block's pooling; 0 disables
    dense_units: tuple[int, ...] = (512,)
    dense_dropout: float = 0.5  # after each dense layer; 0 disables


@dataclass(frozen=True)
class Vgg16Config:
    weights: str = "imagenet"  # "imagenet" (Keras download and cache), "none" (random init) or a local .h5 path
    image_size: int = 32  # images are upscaled to this inside the model; ImageNet features like larger inputs
    # The head sits on this conv block's output (1-5); the blocks above it are left out. A trunk's top block is its
    # most task-specific: for a trunk tuned on another task a lower block can transfer better (measure it).
    top_block: int = 5
    head_pooling: str = "flatten"  # "flatten" or "avg" over the top block's feature map
    # BatchNormalization on the head's input: frozen features differ in scale by orders of magnitude between trunks
    head_batch_norm: bool = False
    head_units: tuple[int, ...] = (256,)
    head_dropout: float = 0.5
    # The blocks frozen in both phases run once per image (and mirror image), not once per epoch; not with translate
    feature_cache: bool = True
    head_epochs: int | None = None  # phase 1, the head alone; None: train.epochs, as the CNN (the tutorial's recipe)
    unfreeze_blocks: int = 1  # phase 2 trains the last N conv blocks up to top_block; 0 skips phase 2
    finetune_epochs: int = 5
    finetune_learning_rate: float = 1e-5


@dataclass(frozen=True)
class FastnetConfig:
    widths: tuple[int, ...] = (64, 256, 256)  # filters of the three conv groups
    whiten_patch: int = 2  # size of the image patches the first layer whitens
    batchnorm_momentum: float = 0.6  # weight of each new batch in BatchNorm's running averages
    bias_lr_scale: float = 64.0  # BatchNorm shifts learn this many times faster than other weights
    weight_decay: float = 0.0  # each step adds weight_decay * kernel to the conv and dense kernels' gradients
    logit_scale: float = 1 / 9
    activation: str = "gelu"  # "gelu" or "relu": ReLU is much cheaper on CPUs without fast transcendental math


@dataclass(frozen=True)
class TrainConfig:
    learning_rate: float = 0.001  # for VGG16: phase 1, the head alone
    batch_size: int = 32
    epochs: int = 50  # for VGG16: phase 1
    seed: int = 0
    tensorboard: bool = False
    save_every_steps: int = 0  # resume state is saved every epoch, and also every N steps when N > 0
    optimizer: str = "adam"  # "adam" or "sgd" (with momentum)
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    label_smoothing: float = 0.0
    lr_schedule: str = "constant"  # or "warmup_linear": up from lr*warmup_start, then linearly down to lr*final
    warmup_fraction: float = 0.2
    warmup_start: float = 0.2
    final_lr_fraction: float = 0.07
    lookahead_every: int = 0  # every N steps, pull the weights towards their running average; 0 disables
    # "auto": chosen per device (backends.choose_precision): bfloat16 on CPUs that compute it natively and on GPUs of
    # compute capability 8.0 and up, float16 (loss-scaled) on GPUs from 7.0, else float32
    precision: str = "auto"
    devices: int = 1  # data-parallel training over this many of the machine's devices; 0: all of them
    steps_per_execution: int = 1  # training steps per call into the backend; more cuts Python overhead
    test_time_augmentation: int = 0  # 0: none, 1: average with the mirror image, 2: mirror and 1-pixel shifts

    @property
    def evaluation_batch_size(self) -> int:
        """The batch for validation and test: no gradients are kept, so bigger batches cost little memory and save
        per-call overhead (benchmarks/levers.py). A multiple of the training batch, so it splits over the same
        devices."""
        return self.batch_size * -(-256 // self.batch_size)


@dataclass(frozen=True)
class RunConfig:
    preset: str = "seed"
    description: str = ""
    model: str = "cnn"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cnn: CnnConfig = field(default_factory=CnnConfig)
    vgg16: Vgg16Config = field(default_factory=Vgg16Config)
    fastnet: FastnetConfig = field(default_factory=FastnetConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = {"data": DataConfig, "train": TrainConfig, "cnn": CnnConfig, "vgg16": Vgg16Config, "fastnet": FastnetConfig}
TOP_LEVEL = {"description": str, "model": str}
MODEL_NAMES = ("cnn", "vgg16", "fastnet")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "warmup_linear")
RESIZE_MODES = ("crop", "pad", "stretch")
HEAD_POOLINGS = ("flatten", "avg")
FASTNET_ACTIVATIONS = ("gelu", "relu")
TTA_LEVELS = (0, 1, 2)  # see TrainConfig.test_time_augmentation
MAX_CONV_BLOCKS = 5
MAX_TRANSLATE = 8
MAX_PRESET_BYTES = 1 << 20  # presets are a few hundred bytes: a bigger file is not one, and is never read whole


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


# Every numeric setting has upper bounds as well as lower ones: a value far past any real run (a 300-digit batch size,
# a learning rate of 1e400) would otherwise reach NumPy or Keras and overflow there, or allocate without end.
MAX_IMAGES = 1_000_000  # far above CIFAR-10's 50,000 training images; the data loader checks the real count
MAX_EPOCHS = 10_000
MAX_STEPS = 10**9
# Finite, so the memory estimate stays a number; that estimate refuses far narrower layers on any real machine.
MAX_LAYER_WIDTH = 2**31 - 1
MAX_LAYERS = 16  # convs in one block, dense layers in one head
MAX_DEVICES = 4096  # devices of one machine (or one process) that train together; far past any real machine
FRACTION = Range(0.0, 1.0, high_open=True)
UNIT_INTERVAL = Range(0.0, 1.0)
# Far past any useful rate, yet finite: a rate that makes training diverge on purpose (to see the NaN guard work)
# is still accepted.
LEARNING_RATE = Range(0.0, 1e10, low_open=True)
RANGES = {  # for a list setting: the range of each entry
    "data.val_size": Range(0, MAX_IMAGES),
    "data.test_size": Range(0.0, MAX_IMAGES, low_open=True),
    "data.image_size": Range(16, 1024),  # the CNN and the fast net work from 16 px up; VGG16 from 32
    "data.train_limit": Range(1, MAX_IMAGES),
    "data.test_limit": Range(1, MAX_IMAGES),
    "data.translate": Range(0, MAX_TRANSLATE),
    "train.learning_rate": LEARNING_RATE,
    "train.batch_size": Range(1, 65_536),
    "train.epochs": Range(1, MAX_EPOCHS),
    "train.seed": Range(0, 2**32 - 1),
    "train.save_every_steps": Range(0, MAX_STEPS),
    "train.momentum": FRACTION,
    "train.label_smoothing": FRACTION,
    "train.warmup_fraction": FRACTION,
    "train.warmup_start": UNIT_INTERVAL,
    "train.final_lr_fraction": UNIT_INTERVAL,
    "train.lookahead_every": Range(0, MAX_STEPS),
    "train.steps_per_execution": Range(1, 10_000),
    "train.devices": Range(0, MAX_DEVICES),
    "train.test_time_augmentation": Range(min(TTA_LEVELS), max(TTA_LEVELS)),
    "cnn.conv_blocks": Range(1, MAX_LAYER_WIDTH),
    "cnn.conv_dropout": FRACTION,
    "cnn.dense_units": Range(1, MAX_LAYER_WIDTH),
    "cnn.dense_dropout": FRACTION,
    "vgg16.image_size": Range(32, 1024),  # VGG16 needs 32x32 or more
    "vgg16.head_units": Range(1, MAX_LAYER_WIDTH),
    "vgg16.head_dropout": FRACTION,
    "vgg16.head_epochs": Range(1, MAX_EPOCHS),
    "vgg16.top_block": Range(1, 5),
    "vgg16.unfreeze_blocks": Range(0, 5),
    "vgg16.finetune_epochs": Range(0, MAX_EPOCHS),
    "vgg16.finetune_learning_rate": LEARNING_RATE,
    "fastnet.widths": Range(1, MAX_LAYER_WIDTH),
    "fastnet.whiten_patch": Range(1, 4),
    "fastnet.batchnorm_momentum": Range(0.0, 1.0, low_open=True),
    "fastnet.bias_lr_scale": Range(0.0, 10_000.0, low_open=True),
    "fastnet.weight_decay": UNIT_INTERVAL,
    "fastnet.logit_scale": Range(0.0, 100.0, low_open=True),
}
LENGTHS = {  # entries a list setting may hold
    "cnn.conv_blocks": Range(1, MAX_CONV_BLOCKS),  # each block halves the image: 32 px allows five halvings
    "cnn.dense_units": Range(0, MAX_LAYERS),
    "vgg16.head_units": Range(0, MAX_LAYERS),
    # 32 px images: the whitening patch trims a little, then each of the groups halves the image.
    "fastnet.widths": Range(1, 4),
}
CHOICES = {
    "model": MODEL_NAMES,
    "train.optimizer": OPTIMIZERS,
    "train.lr_schedule": LR_SCHEDULES,
    "train.precision": PRECISIONS,
    "vgg16.head_pooling": HEAD_POOLINGS,
    "data.resize": RESIZE_MODES,
    "fastnet.activation": FASTNET_ACTIVATIONS,
}


def available_presets() -> list[str]:
    folder = resources.files("cnnlab.config") / "presets"
    return sorted(entry.name.removesuffix(".toml") for entry in folder.iterdir() if entry.name.endswith(".toml"))


def load_config(preset: str, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Resolve a preset name (or TOML path) plus `{"section.key": value}` overrides into a checked RunConfig."""
    raw = _read_preset(preset)
    name = Path(preset).stem if preset.endswith(".toml") else preset
    config = _from_dict(raw, name)
    for dotted, value in (overrides or {}).items():
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
        # Text that holds more than one value (`3\nmodel = "vgg16"`) is not one value: it is kept whole, as text.
        overrides[key.strip()] = document["value"] if len(document) == 1 else text
    return overrides


def _read_preset(preset: str) -> dict[str, Any]:
    if preset.endswith(".toml"):
        path = Path(preset)
        if not path.is_file():
            raise CnnlabError(f"preset file not found: {_name(preset)}")
        try:
            if path.stat().st_size > MAX_PRESET_BYTES:
                raise CnnlabError(f"preset file {_name(preset)} is over {MAX_PRESET_BYTES:,} bytes: not a preset")
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CnnlabError(f"cannot read preset file {_name(preset)}: {first_line(exc)}") from None
    else:
        resource = resources.files("cnnlab.config") / "presets" / f"{preset}.toml"
        if not resource.is_file():
            raise CnnlabError(f"unknown preset {_brief(preset)} (available: {', '.join(available_presets())})")
        text = resource.read_text(encoding="utf-8")
    try:
        return _parse_toml(text, f"preset {_brief(preset)}")
    except tomllib.TOMLDecodeError as exc:
        raise CnnlabError(f"preset {_brief(preset)} is not valid TOML: {first_line(exc)}") from None


def _parse_toml(text: str, what: str) -> dict[str, Any]:
    """tomllib.loads; its failures other than a TOMLDecodeError become one-line CnnlabErrors about `what`."""
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
    if not problems and config.vgg16.unfreeze_blocks > config.vgg16.top_block:  # both in range: say how they clash
        problems.append(f"vgg16.unfreeze_blocks ({config.vgg16.unfreeze_blocks}) cannot exceed vgg16.top_block "
                        f"({config.vgg16.top_block}), the blocks the model keeps")
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
    problems = [
        f"{name} must have {allowed} entries, got {len(_setting(config, name)):,}"
        for name, allowed in LENGTHS.items()
        if not allowed.holds(len(_setting(config, name)))
    ]
    if not all(1 <= len(block) <= MAX_LAYERS for block in config.cnn.conv_blocks):
        problems.append(f"each of cnn.conv_blocks must hold between 1 and {MAX_LAYERS} filter counts")
    return problems


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
