import dataclasses
import json
import math
import re
import types
import typing

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from cnnlab.common.errors import CnnlabError
from cnnlab.config import RANGES, SECTIONS, available_presets, config_from_dict, load_config, parse_overrides
from cnnlab.models import KINDS
from cnnlab.models.recipe import learning_rate_schedule


def test_seed_preset_is_the_tutorial_recipe():
    config = load_config("seed")
    assert (config.train.learning_rate, config.train.batch_size, config.train.epochs) == (0.001, 32, 50)
    assert config.model == "cnn"
    assert config.cnn.conv_blocks == ((32, 32), (64, 64))
    assert config.cnn.dense_units == (512,)
    assert config.cnn.batch_norm is False
    assert config.data.val_size == 0.1
    assert "seed" in available_presets()


def test_overrides_replace_preset_values_with_checked_types():
    config = load_config("seed", {"train.epochs": 3, "train.learning_rate": 1, "cnn.conv_blocks": [[8], [16, 16]]})
    assert config.train.epochs == 3
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)
    assert config.cnn.conv_blocks == ((8,), (16, 16))
    assert config.train.batch_size == 32  # untouched values keep the preset's


def test_resolved_config_round_trips_through_its_dict():
    config = load_config("seed", {"data.train_limit": 100, "data.source": "/tmp/x.tar.gz"})
    assert config_from_dict(config.to_dict()) == config


def test_preset_file_path(tmp_path):
    preset = tmp_path / "mine.toml"
    preset.write_text('[train]\nepochs = 2\nbatch_size = 8\n')
    config = load_config(str(preset))
    assert config.preset == "mine" and config.train.epochs == 2 and config.train.batch_size == 8


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"train.epochs": 0}, "train.epochs must be between 1 and 10,000, got 0"),
        ({"train.epochs": -3}, "train.epochs must be between 1 and 10,000, got -3"),
        ({"train.batch_size": 0}, "train.batch_size must be between 1 and 65,536"),
        ({"train.learning_rate": 0.0}, "train.learning_rate must be in (0, 1e+10], got 0.0"),
        ({"train.learning_rate": -0.1}, "train.learning_rate must be in (0, 1e+10]"),
        ({"data.val_size": -1}, "data.val_size must be between 0 and 1,000,000"),
        ({"data.train_limit": 0}, "data.train_limit must be between 1 and 1,000,000"),
        ({"data.sha256": "abc"}, "data.sha256 must be 64 hexadecimal digits"),
        ({"model": "resnet"}, f"model must be one of {', '.join(KINDS)}, got 'resnet'"),
        ({"cnn.conv_blocks": []}, "cnn.conv_blocks must have between 1 and 5 entries, got 0"),
        ({"cnn.conv_blocks": [[32]] * 6}, "cnn.conv_blocks must have between 1 and 5 entries, got 6"),
        ({"cnn.conv_dropout": 1.0}, "cnn.conv_dropout must be in [0, 1), got 1.0"),
        ({"train.epochs": "ten"}, "train.epochs must be an integer, got 'ten'"),
        ({"train.epochs": 2.5}, "must be an integer"),
        ({"cnn.batch_norm": 1}, "must be true or false"),
        ({"train.nonsense": 1}, "unknown setting 'train.nonsense'"),
        ({"nonsense": 1}, "unknown setting 'nonsense'"),
        ({"train.optimizer": "rmsprop"}, "optimizer must be one of adam, sgd"),
        ({"train.precision": "float64"}, "precision must be one of auto, float32, bfloat16, float16"),
        ({"train.devices": -1}, "train.devices must be between 0 and 4,096, got -1"),
        ({"train.devices": "all"}, "train.devices must be an integer, got 'all'"),
        ({"train.lr_schedule": "cosine"}, "lr_schedule must be one of"),
        ({"train.momentum": 1.0}, "momentum must be in [0, 1)"),
        ({"train.label_smoothing": -0.1}, "label_smoothing must be in [0, 1)"),
        ({"train.final_lr_fraction": 1.5}, "final_lr_fraction must be in [0, 1]"),
        ({"train.steps_per_execution": 0}, "train.steps_per_execution must be between 1 and 10,000"),
        ({"train.lookahead_every": -1}, "train.lookahead_every must be between 0 and 1,000,000,000"),
        ({"train.test_time_augmentation": 3}, "train.test_time_augmentation must be between 0 and 2"),
        ({"data.translate": 9}, "translate must be between 0 and 8"),
        ({"fastnet.whiten_patch": 0}, "whiten_patch must be between 1 and 4"),
        ({"fastnet.bias_lr_scale": 0}, "fastnet.bias_lr_scale must be in (0, 10000]"),
        ({"fastnet.weight_decay": -1e-3}, "fastnet.weight_decay must be in [0, 1], got -0.001"),
        ({"fastnet.batchnorm_momentum": 0}, "batchnorm_momentum must be in (0, 1]"),
        ({"fastnet.activation": "swish"}, "activation must be one of gelu, relu"),
    ],
)
def test_bad_values_are_refused_with_a_named_reason(overrides, message):
    with pytest.raises(CnnlabError, match=None) as caught:
        load_config("seed", overrides)
    assert message in str(caught.value)


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(CnnlabError, match=r"unknown preset 'nope' \(available: .*seed"):
        load_config("nope")


