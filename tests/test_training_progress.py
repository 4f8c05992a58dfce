"""What a run shows while it trains: an estimate from its first steps, one line per epoch with the time left, a live
line on a terminal; and the bar of a long pass outside `fit`."""

import io

import pytest

from cnnlab.evaluation import progress as passes
from cnnlab.training import progress
from cnnlab.training.progress import RunProgress, duration


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", fake)
    return fake


def run_epochs(shown: RunProgress, clock: Clock, epochs: int, seconds_per_step: float, steps_per_call: int = 1):
    for epoch in range(epochs):
        shown.on_epoch_begin(epoch)
        for batch in range(steps_per_call - 1, shown.steps_per_epoch, steps_per_call):
            clock.now += seconds_per_step * steps_per_call
            shown.on_train_batch_end(batch, {"loss": 1.0})
        clock.now += 5.0  # validation
        shown.on_epoch_end(epoch, {"loss": 1.0, "accuracy": 0.5, "val_accuracy": 0.4, "val_loss": 1.2, "seconds": 3})


@pytest.mark.parametrize("steps_per_call", [1, 8])
def test_the_first_steps_give_an_estimate_of_the_whole_training(clock, steps_per_call):
    stream = io.StringIO()
    shown = RunProgress(total_epochs=3, steps_per_epoch=200, stream=stream, live=False)
    run_epochs(shown, clock, 1, seconds_per_step=0.5, steps_per_call=steps_per_call)
    estimate = next(line for line in stream.getvalue().splitlines() if line.startswith("about "))
    # 0.5 s a step (the first call left out), 579 or 568 steps to go: 4.8 or 4.7 min, said in whole minutes
    assert estimate.startswith("about 5 min of training to go, from the first ")


def test_each_epoch_says_where_the_run_is_and_the_time_left(clock):
    stream = io.StringIO()
    shown = RunProgress(total_epochs=4, steps_per_epoch=10, epochs_done=1, stream=stream, live=False)
    shown.start_phase("head")
    run_epochs(shown, clock, 2, seconds_per_step=1.0)
    lines = [line for line in stream.getvalue().splitlines() if line.startswith("epoch")]
    assert lines[0].startswith("epoch 2/4 (head): 15.0 s, accuracy 0.5000, loss 1.0000, val_accuracy 0.4000")
    assert lines[0].endswith("about 30 s of training left")  # two epochs to go at 15 s each
    assert lines[1].startswith("epoch 3/4 (head)") and lines[1].endswith("about 15 s of training left")
    assert "seconds" not in stream.getvalue()  # history.csv keeps each epoch's time; the screen does not repeat it


def test_the_last_epoch_says_no_time_left_and_a_terminal_gets_one_live_line(clock):
    stream = io.StringIO()
    shown = RunProgress(total_epochs=1, steps_per_epoch=4, stream=stream, live=True)
    run_epochs(shown, clock, 1, seconds_per_step=1.0)
    text = stream.getvalue()
    assert "\repoch 1/1  step 1/4  loss 1.0000" in text  # redrawn in place
    assert text.rstrip().endswith("val_accuracy 0.4000, val_loss 1.2000\x1b[K")


def test_durations_read_as_a_person_says_them():
    assert [duration(s) for s in (42, 150, 7300)] == ["42 s", "2 min", "2.0 h"]


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_pass_bar_counts_its_batches_on_a_terminal_and_stays_off_elsewhere():
    shown = Terminal()
    bar = passes.PassProgress("test set", passes.batches_of(1000, 256), stream=shown, delay=0)
    for batch in range(4):
        bar.on_predict_batch_end(batch)
    assert bar.bar.total == 4 and bar.bar.n == 4 and "test set" in shown.getvalue()
    bar.close()
    quiet = io.StringIO()
    bar = passes.PassProgress("test set", 4, stream=quiet, delay=0)
    bar.on_predict_batch_end(0)
    bar.close()
    assert quiet.getvalue() == ""  # logs and pipes get no bar
