"""What the command line tells a new user: each command's description and examples, the presets, a resolved
configuration printed as a preset file and read back, and flags named after the settings they set."""

import shlex
import tomllib

import pytest

from cnnlab.cli import COMMANDS, build_parser, main
from cnnlab.config import available_presets, load_config, to_toml
from conftest import run_cnnlab

EXAMPLES = [example for _, examples in COMMANDS.values() for example in examples]


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_in_the_help_parses(example):
    words = shlex.split(example)
    assert words[0] == "cnnlab"
    args = build_parser().parse_args(words[1:])
    assert callable(args.handler)


@pytest.mark.parametrize("command", [["train"], ["compare"], ["report"], ["evaluate"], ["predict"], ["export"],
                                     ["serve"], ["data", "info"], ["devices"], ["bench"], ["presets"]])
def test_every_command_help_has_its_description_and_examples(capsys, command):
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    description, examples = COMMANDS[command[-1]]
    assert " ".join(description.split())[:60] in shown and "examples:" in shown
    assert all(example in shown for example in examples)


def printed_config(*args) -> str:
    done = run_cnnlab("train", *args, "--print-config")
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("preset", available_presets())
def test_print_config_is_a_preset_that_reads_back_to_the_same_settings(tmp_path, preset):
    printed = printed_config("--preset", preset, "--epochs", "3", "--precision", "float32", "--set",
                             "cnn.conv_blocks=[[8], [16, 16]]", "--set", "description=\"a \\\"quoted\\\" é\"")
    path = tmp_path / "mine.toml"
    path.write_text(printed, encoding="utf-8")
    expected = load_config(preset, {"train.epochs": 3, "train.precision": "float32",
                                    "cnn.conv_blocks": [[8], [16, 16]], "description": 'a "quoted" é'})
    assert load_config(str(path)).to_dict() == {**expected.to_dict(), "preset": "mine"}
    assert printed_config("--preset", str(path)) == printed  # and prints the same again


def test_train_without_a_preset_is_the_quick_preset():
    assert printed_config() == to_toml(load_config("quick"))


def test_flags_named_after_their_settings_and_their_older_names_set_the_same_value():
    parse = build_parser().parse_args
    assert getattr(parse(["train", "--learning-rate", "0.01"]), "train.learning_rate") == 0.01
    assert getattr(parse(["train", "--lr", "0.01"]), "train.learning_rate") == 0.01
    assert getattr(parse(["train", "--precision", "bfloat16"]), "train.precision") == "bfloat16"


@pytest.mark.parametrize("flag", ["--backbone-size", "--vgg16-image-size", "--vgg16-size"])
def test_the_backbone_flags_set_the_section_of_the_backbone_trained(flag):
    lite = tomllib.loads(printed_config("--model", "efficientnet_lite0", "--weights", "none", flag, "128"))
    assert lite["efficientnet_lite0"]["image_size"] == 128 and lite["efficientnet_lite0"]["weights"] == "none"
    assert lite.get("vgg16", {}).get("image_size", 32) == 32  # another backbone's section keeps its value
    vgg = tomllib.loads(printed_config("--model", "vgg16", flag, "64"))
    assert vgg["vgg16"]["image_size"] == 64


def test_the_backbone_flags_on_a_model_without_one_are_refused_in_one_line():
    done = run_cnnlab("train", "--model", "cnn", "--weights", "none", "--print-config")
    assert done.returncode != 0 and done.stderr.strip().splitlines() == [
        "cnnlab: error: --weights applies to a pretrained backbone, and model cnn has none"]


def test_presets_lists_each_preset_with_its_model_and_epochs():
    done = run_cnnlab("presets")
    assert done.returncode == 0, done.stderr
    for name in available_presets():
        config = load_config(name)
        assert f"{name}: {config.model}, {config.train.epochs} epochs" in done.stdout
