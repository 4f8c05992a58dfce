import re

import pytest

from cnnlab import cli
from cnnlab.bench import BASELINE, format_results, run_bench
from cnnlab.config import load_config
from cnnlab.data.cifar10 import load_cifar10


def test_bench_times_the_baseline_and_both_cnnlab_precisions(synthetic_archive):
    data = load_cifar10(str(synthetic_archive))
    lines = []
    contenders = run_bench(data, load_config("seed", {"train.precision": "bfloat16"}), steps=3, rounds=2,
                           log=lines.append)
    assert [c.name for c in contenders][0] == BASELINE
    assert [c.name.split(",")[1].strip() for c in contenders[1:]] == ["float32", "bfloat16"]
    for contender in contenders:
        assert len(contender.train_seconds) == len(contender.eval_seconds) == 3  # a warm-up round and two timed ones
        assert contender.train_images_per_second > 0 and contender.eval_images_per_second > 0
    assert len(lines) == 3 and "warm-up" in lines[0]
    table = format_results(contenders)
    assert table.splitlines()[1].count("1.00x") == 2  # the baseline against itself
    ratio = contenders[2].train_images_per_second / contenders[0].train_images_per_second
    assert f"{ratio:5.2f}x" in table.splitlines()[3]


def test_float32_everywhere_times_cnnlab_once(synthetic_archive):
    data = load_cifar10(str(synthetic_archive))
    contenders = run_bench(data, load_config("seed", {"train.precision": "float32"}), steps=2, rounds=1,
                           log=lambda line: None)
    assert len(contenders) == 2


def test_bench_command_prints_the_table(synthetic_archive, capsys):
    assert cli.main(["bench", "--data", str(synthetic_archive), "--steps", "2", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "native bfloat16" in out and "train img/s" in out
    assert re.search(r"plain Keras.*\d+\s+1\.00x", out)


@pytest.mark.parametrize("flag", ["--steps", "--rounds"])
def test_bench_refuses_non_positive_counts(synthetic_archive, capsys, flag):
    assert cli.main(["bench", "--data", str(synthetic_archive), flag, "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "at least 1" in err
