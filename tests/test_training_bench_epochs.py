"""`cnnlab bench --whole-epochs`: whole epochs of fresh processes, timed from the lines Keras prints."""

import re
import sys
import textwrap

import pytest

from cnnlab.common.errors import CnnlabError
from cnnlab.training.bench_epochs import CNNLAB, PLAIN, WholeContender, WholeRun, format_whole_epochs, time_process
from conftest import run_cnnlab

FAKE_FIT = textwrap.dedent("""
    import time
    print("loading, not an epoch", flush=True)
    time.sleep(1.0)
    print("Epoch 1/2", flush=True)
    time.sleep(0.4)
    print("3/3 - 0s - 10ms/step - accuracy: 0.5 - loss: 1.2", flush=True)  # no validation: not an epoch's end
    time.sleep(0.2)
    print("3/3 - 1s - 10ms/step - accuracy: 0.5 - loss: 1.2 - val_accuracy: 0.4 - val_loss: 1.3", flush=True)
    time.sleep(0.5)  # the next pass over the data being set up, before Keras announces the epoch
    print("Epoch 2/2", flush=True)
    time.sleep(0.5)
    print("3/3 - 1s - 10ms/step - accuracy: 0.6 - loss: 1.1 - val_accuracy: 0.5 - val_loss: 1.2", flush=True)
    time.sleep(0.3)
""")


def test_whole_epochs_run_from_the_end_of_the_last_to_keras_summary_line():
    run = time_process([sys.executable, "-c", FAKE_FIT], "fake", 2, log=lambda line: None)
    assert len(run.epoch_seconds) == 2
    first, second = run.epoch_seconds
    assert 0.55 <= first < 1.3  # from "Epoch 1/2": 0.6 s of steps and saves, not the 1.0 s of loading before it
    assert second >= 0.95  # from the first epoch's summary: the set-up before "Epoch 2/2" counts
    assert run.process_seconds >= 1.0 + first + second + 0.3  # the loading and the end are the process's


def test_a_failing_contender_is_one_line_naming_it():
    with pytest.raises(CnnlabError, match=r"^the contender failed \(exit 3\): the last words$"):
        time_process([sys.executable, "-c", "print('the last words'); raise SystemExit(3)"], "the contender", 2,
                     log=lambda line: None)


def test_a_contender_whose_epochs_cannot_all_be_told_apart_is_an_error_not_a_ratio():
    one_epoch = FAKE_FIT.split('time.sleep(0.5)  #')[0]
    with pytest.raises(CnnlabError, match="found 1 of its 2 epochs"):
        time_process([sys.executable, "-c", one_epoch], "short", 2, log=lambda line: None)


def test_the_ratio_counts_every_epoch_so_a_slow_one_shows():
    plain = WholeContender(PLAIN, [WholeRun([10.0, 10.0], 25.0), WholeRun([10.0, 10.0], 24.0)])
    cnnlab = WholeContender(CNNLAB, [WholeRun([5.0, 5.0], 14.0), WholeRun([5.0, 25.0], 33.0)])
    assert plain.images_per_second(100) == pytest.approx(10.0)
    assert cnnlab.images_per_second(100) == pytest.approx(400 / 40)  # not 20: the 25 s epoch counts
    table = format_whole_epochs([plain, cnnlab], 100).splitlines()
    assert "1.00x" in table[2] and "5.0, 5.0 / 5.0, 25.0" in table[3] and "1.00x" in table[3]
    assert "14.0, 33.0" in table[3]


@pytest.mark.slow
def test_bench_command_times_whole_epochs_of_both_in_fresh_processes(synthetic_archive):
    result = run_cnnlab("bench", "--data", synthetic_archive, "--steps", "1", "--rounds", "1", "--whole-epochs", "2",
                        "--whole-rounds", "1", "--set", "data.train_limit=300",
                        "--set", "cnn.dense_units=[32]")  # a recipe setting: cnnlab's contender must not take it
    assert result.returncode == 0, result.stderr
    train_images = int(re.search(r"of 2 epochs on ([\d,]+) training images", result.stdout)[1].replace(",", ""))
    rows = {}
    for name in (PLAIN, CNNLAB):
        row = next(line for line in result.stdout.splitlines() if line.startswith(f"| {name} |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        epochs = [float(seconds) for seconds in cells[1].split(", ")]
        assert len(epochs) == 2 and all(seconds > 0 for seconds in epochs)
        assert float(cells[4]) > sum(epochs)  # the process's wall time holds its epochs
        rows[name] = (train_images * 2 / sum(epochs), cells)
    speed = {name: images_per_second for name, (images_per_second, _) in rows.items()}
    # the ratio of the epochs as printed, to their rounding (0.05 s each, two epochs a side)
    shortest = min(train_images * 2 / images_per_second for images_per_second in speed.values())
    assert float(rows[CNNLAB][1][3][:-1]) == pytest.approx(speed[CNNLAB] / speed[PLAIN], rel=0.2 / shortest + 0.01)
    assert train_images == 300  # both trained on the first 300 training images
    started = next(line for line in result.stderr.splitlines() if line.startswith(f"round 1/1: {CNNLAB} ("))
    assert "--train-limit 300" in started and "train.steps_per_execution=8" in started
    assert "dense_units" not in started  # the plain script trains the tutorial's model: so does cnnlab
