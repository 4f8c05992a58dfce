import json
import os
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import JSON_VALUES

from cnnlab.common.errors import CnnlabError
from cnnlab.common.text import terminal_text
from cnnlab.runs import rundir


def test_create_run_dir_refuses_a_non_empty_folder_and_leaves_it_alone(tmp_path):
    (tmp_path / "old.txt").write_text("precious")
    with pytest.raises(CnnlabError, match="already exists and is not empty"):
        rundir.create_run_dir(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["old.txt"]


def test_create_run_dir_accepts_an_empty_or_new_folder(tmp_path):
    assert (rundir.create_run_dir(tmp_path / "new") / "figures").is_dir()
    (tmp_path / "empty").mkdir()
    assert (rundir.create_run_dir(tmp_path / "empty") / "checkpoints").is_dir()


def test_default_run_dirs_never_collide(tmp_path):
    first = rundir.create_run_dir(rundir.default_run_dir("seed", "cnn", tmp_path))
    second = rundir.default_run_dir("seed", "cnn", tmp_path)
    assert first != second and first.name.startswith("seed-cnn-")


def test_lock_refuses_a_second_writer_and_is_released(tmp_path):
    with rundir.locked(tmp_path):
        with pytest.raises(CnnlabError, match=f"in use by process {os.getpid()}"):
            with rundir.locked(tmp_path):
                pass
    with pytest.raises(RuntimeError):
        with rundir.locked(tmp_path):
            raise RuntimeError("crash")
    with rundir.locked(tmp_path):  # released after an error too
        pass


HOLD_LOCK = "import sys, time\nfrom cnnlab.runs import rundir\nwith rundir.locked(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n"


def test_the_lock_of_a_live_process_holds_and_dies_with_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CnnlabError, match=f"in use by process {holder.pid}"):
            with rundir.locked(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with rundir.locked(tmp_path):  # SIGKILL gave no chance to clean up; the kernel released the lock
        pass


@pytest.mark.parametrize("content", [str(os.getpid()), "1", "half-writ", ""],
                         ids=["this process", "process 1", "half-written", "empty"])  # the same ids in every pytest worker
def test_what_a_lock_file_says_never_decides_who_holds_it(tmp_path, content):
    # A PID in the file, even this process's own or PID 1 (alive forever in a container), is not a lock.
    (tmp_path / rundir.LOCK).write_text(content)
    with rundir.locked(tmp_path):
        assert (tmp_path / rundir.LOCK).read_text() == str(os.getpid())


def test_of_many_processes_racing_for_one_lock_exactly_one_wins(tmp_path):
    # Every racer waits for one shared instant, then tries; a winner holds the lock until the test has heard from all.
    race = ("import os, sys, time\nfrom cnnlab.runs import rundir\nfrom cnnlab.common.errors import CnnlabError\n"
            "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
            "try:\n    with rundir.locked(sys.argv[1]):\n        print('won', flush=True)\n"
            "        while not os.path.exists(sys.argv[3]):\n            time.sleep(0.05)\n"
            "except CnnlabError:\n    print('refused', flush=True)\n")
    release = tmp_path / "release"
    start = f"{time.time() + 5:.3f}"  # after every interpreter has started, on a loaded machine too
    racers = [subprocess.Popen([sys.executable, "-c", race, str(tmp_path), start, str(release)],
                               stdout=subprocess.PIPE, text=True) for _ in range(6)]
    try:
        outcomes = sorted(racer.stdout.readline().strip() for racer in racers)
    finally:
        release.touch()
        for racer in racers:
            racer.wait(timeout=60)
    assert outcomes == ["refused"] * 5 + ["won"]


def test_a_refused_writer_leaves_the_holders_pid_in_place(tmp_path):
    with rundir.locked(tmp_path):
        for _ in range(2):
            with pytest.raises(CnnlabError, match=f"in use by process {os.getpid()}"):
                with rundir.locked(tmp_path):
                    pass
    assert (tmp_path / rundir.LOCK).read_text() == ""  # emptied by the holder when it let go


def test_temporary_files_left_by_a_killed_writer_are_removed_by_the_next(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    leftovers = [tmp_path / ".tmp-123-metrics.json", tmp_path / "checkpoints" / ".tmp-123-best.keras"]
    for path in leftovers:
        path.write_text("half")
    (tmp_path / "metrics.json").write_text("{}")
    with rundir.locked(tmp_path):
        assert not any(path.exists() for path in leftovers)
    assert (tmp_path / "metrics.json").read_text() == "{}"


def test_a_failure_keeps_one_line_in_the_status_and_the_whole_text_beside_it(tmp_path):
    try:
        raise ValueError("first line\x1b[2J\nsecond line\nthird line")
    except ValueError as exc:
        rundir.record_failure(tmp_path, exc)
    status = rundir.read_status(tmp_path)
    assert status["state"] == "failed" and "\n" not in status["reason"] and "\x1b" not in status["reason"]
    assert status["reason"].startswith("first line\\x1b[2J (full text in ")
    full = (tmp_path / rundir.ERROR_LOG).read_text()
    assert "third line" in full and "Traceback" in full


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(CnnlabError, match="cannot create run directory"):
        rundir.create_run_dir(blocker / "run")


@given(st.one_of(st.binary(max_size=200), JSON_VALUES.map(lambda value: json.dumps(value).encode()),
                 st.fixed_dictionaries({"state": st.sampled_from(["running", "finished", "failed", "x"]),
                                        "reason": JSON_VALUES}).map(lambda value: json.dumps(value).encode())))
def test_any_status_file_is_read_or_refused_with_one_error(tmp_path_factory, content):
    run_dir = tmp_path_factory.mktemp("run")
    (run_dir / rundir.STATUS).write_bytes(content)
    try:
        status = rundir.read_status(run_dir)
    except CnnlabError as exc:
        assert str(rundir.STATUS) in str(exc)
        return
    assert status["state"] in ("running", "finished", "failed")
    assert status["reason"] is None or terminal_text(status["reason"]) == status["reason"]  # nothing left to escape
