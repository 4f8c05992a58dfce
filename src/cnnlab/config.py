"""One resolved configuration for a run: preset file, then command-line overrides, then validation.

A preset is a TOML file: `model = "cnn" | "vgg16" | "fastnet"` plus the sections of `RunConfig` ([data], [train],
[cnn], [vgg16], [fastnet]); one preset configures both the CNN and VGG16, so that `compare` trains them under the same
recipe. Presets shipped with cnnlab live in `cnnlab/presets/`; `--preset` also takes a path to a TOML file of one's own. Every value a preset sets can be
overridden from the command line, and the result is checked once here, so later stages can trust it.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError, first_line


@dataclass(frozen=True)
class DataConfig:
    source: str | None = None  # None: the official archive, downloaded and hash-checked; else a local path
    sha256: str | None = None  # a hash the local archive must match exactly (strict mode)
    val_size: int = 5000  # validation images carved from the training set, stratified by class
    train_limit: int | None = None  # train on the first N training images (after the validation split)
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
    head_pooling: str = "flatten"  # "flatten" or "avg" over VGG16's last feature map
    head_units: tuple[int, ...] = (256,)
    head_dropout: float = 0.5
    feature_cache: bool = True  # phase 1 on base features computed once per image, not once per epoch
    unfreeze_blocks: int = 1  # phase 2 trains VGG16's last N of 5 conv blocks; 0 skips phase 2
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
    precision: str = "auto"  # "auto": bfloat16 compute where the CPU does it natively, else float32
    steps_per_execution: int = 1  # training steps per call into the backend; more cuts Python overhead
    test_time_augmentation: int = 0  # 0: none, 1: average with the mirror image, 2: mirror and 1-pixel shifts


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
PRECISIONS = ("auto", "float32", "bfloat16")
MAX_CONV_BLOCKS = 5


def available_presets() -> list[str]:
    folder = resources.files("cnnlab") / "presets"
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


def config_from_dict(raw: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig from a run directory's config.json (the output of `RunConfig.to_dict`)."""
    raw = dict(raw)
    preset = raw.pop("preset", "unknown")
    config = _from_dict(raw, preset)
    _check_ranges(config)
    return config


