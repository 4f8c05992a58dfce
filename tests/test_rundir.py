import pytest

from cnnlab import rundir
from cnnlab.errors import CnnlabError


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with rundir.atomic_path(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_path_replaces_on_success_and_keeps_the_suffix(tmp_path):
    target = tmp_path / "model.keras"
    with rundir.atomic_path(target) as temporary:
        assert temporary.suffix == ".keras" and temporary.parent == tmp_path
        temporary.write_text("new")
    assert target.read_text() == "new"


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


def test_require_finished_explains_what_is_wrong(tmp_path):
    with pytest.raises(CnnlabError, match="run directory not found"):
        rundir.require_finished(tmp_path / "missing")
    with pytest.raises(CnnlabError, match="not a cnnlab run directory"):
        rundir.require_finished(tmp_path)
    rundir.write_json(tmp_path / rundir.CONFIG, {})
    rundir.set_status(tmp_path, "failed", "training diverged")
    with pytest.raises(CnnlabError, match="not a finished run \\(status: failed: training diverged\\)"):
        rundir.require_finished(tmp_path)
    rundir.set_status(tmp_path, "finished")
    with pytest.raises(CnnlabError, match="has no model.keras"):
        rundir.require_finished(tmp_path)
    (tmp_path / rundir.MODEL).write_bytes(b"model")
    assert rundir.require_finished(tmp_path) == tmp_path


def test_lock_refuses_a_second_writer_and_is_released(tmp_path):
    with rundir.locked(tmp_path):
        assert (tmp_path / rundir.LOCK).read_text() == str(__import__("os").getpid())
        with pytest.raises(CnnlabError, match=f"in use by process {__import__('os').getpid()}"):
            with rundir.locked(tmp_path):
                pass
    assert not (tmp_path / rundir.LOCK).exists()
    with pytest.raises(RuntimeError):
        with rundir.locked(tmp_path):
            raise RuntimeError("crash")
    assert not (tmp_path / rundir.LOCK).exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    import subprocess
    import sys

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / rundir.LOCK).write_text(finished.stdout.strip())  # that process has exited: a killed writer's lock
    with rundir.locked(tmp_path):
        assert (tmp_path / rundir.LOCK).read_text() != finished.stdout.strip()
    (tmp_path / rundir.LOCK).write_text("half-writ")  # unreadable pid: also stale
    with rundir.locked(tmp_path):
        pass


def test_a_full_disk_is_one_clear_error_and_the_old_file_stays(tmp_path, monkeypatch):
    import errno
    import os

    target = tmp_path / "metrics.json"
    target.write_text("old")

    def disk_full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(CnnlabError, match="cannot write .*metrics.json: No space left on device"):
        rundir.write_json(target, {"new": 1})
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(CnnlabError, match="cannot create run directory"):
        rundir.create_run_dir(blocker / "run")
