"""Atomic files: a reader sees the old file or the new one, never half; failures are one line and lose nothing."""

import os

import pytest

from cnnlab.common import files
from cnnlab.common.errors import CnnlabError


def test_atomic_path_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_path_replaces_on_success_and_keeps_the_suffix(tmp_path):
    target = tmp_path / "model.keras"
    with files.atomic_path(target) as temporary:
        assert temporary.suffix == ".keras" and temporary.parent == tmp_path
        temporary.write_text("new")
    assert target.read_text() == "new"


def test_atomic_writes_sync_the_folder_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.path.realpath(f"/proc/self/fd/{fd}")),
                                                 real_fsync(fd)))
    files.write_json(tmp_path / "metrics.json", {"a": 1})
    assert synced[-1] == str(tmp_path)  # the folder, after the file itself


def test_a_full_disk_is_one_clear_error_and_the_old_file_stays(tmp_path, monkeypatch):
    import errno
    import os

    target = tmp_path / "metrics.json"
    target.write_text("old")

    def disk_full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(CnnlabError, match="cannot write .*metrics.json: No space left on device"):
        files.write_json(target, {"new": 1})
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_read_json_refuses_a_huge_or_deeply_nested_file_in_one_line_without_reading_it_whole(tmp_path):
    import tracemalloc

    sparse = tmp_path / "metrics.json"
    with open(sparse, "wb") as file:  # 1.5 GB that takes 4 KB on disk
        file.truncate(1_500_000_000)
    tracemalloc.start()
    try:
        with pytest.raises(CnnlabError, match=r"metrics.json is over 64 MiB: not a cnnlab file"):
            files.read_json(sparse)
        assert tracemalloc.get_traced_memory()[1] < 80 << 20  # the cap and a little, never the file
    finally:
        tracemalloc.stop()
    nested = tmp_path / "status.json"
    nested.write_text("[" * 200_000)
    with pytest.raises(CnnlabError, match="status.json is not a cnnlab file: its values are nested too deeply"):
        files.read_json(nested)
