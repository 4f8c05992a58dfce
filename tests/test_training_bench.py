import importlib.util
import math
import re

import pytest

from cnnlab import cli
from cnnlab.training.bench import (BACKENDS, BASELINE, BackendRow, attainable_peaks, format_backend_rows, format_peaks,
                                   format_results, run_backends, run_bench)
from cnnlab.config import load_config
from cnnlab.config import DataConfig
from cnnlab.data import load_dataset


def small_test_set(archive):
    """The synthetic set with 512 test images: each round scores the whole test set once per contender."""
    return load_dataset(DataConfig(source=str(archive), test_limit=512), seed=0, warn=lambda message: None)


def test_bench_times_the_baseline_and_both_cnnlab_precisions(synthetic_archive):
    data = small_test_set(synthetic_archive)
    lines = []
    contenders = run_bench(data, load_config("seed", {"train.precision": "bfloat16"}), steps=3, rounds=2,
                           log=lines.append)
    assert [c.name for c in contenders][0] == BASELINE
    assert [c.name.split(",")[1].strip() for c in contenders[1:]] == ["float32", "bfloat16"]
    for contender in contenders:
        assert len(contender.train_seconds) == len(contender.eval_seconds) == 3  # a warm-up round and two timed ones
        assert contender.train_images_per_second > 0 and contender.eval_images_per_second > 0
    assert len(lines) == 3 and "warm-up" in lines[0]
    assert contenders[0].train_flops_per_image == contenders[1].train_flops_per_image > 0  # the same network
    peaks = {"conv 3x3 float32": 100.0, "conv 3x3 bfloat16": 400.0}
    table = format_results(contenders, peaks)
    assert len({len(line) for line in table.splitlines()}) == 1  # columns aligned, whatever the names' lengths
    assert table.splitlines()[1].count("1.00x") == 2  # the baseline against itself
    ratio = contenders[2].train_images_per_second / contenders[0].train_images_per_second
    assert f"{ratio:5.2f}x" in table.splitlines()[3]
    for line, contender in zip(table.splitlines()[1:], contenders):
        achieved = contender.train_flops_per_image * contender.train_images_per_second / 1e9
        peak = peaks[f"conv 3x3 {contender.precision}"]
        assert line.split()[-2:] == [f"{achieved:,.1f}", f"{achieved / peak:.0%}"]


def test_attainable_peaks_time_a_matmul_and_a_convolution_in_each_precision():
    peaks = attainable_peaks(["float32", "float32", "bfloat16"], seconds=0.05)
    assert list(peaks) == ["matmul float32", "conv 3x3 float32", "matmul bfloat16", "conv 3x3 bfloat16"]
    assert all(0 < rate < 1e6 for rate in peaks.values())  # GFLOP/s: no CPU core reaches a PFLOP/s
    assert format_peaks({"matmul float32": 1234.5}) == "attainable here: matmul float32 1,234 GFLOP/s"


def test_float32_everywhere_times_cnnlab_once(synthetic_archive):
    data = small_test_set(synthetic_archive)
    config = load_config("seed", {"train.precision": "float32", "train.steps_per_execution": 2,
                                  "train.convolution_gradients": "convolutions"})
    contenders = run_bench(data, config, steps=2, rounds=1, log=lambda line: None)
    # Configured float32 is the float32 contender already: it is timed once, with the configured speed settings.
    assert [c.name for c in contenders] == [
        BASELINE, "cnnlab, float32, steps_per_execution=2, convolution gradients by convolution"]
    for contender in contenders:
        timings = contender.train_seconds + contender.eval_seconds
        assert len(timings) == 4 and all(0 < seconds < math.inf for seconds in timings)  # warm-up and one round
        assert 0 < contender.train_images_per_second < math.inf and 0 < contender.eval_images_per_second < math.inf


def test_bench_command_prints_the_table(synthetic_archive, capsys):
    assert cli.main(["bench", "--data", str(synthetic_archive), "--steps", "2", "--rounds", "1",
                     "--whole-epochs", "0", "--set", "data.test_limit=512"]) == 0
    out = capsys.readouterr().out
    assert "and 512 test images each" in out
    assert "native bfloat16" in out and "train img/s" in out and "train GFLOP/s" in out
    assert re.search(r"attainable here: matmul float32 [\d,]+ GFLOP/s, conv 3x3 float32 [\d,]+ GFLOP/s", out)
    assert re.search(r"plain Keras.*\d+\s+1\.00x", out)
    assert "whole epochs" not in out  # 0 skips them


@pytest.mark.parametrize("flag, value", [("--steps", "0"), ("--rounds", "0"), ("--whole-rounds", "0"),
                                         ("--whole-epochs", "1"), ("--whole-epochs", "-2")])
def test_bench_refuses_counts_out_of_range(synthetic_archive, capsys, flag, value):
    assert cli.main(["bench", "--data", str(synthetic_archive), flag, value]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err


# ---- cnnlab bench --backend: each backend in its own process --------------------------------------------------------

TINY_BOTH = ["--set", "cnn.conv_blocks=[[8], [16]]", "--set", "cnn.dense_units=[32]", "--set",
             "fastnet.widths=[8, 16, 16]", "--set", "train.batch_size=16"]


@pytest.mark.slow
def test_bench_on_every_backend_times_both_presets_in_a_process_each(synthetic_archive, capsys):
    assert cli.main(["bench", "--backend", "all", "--data", str(synthetic_archive), "--steps", "2", "--rounds", "1",
                     *TINY_BOTH]) == 0
    captured = capsys.readouterr()
    rows = [line.split() for line in captured.out.splitlines()[2:]]
    assert [(row[0], row[1]) for row in rows] == [(backend, first) for backend in BACKENDS
                                                  for first in ("CNN", "fast")]
    for row in rows:
        if importlib.util.find_spec(row[0]) is None:
            assert row[-2:] == ["not", "installed"]
        else:  # batch 16, then training and evaluation images/s, training GFLOP/s and share of the peak, measured
            assert row[-5] == "16" and all(float(value.replace(",", "")) > 0 for value in row[-4:-1])
            assert row[-1].endswith("%")
    # each child's own progress, in its own backend: its Keras reported the backend it was started with
    for backend in BACKENDS:
        if importlib.util.find_spec(backend) is not None:
            assert f"{backend} seed: round 1 done" in captured.err and f"{backend} fast: round 1 done" in captured.err


def test_a_backend_that_is_not_installed_or_fails_gets_a_row_saying_why(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "torch" else
                        real_find_spec(name, *rest))
    # a batch of 0 passes the parent (which reads no preset) and fails in the child, as any error there would
    rows = run_backends(["torch", "jax"], {"train.batch_size": 0}, steps=1, rounds=1, log=lambda line: None)
    assert [(row.backend, row.preset, row.problem) for row in rows[:2]] == [
        ("torch", "seed", "not installed"), ("torch", "fast", "not installed")]
    assert [row.preset for row in rows[2:]] == ["seed", "fast"]
    assert all(row.problem.startswith("failed: ") and "batch_size" in row.problem for row in rows[2:])
    table = format_backend_rows(rows).splitlines()
    assert table[1].split() == ["torch", "seed", "preset", "not", "installed"]
    assert rows[2].problem in table[3]


def test_backend_rows_show_the_measured_rates():
    rows = [BackendRow("jax", "seed", "CNN from scratch", 32, 1234.4, 5678.6, 194.6, 389.2)]
    row = format_backend_rows(rows).splitlines()[1]
    assert row.split() == ["jax", "CNN", "from", "scratch", "32", "1,234", "5,679", "194.6", "50%"]