@pytest.mark.parametrize(
    "text, message",
    [
        ("[train]\nepochz = 3\n", "unknown key(s) in [train]: epochz"),
        ("[trian]\nepochs = 3\n", "unknown key(s) trian"),
        ("[train]\nepochs = 'many'\n", "train.epochs must be an integer"),
        ("train = 3\n", "[train] must be a table"),
        ("[train\n", "not valid TOML"),
    ],
)
def test_bad_preset_files_are_refused(tmp_path, text, message):
    preset = tmp_path / "bad.toml"
    preset.write_text(text)
    with pytest.raises(CnnlabError) as caught:
        load_config(str(preset))
    assert message in str(caught.value)


def test_missing_preset_file():
    with pytest.raises(CnnlabError, match="preset file not found"):
        load_config("/no/such/preset.toml")


@pytest.mark.parametrize("preset", ["fast", "scratch"])
def test_speed_presets_train_the_fast_net_from_scratch(preset):
    config = load_config(preset)
    assert config.model == "fastnet" and config.data.flip and config.data.translate > 0
    assert config.train.precision == "auto" and config.train.test_time_augmentation == 2


def test_scratch_preset_keeps_the_tutorial_budget():
    train = load_config("scratch").train
    assert (train.optimizer, train.learning_rate, train.batch_size, train.epochs) == ("adam", 0.001, 32, 50)
    # lr 0.001 is a ceiling: the schedule starts there and only ever falls.
    schedule = learning_rate_schedule(train, train.learning_rate, 1000)
    rates = [float(schedule(step)) for step in (0, 1, 500, 999, 1000)]
    assert train.lr_schedule == "warmup_linear"
    assert rates[0] == pytest.approx(0.001) and rates[-1] == pytest.approx(0.0, abs=1e-9)
    assert rates == sorted(rates, reverse=True)


def test_fast_preset_holds_out_no_validation_images():
    # The 50,000 training images all train; the test set is touched once, for the final number.
    assert load_config("fast").data.val_size == 0


# ---------------------------------------------------------------------------------------------------------------------
# every numeric setting has a finite range; values past it are refused with one line naming the key and the range


def numeric_settings() -> dict[str, tuple[type, int]]:
    """Each numeric setting: its number type and how many lists deep the numbers sit (0 for a plain number)."""
    found = {}
    for section, cls in SECTIONS.items():
        for key, hint in typing.get_type_hints(cls).items():
            if typing.get_origin(hint) in (typing.Union, types.UnionType):  # `int | None`
                (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
            depth = 0
            while typing.get_origin(hint) is tuple:
                hint, depth = typing.get_args(hint)[0], depth + 1
            if hint in (int, float):
                found[f"{section}.{key}"] = (hint, depth)
    return found


NUMERIC_SETTINGS = numeric_settings()
HUGE = 10**300  # a 301-digit integer: past every range, and past float() when raised to 10**400


def nested(value, depth: int):
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("name", sorted(NUMERIC_SETTINGS))
def test_every_numeric_setting_refuses_what_is_past_its_range(name):
    kind, depth = NUMERIC_SETTINGS[name]
    extremes = [HUGE, -HUGE, HUGE**2] + ([math.inf, -math.inf, math.nan] if kind is float else [])
    for value in extremes:
        with pytest.raises(CnnlabError) as caught:
            load_config("seed", {name: nested(value, depth)})
        message = str(caught.value)
        assert "\n" not in message and len(message) < 300
        assert re.search(rf"{re.escape(name)}( entries)? must be (between \S+ and \S+|in [(\[]\S+, \S+[)\]])", message)


def test_infinite_and_nan_values_are_named_in_the_refusal():
    with pytest.raises(CnnlabError, match=r"fastnet.weight_decay must be in \[0, 1\], got inf"):
        load_config("fast", {"fastnet.weight_decay": math.inf})
    with pytest.raises(CnnlabError, match=r"train.momentum must be in \[0, 1\), got nan"):
        load_config("seed", {"train.momentum": math.nan})
    with pytest.raises(CnnlabError, match=r"train.learning_rate must be in \(0, 1e\+10\], got <an integer of 401 digits>"):
        load_config("seed", {"train.learning_rate": 10**400})  # float() of it raised OverflowError


def test_every_range_is_finite_and_every_numeric_setting_has_one():
    assert set(RANGES) == set(NUMERIC_SETTINGS)
    assert all(math.isfinite(allowed.low) and math.isfinite(allowed.high) for allowed in RANGES.values())


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"cnn.dense_units": [64] * 17}, "cnn.dense_units must have between 0 and 16 entries, got 17"),
        ({"vgg16.head_units": [8] * 17}, "vgg16.head_units must have between 0 and 16 entries, got 17"),
        ({"cnn.conv_blocks": [[8] * 17]}, "each of cnn.conv_blocks must hold between 1 and 16 filter counts"),
        ({"cnn.conv_blocks": [[8], []]}, "each of cnn.conv_blocks must hold between 1 and 16 filter counts"),
        ({"fastnet.widths": [8] * 5}, "fastnet.widths must have between 1 and 4 entries, got 5"),
        ({"vgg16.image_size": 1025}, "vgg16.image_size must be between 32 and 1,024, got 1025"),
        ({"cnn.dense_units": [0]}, "cnn.dense_units entries must be between 1 and 2,147,483,647, got 0"),
    ],
)
def test_layer_lists_have_bounded_lengths_and_entries(overrides, message):
    with pytest.raises(CnnlabError) as caught:
        load_config("seed", overrides)
    assert message in str(caught.value)


