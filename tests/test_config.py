import pytest

from cnnlab.config import available_presets, config_from_dict, load_config
from cnnlab.errors import CnnlabError
from cnnlab.recipe import learning_rate_schedule


def test_seed_preset_is_the_tutorial_recipe():
    config = load_config("seed")
    assert (config.train.learning_rate, config.train.batch_size, config.train.epochs) == (0.001, 32, 50)
    assert config.model == "cnn"
    assert config.cnn.conv_blocks == ((32, 32), (64, 64))
    assert config.cnn.dense_units == (512,)
    assert config.cnn.batch_norm is False
    assert config.data.val_size == 5000
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
        ({"train.epochs": 0}, "epochs must be positive"),
        ({"train.epochs": -3}, "epochs must be positive"),
        ({"train.batch_size": 0}, "batch size must be positive"),
        ({"train.learning_rate": 0.0}, "learning rate must be positive"),
        ({"train.learning_rate": -0.1}, "learning rate must be positive"),
        ({"data.val_size": -1}, "validation size"),
        ({"data.train_limit": 0}, "train limit must be positive"),
        ({"data.sha256": "abc"}, "64 hexadecimal digits"),
        ({"model": "resnet"}, "unknown model 'resnet'"),
        ({"cnn.conv_blocks": []}, "conv_blocks"),
        ({"cnn.conv_blocks": [[32]] * 6}, "at most 5 blocks"),
        ({"cnn.conv_dropout": 1.0}, "conv_dropout must be in [0, 1)"),
        ({"train.epochs": "ten"}, "must be an integer"),
        ({"train.epochs": 2.5}, "must be an integer"),
        ({"cnn.batch_norm": 1}, "must be true or false"),
        ({"train.nonsense": 1}, "unknown setting 'train.nonsense'"),
        ({"nonsense": 1}, "unknown setting 'nonsense'"),
        ({"train.optimizer": "rmsprop"}, "optimizer must be one of adam, sgd"),
        ({"train.precision": "float16"}, "precision must be one of auto, float32, bfloat16"),
        ({"train.lr_schedule": "cosine"}, "lr_schedule must be one of"),
        ({"train.momentum": 1.0}, "momentum must be in [0, 1)"),
        ({"train.label_smoothing": -0.1}, "label_smoothing must be in [0, 1)"),
        ({"train.final_lr_fraction": 1.5}, "final_lr_fraction must be in [0, 1]"),
        ({"train.steps_per_execution": 0}, "steps_per_execution must be at least 1"),
        ({"train.lookahead_every": -1}, "lookahead_every must be zero or positive"),
        ({"train.test_time_augmentation": 3}, "test_time_augmentation must be 0, 1 or 2"),
        ({"data.translate": 9}, "translate must be between 0 and 8"),
        ({"fastnet.whiten_patch": 0}, "whiten_patch must be between 1 and 4"),
        ({"fastnet.bias_lr_scale": 0}, "bias_lr_scale must be positive"),
        ({"fastnet.weight_decay": -1e-3}, "weight_decay must be zero or positive"),
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
        ("[train]\nepochs = 'many'\n", "'train.epochs' must be an integer"),
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