def _read_preset(preset: str) -> dict[str, Any]:
    if preset.endswith(".toml"):
        path = Path(preset)
        if not path.is_file():
            raise CnnlabError(f"preset file not found: {preset}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CnnlabError(f"cannot read preset file {preset}: {first_line(exc)}") from None
    else:
        resource = resources.files("cnnlab") / "presets" / f"{preset}.toml"
        if not resource.is_file():
            raise CnnlabError(f"unknown preset '{preset}' (available: {', '.join(available_presets())})")
        text = resource.read_text(encoding="utf-8")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CnnlabError(f"preset '{preset}' is not valid TOML: {exc}") from None


def _from_dict(raw: dict[str, Any], preset: str) -> RunConfig:
    sections: dict[str, Any] = {key: _coerce(key, raw[key], kind) for key, kind in TOP_LEVEL.items() if key in raw}
    unknown = set(raw) - set(SECTIONS) - set(TOP_LEVEL)
    if unknown:
        known = ", ".join([*TOP_LEVEL, *(f"[{name}]" for name in SECTIONS)])
        raise CnnlabError(f"config: unknown key(s) {', '.join(sorted(unknown))} (known: {known})")
    for section, cls in SECTIONS.items():
        values = raw.get(section, {})
        if not isinstance(values, dict):
            raise CnnlabError(f"config: [{section}] must be a table")
        hints = typing.get_type_hints(cls)
        unknown = set(values) - set(hints)
        if unknown:
            raise CnnlabError(f"config: unknown key(s) in [{section}]: {', '.join(sorted(unknown))}")
        sections[section] = cls(**{key: _coerce(f"{section}.{key}", value, hints[key]) for key, value in values.items()})
    return RunConfig(preset=preset, **sections)


def _override(config: RunConfig, dotted: str, value: Any) -> RunConfig:
    if dotted in TOP_LEVEL:
        return dataclasses.replace(config, **{dotted: _coerce(dotted, value, TOP_LEVEL[dotted])})
    section, _, key = dotted.partition(".")
    cls = SECTIONS.get(section)
    hints = typing.get_type_hints(cls) if cls else {}
    if key not in hints:
        raise CnnlabError(f"config: unknown setting '{dotted}'")
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
            raise CnnlabError(f"config: '{name}' must be a list, got {value!r}")
        return tuple(_coerce(name, item, args[0]) for item in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise CnnlabError(f"config: '{name}' must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise CnnlabError(f"config: '{name}' must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CnnlabError(f"config: '{name}' must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise CnnlabError(f"config: '{name}' must be a string, got {value!r}")
        return value
    raise TypeError(f"no coercion for {hint}")  # a programming error: a field type this module does not know


def _check_ranges(config: RunConfig) -> None:
    problems = []
    train, cnn, data, vgg16 = config.train, config.cnn, config.data, config.vgg16
    if train.epochs <= 0:
        problems.append(f"epochs must be positive, got {train.epochs}")
    if train.batch_size <= 0:
        problems.append(f"batch size must be positive, got {train.batch_size}")
    if not (train.learning_rate > 0 and math.isfinite(train.learning_rate)):
        problems.append(f"learning rate must be positive, got {train.learning_rate}")
    if not 0 <= train.seed < 2**32:
        problems.append(f"seed must be between 0 and 2**32 - 1, got {train.seed}")
    if train.save_every_steps < 0:
        problems.append(f"save_every_steps must be zero or positive, got {train.save_every_steps}")
    if data.val_size < 0:
        problems.append(f"validation size must be zero or positive, got {data.val_size}")
    if data.train_limit is not None and data.train_limit <= 0:
        problems.append(f"train limit must be positive, got {data.train_limit}")
    if data.sha256 is not None and (len(data.sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in data.sha256)):
        problems.append("sha256 must be 64 hexadecimal digits")
    if config.model not in MODEL_NAMES:
        problems.append(f"unknown model '{config.model}' (available: {', '.join(MODEL_NAMES)})")
    if not cnn.conv_blocks or any(not block or min(block) <= 0 for block in cnn.conv_blocks):
        problems.append("conv_blocks must be a non-empty list of non-empty lists of positive filter counts")
    if len(cnn.conv_blocks) > MAX_CONV_BLOCKS:  # each block halves the image: 32 px allows five halvings
        problems.append(f"conv_blocks allows at most {MAX_CONV_BLOCKS} blocks, got {len(cnn.conv_blocks)}")
    if any(units <= 0 for units in cnn.dense_units):
        problems.append("dense_units must be positive")
    for name in ("conv_dropout", "dense_dropout"):
        rate = getattr(cnn, name)
        if not 0 <= rate < 1:
            problems.append(f"{name} must be in [0, 1), got {rate}")
    if vgg16.image_size < 32:
        problems.append(f"image size must be at least 32 (VGG16 needs 32x32 or more), got {vgg16.image_size}")
    if vgg16.head_pooling not in ("flatten", "avg"):
        problems.append(f"head_pooling must be 'flatten' or 'avg', got '{vgg16.head_pooling}'")
    if any(units <= 0 for units in vgg16.head_units):
        problems.append("head_units must be positive")
    if not 0 <= vgg16.head_dropout < 1:
        problems.append(f"head_dropout must be in [0, 1), got {vgg16.head_dropout}")
    if not 0 <= vgg16.unfreeze_blocks <= 5:
        problems.append(f"unfreeze_blocks must be between 0 and 5, got {vgg16.unfreeze_blocks}")
    if vgg16.finetune_epochs < 0:
        problems.append(f"finetune_epochs must be zero or positive, got {vgg16.finetune_epochs}")
    if not (vgg16.finetune_learning_rate > 0 and math.isfinite(vgg16.finetune_learning_rate)):
        problems.append(f"finetune_learning_rate must be positive, got {vgg16.finetune_learning_rate}")
    problems += _recipe_problems(config)
    if problems:
        raise CnnlabError("config: " + "; ".join(problems))


OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "warmup_linear")
MAX_TRANSLATE = 8
FASTNET_ACTIVATIONS = ("gelu", "relu")
TTA_LEVELS = (0, 1, 2)  # see TrainConfig.test_time_augmentation


def _recipe_problems(config: RunConfig) -> list[str]:
    """Range checks of the training recipe's finer settings and of the fast net."""
    problems = []
    train, data, fastnet = config.train, config.data, config.fastnet
    choices = (("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES), ("precision", PRECISIONS))
    for name, allowed in choices:
        if getattr(train, name) not in allowed:
            problems.append(f"{name} must be one of {', '.join(allowed)}, got '{getattr(train, name)}'")
    for name in ("momentum", "label_smoothing", "warmup_fraction"):
        if not 0 <= getattr(train, name) < 1:
            problems.append(f"{name} must be in [0, 1), got {getattr(train, name)}")
    for name in ("warmup_start", "final_lr_fraction"):
        if not 0 <= getattr(train, name) <= 1:
            problems.append(f"{name} must be in [0, 1], got {getattr(train, name)}")
    if train.lookahead_every < 0:
        problems.append(f"lookahead_every must be zero or positive, got {train.lookahead_every}")
    if train.steps_per_execution < 1:
        problems.append(f"steps_per_execution must be at least 1, got {train.steps_per_execution}")
    if train.test_time_augmentation not in TTA_LEVELS:
        problems.append(f"test_time_augmentation must be 0, 1 or 2, got {train.test_time_augmentation}")
    if not 0 <= data.translate <= MAX_TRANSLATE:
        problems.append(f"translate must be between 0 and {MAX_TRANSLATE} pixels, got {data.translate}")
    # 32 px images: the whitening patch trims a little, then each of the groups halves the image.
    if not 1 <= len(fastnet.widths) <= 4 or min(fastnet.widths, default=0) <= 0:
        problems.append("fastnet widths must be one to four positive filter counts")
    if not 1 <= fastnet.whiten_patch <= 4:
        problems.append(f"whiten_patch must be between 1 and 4, got {fastnet.whiten_patch}")
    if not 0 < fastnet.batchnorm_momentum <= 1:
        problems.append(f"batchnorm_momentum must be in (0, 1], got {fastnet.batchnorm_momentum}")
    for name in ("bias_lr_scale", "logit_scale"):
        if not (getattr(fastnet, name) > 0 and math.isfinite(getattr(fastnet, name))):
            problems.append(f"{name} must be positive, got {getattr(fastnet, name)}")
    if fastnet.activation not in FASTNET_ACTIVATIONS:
        problems.append(f"activation must be one of {', '.join(FASTNET_ACTIVATIONS)}, got '{fastnet.activation}'")
    if not fastnet.weight_decay >= 0:
        problems.append(f"weight_decay must be zero or positive, got {fastnet.weight_decay}")
    return problems