def test_values_edge_of_range_are_accepted():
    config = load_config("fast", {"fastnet.weight_decay": -0.0, "train.seed": 2**32 - 1, "vgg16.image_size": 1024,
                                  "train.learning_rate": 100, "cnn.dense_units": [2**31 - 1]})
    assert config.train.seed == 2**32 - 1 and config.fastnet.weight_decay == 0.0


def test_messages_show_long_and_multiline_values_briefly():
    with pytest.raises(CnnlabError) as caught:
        load_config("seed", {"train.optimizer": "adam\n" + "x" * 100_000, "model": "\x1b[2J"})
    message = str(caught.value)
    assert "\n" not in message and "\x1b" not in message and len(message) < 400
    assert "train.optimizer must be one of adam, sgd, muon, got 'adam\\nxxx" in message


def test_unknown_keys_are_shown_briefly(tmp_path):
    preset = tmp_path / "keys.toml"
    preset.write_text("[train]\n" + "".join(f'"bad\\nkey{index}" = 1\n' for index in range(40)))
    with pytest.raises(CnnlabError) as caught:
        load_config(str(preset))
    assert "\n" not in str(caught.value) and "'bad\\nkey0'" in str(caught.value) and "and 35 more" in str(caught.value)


# ---------------------------------------------------------------------------------------------------------------------
# --set KEY=VALUE


def test_set_values_are_read_as_toml_else_as_text():
    overrides = parse_overrides(["train.epochs=3", "cnn.dense_units=[8, 16]", "train.optimizer=sgd", "description=a b"])
    assert overrides == {"train.epochs": 3, "cnn.dense_units": [8, 16], "train.optimizer": "sgd", "description": "a b"}


@pytest.mark.parametrize(
    "item, message",
    [
        ("train.learning_rate=1e400", "train.learning_rate must be in (0, 1e+10], got inf"),
        ("train.learning_rate=nan", "train.learning_rate must be in (0, 1e+10], got nan"),
        ("train.epochs=1e400", "train.epochs must be an integer, got inf"),
        (f"data.train_limit={10**299}", "data.train_limit must be between 1 and 1,000,000, got <an integer of 300 digits>"),
        (f"data.val_size={10**299}", "data.val_size must be between 0 and 1,000,000, got 1e+299"),
        (f"train.seed={10**299}", "train.seed must be between 0 and 4,294,967,295"),
        (f"train.batch_size={10**299}", "train.batch_size must be between 1 and 65,536"),
        (f"train.save_every_steps={10**299}", "train.save_every_steps must be between 0 and 1,000,000,000"),
        (f"train.steps_per_execution={10**299}", "train.steps_per_execution must be between 1 and 10,000"),
        ("fastnet.weight_decay=inf", "fastnet.weight_decay must be in [0, 1], got inf"),
        ("cnn.dense_units=[1e400]", "cnn.dense_units must be an integer, got inf"),
        ("train.epochs=" + "9" * 5000, "--set train.epochs: a number has too many digits"),
        ("cnn.dense_units=" + "[" * 5000 + "]" * 5000, "--set cnn.dense_units: values are nested too deeply"),
        # A second line is not a second setting: the whole text is the value, and not a number.
        ('train.epochs=3\nmodel = "vgg16"', "train.epochs must be an integer, got '3\\nmodel = \"vgg16\"'"),
    ],
)
def test_set_values_past_any_range_are_refused_in_one_line(item, message):
    with pytest.raises(CnnlabError) as caught:
        load_config("seed", parse_overrides([item]))
    assert message in str(caught.value) and "\n" not in str(caught.value)


