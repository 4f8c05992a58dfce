"""The search space: each entry read as the setting and distribution it names, every bad space refused in one line."""

from __future__ import annotations

import optuna
import pytest

from cnnlab.common.errors import CnnlabError
from cnnlab.config import load_config
from cnnlab.tuning.space import Dimension, read_space, space_from_dicts


def space(tmp_path, text: str, preset: str = "quick") -> list[Dimension]:
    path = tmp_path / "space.toml"
    path.write_text(text)
    return read_space(path, load_config(preset))


def test_each_distribution_and_each_way_of_naming_a_setting(tmp_path):
    dimensions = space(tmp_path, """
learning_rate = {log_uniform = [1e-4, 1e-2]}
"cnn.batch_norm" = {choice = [true, false]}
[train]
epochs = {int = [2, 6]}
label_smoothing = {uniform = [0.0, 0.2]}
[cnn]
conv_blocks = {choice = [[[16], [32]], [[32, 32], [64, 64]]]}
""")
    assert [(d.key, d.distribution, d.values) for d in dimensions] == [
        ("train.learning_rate", "log_uniform", (1e-4, 1e-2)),
        ("cnn.batch_norm", "choice", (True, False)),
        ("train.epochs", "int", (2, 6)),
        ("train.label_smoothing", "uniform", (0.0, 0.2)),
        ("cnn.conv_blocks", "choice", ([[16], [32]], [[32, 32], [64, 64]])),
    ]
    assert str(dimensions[0]) == "log-uniform in [0.0001, 0.01]"
    assert space_from_dicts([d.to_dict() for d in dimensions]) == dimensions


def test_drawn_values_keep_to_their_distribution_and_lists_come_back_as_lists(tmp_path):
    dimensions = space(tmp_path, """
train.learning_rate = {log_uniform = [1e-4, 1e-2]}
train.epochs = {int = [2, 6]}
cnn.conv_blocks = {choice = [[[16], [32]], [[32, 32], [64, 64]]]}
""")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen_blocks = set()
    for _ in range(30):
        trial = study.ask()
        rate, epochs, blocks = (dimension.suggest(trial) for dimension in dimensions)
        assert 1e-4 <= rate <= 1e-2 and epochs in range(2, 7) and isinstance(epochs, int)
        assert blocks in ([[16], [32]], [[32, 32], [64, 64]])
        seen_blocks.add(str(blocks))
        study.tell(trial, 0.5)
    assert len(seen_blocks) == 2


@pytest.mark.parametrize("text, message", [
    ("train.learning_rate = {log_uniform = [1e-2, 1e-4]}", "train.learning_rate log_uniform range [0.01, 0.0001] is empty"),
    ("train.epochs = {int = [4, 4]}", "train.epochs int range [4, 4] is empty"),
    ("train.learning_rate = {log_uniform = [0, 1e-2]}", "must lie above 0"),
    ("train.learning_rate = {log_uniform = [-1e-3, 1e-2]}", "must lie above 0"),
    ("train.lerning_rate = {uniform = [0.1, 0.2]}", "train.lerning_rate = 0.1 is refused: unknown setting"),
    ("lerning_rate = {uniform = [0.1, 0.2]}", "unknown setting 'lerning_rate'"),
    ("weights = {choice = ['none']}", "weights is a setting of vgg16, "),
    ("train.learning_rate = {loguniform = [1e-4, 1e-2]}", "needs exactly one of log_uniform, uniform, int, choice"),
    ("train.learning_rate = 0.001", "must be a distribution such as"),
    ("train.learning_rate = {uniform = [0.1]}", "must be a range of two numbers"),
    ("train.epochs = {int = [1.5, 4]}", "must be a range of two integers"),
    ("train.epochs = {uniform = [2, 8]}", "train.epochs must be an integer"),
    ("train.momentum = {uniform = [0.5, 1.5]}", "train.momentum = 1.5 is refused: train.momentum must be"),
    ("cnn.batch_norm = {choice = []}", "choice must be a non-empty list"),
    ("cnn.batch_norm = {choice = [true, true]}", "lists a value twice"),
    ("cnn.batch_norm = {choice = [1, 0]}", "cnn.batch_norm must be true or false"),
    ("train.seed = {int = [0, 9]}", "train.seed is held fixed in a search"),
    ("data.val_size = {uniform = [0.1, 0.2]}", "data.val_size is held fixed"),
    ("", "names no settings"),
    ("train.learning_rate = {uniform = [0.1, 0.2]}\nlearning_rate = {uniform = [0.1, 0.2]}", "given more than once"),
    ("train.learning_rate = {uniform = [0.1, nan]}", "range must be finite"),
    ("train.learning_rate = {uniform", "is not valid TOML"),
])
def test_a_bad_space_is_one_line_naming_what_is_wrong(tmp_path, text, message):
    with pytest.raises(CnnlabError) as raised:
        space(tmp_path, text)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_missing_space_file_is_named(tmp_path):
    with pytest.raises(CnnlabError, match="search space file not found"):
        read_space(tmp_path / "nowhere.toml", load_config("quick"))