# ---------------------------------------------------------------------------------------------------------------------
# preset files and config.json


@pytest.mark.parametrize(
    "content, message",
    [
        (b"[train]\nepochs = " + b"9" * 5000 + b"\n", "a number has too many digits"),
        (b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", "values are nested too deeply"),
        (b"[train]\nepochs = 3 # \xff\n", "cannot read preset file"),
        (b"#" * (2**20 + 1), "is over 1,048,576 bytes: not a preset"),
        (b"description = 1979-05-27\n", "description must be a string, got datetime.date(1979, 5, 27)"),
    ],
)
def test_hostile_preset_files_are_refused_in_one_line(tmp_path, content, message):
    preset = tmp_path / "hostile.toml"
    preset.write_bytes(content)
    with pytest.raises(CnnlabError) as caught:
        load_config(str(preset))
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "raw, message",
    [
        ([1, 2], "a saved configuration must be a table of settings, got list"),
        ({"preset": 7}, "preset must be a string, got 7"),
        ({"train": {"epochs": 1e400}}, "train.epochs must be an integer, got inf"),
        ({"train": {"learning_rate": 10**400}}, "train.learning_rate must be in (0, 1e+10]"),
        ({"fastnet": {"widths": [64, 10**5000]}}, "fastnet.widths entries must be between 1 and 2,147,483,647, got <an integer of 5001 digits>"),
    ],
)
def test_bad_saved_configurations_are_refused(raw, message):
    with pytest.raises(CnnlabError) as caught:
        config_from_dict(raw)
    assert message in str(caught.value)


# ---------------------------------------------------------------------------------------------------------------------
# fuzzing: whatever the input, a checked RunConfig or a one-line CnnlabError, never another exception


def loaded_or_refused(load) -> None:
    """Run `load`: a config it returns must survive its JSON round trip unchanged (and so pass its checks again)."""
    try:
        config = load()
    except CnnlabError as exc:
        assert "\n" not in str(exc)
        event("refused")
        return
    assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config
    event("loaded")


def in_range(allowed, kind):
    if kind is int:
        return st.integers(allowed.low, allowed.high)
    return st.floats(allowed.low, allowed.high, exclude_min=allowed.low_open, exclude_max=allowed.high_open)


def plausible(name: str):
    """Values `name` may well accept: in its range, or one of its choices."""
    default = load_config("seed")
    section, _, key = name.rpartition(".")
    value = getattr(getattr(default, section) if section else default, key)
    if name in NUMERIC_SETTINGS:
        kind, depth = NUMERIC_SETTINGS[name]
        number = in_range(RANGES[name], kind)
        return [number, st.lists(number, min_size=1, max_size=4), st.lists(st.lists(number, min_size=1, max_size=3),
                                                                            min_size=1, max_size=5)][depth]
    choices = {"model": list(KINDS), "train.optimizer": ["adam", "sgd"], "vgg16.head_pooling": ["avg"],
               "train.lr_schedule": ["warmup_linear"], "train.precision": ["float32", "bfloat16", "float16"],
               "data.source": ["/tmp/cifar-10-python.tar.gz"], "data.sha256": ["a" * 64]}
    return st.sampled_from([choice for choice in [value, *choices.get(name, [])] if choice is not None])  # TOML has no null


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)  # surrogates cannot be written as UTF-8
SCALARS = (st.integers() | st.sampled_from([HUGE, -HUGE, HUGE**2, -(HUGE**2), 2**63, 2**31, -1, 0]) | st.floats() | TEXT | st.booleans()
           | st.sampled_from([-0.0, math.inf, -math.inf, math.nan]))
ANY_VALUE = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=3),
                         max_leaves=12)
SETTING_NAMES = ["model", "description", *(f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in dataclasses.fields(cls))]


def setting_value(name: str):
    return plausible(name) | ANY_VALUE


def documents():
    """Dictionaries shaped like presets: the real sections and keys (and a few others), any values."""
    sections = {
        section: st.fixed_dictionaries({}, optional={f.name: setting_value(f"{section}.{f.name}") for f in dataclasses.fields(cls)})
        for section, cls in SECTIONS.items()
    }
    optional = {"model": setting_value("model"), "description": setting_value("description"),
                **{section: strategy | ANY_VALUE for section, strategy in sections.items()}}
    return st.fixed_dictionaries({}, optional=optional) | st.dictionaries(TEXT, ANY_VALUE, max_size=3)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # TOML writes inf, -inf, nan and exponents as Python does
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    return "{" + ", ".join(f"{json.dumps(key, ensure_ascii=False)} = {toml_value(item)}" for key, item in value.items()) + "}"


@given(content=st.text() | st.binary())
def test_fuzz_any_text_as_a_preset_file(tmp_path, content):
    preset = tmp_path / "fuzz.toml"
    if isinstance(content, str):
        preset.write_text(content, encoding="utf-8", errors="surrogatepass")
    else:
        preset.write_bytes(content)
    loaded_or_refused(lambda: load_config(str(preset)))


@given(document=documents())
def test_fuzz_preset_documents_of_real_keys_and_any_values(tmp_path, document):
    preset = tmp_path / "fuzz.toml"
    preset.write_text("".join(f"{json.dumps(key, ensure_ascii=False)} = {toml_value(value)}\n"
                              for key, value in document.items()), encoding="utf-8")
    loaded_or_refused(lambda: load_config(str(preset)))


@given(items=st.lists(st.one_of(
    st.tuples(st.sampled_from(SETTING_NAMES), ANY_VALUE.map(toml_value)).map("=".join),
    st.tuples(st.sampled_from(SETTING_NAMES), st.text()).map("=".join),
    st.tuples(st.sampled_from(SETTING_NAMES), st.integers(4290, 4310).map("9".__mul__)).map("=".join),  # int() limit
    st.text(),
), max_size=4))
def test_fuzz_set_arguments(items):
    loaded_or_refused(lambda: load_config("seed", parse_overrides(items)))


@given(raw=documents().map(lambda document: {"preset": "fuzz", **document}) | ANY_VALUE | st.none())
def test_fuzz_saved_configurations(raw):
    # Through JSON, as config.json holds it: tuples become lists, non-string keys strings.
    loaded_or_refused(lambda: config_from_dict(json.loads(json.dumps(raw))))


@given(overrides=st.fixed_dictionaries({}, optional={name: plausible(name) for name in SETTING_NAMES}))
def test_fuzz_every_accepted_configuration_round_trips(overrides):
    loaded_or_refused(lambda: load_config("seed", overrides))


def test_devices_default_to_one_and_zero_means_all():
    assert load_config("seed").train.devices == 1  # one device unless asked: results do not depend on the machine
    assert load_config("seed", {"train.devices": 0}).train.devices == 0
    assert load_config("seed", {"train.precision": "float16"}).train.precision == "float16"


@pytest.mark.parametrize("batch_size, evaluation_batch_size", [(32, 256), (256, 256), (96, 288), (1024, 1024)])
def test_evaluation_batches_are_at_least_256_and_a_multiple_of_the_training_batch(batch_size, evaluation_batch_size):
    assert load_config("seed", {"train.batch_size": batch_size}).train.evaluation_batch_size == evaluation_batch_size


@pytest.mark.parametrize("text", [
    "a." * 20_000 + "a = 1\n",  # one dotted key of 20,001 parts: 40 KB that took 1.6 GB to parse
    "[" + "a." * 100_000 + "a]\n",  # a table header of 100,001 parts: 37 s of CPU before its refusal
    'x = {' + '"q".' * 5_000 + 'b = 1}\n',  # quoted parts, in an inline table
])
def test_a_key_of_thousands_of_dotted_parts_is_refused_before_it_is_parsed(tmp_path, text):
    import tracemalloc

    preset = tmp_path / "long-key.toml"
    preset.write_text(text)
    tracemalloc.start()
    try:
        with pytest.raises(CnnlabError, match="a key or table name has more than 16 dotted parts") as caught:
            load_config(str(preset))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(caught.value) and peak < 20 * len(text) + (1 << 20)  # what reading the file costs


def test_dotted_keys_and_values_with_dots_within_the_limit_still_read(tmp_path):
    preset = tmp_path / "dots.toml"
    preset.write_text('description = "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s"\ntrain.epochs = 3\n[cnn]\nbatch_norm = true\n')
    config = load_config(str(preset))
    assert config.train.epochs == 3 and config.cnn.batch_norm and config.description.count(".") == 18
