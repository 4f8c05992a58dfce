"""Run: the run directory as an object; opening one says what is wrong with a folder that is not what the command
needs, and reading its files goes through their checks."""

import pytest

from cnnlab.common.errors import CnnlabError
from cnnlab.runs import rundir
from cnnlab.runs.run import Run


def test_open_finished_explains_what_is_wrong(tmp_path):
    with pytest.raises(CnnlabError, match="run directory not found"):
        Run.open_finished(tmp_path / "missing")
    with pytest.raises(CnnlabError, match="not a cnnlab run directory \\(no status.json or config.json\\)"):
        Run.open_finished(tmp_path)
    rundir.write_json(tmp_path / rundir.CONFIG, {})
    rundir.set_status(tmp_path, "failed", "training diverged")
    with pytest.raises(CnnlabError, match="not a finished run \\(status: failed: training diverged\\)"):
        Run.open_finished(tmp_path)
    rundir.set_status(tmp_path, "finished")
    with pytest.raises(CnnlabError, match="has no model.keras"):
        Run.open_finished(tmp_path)
    (tmp_path / rundir.MODEL).write_bytes(b"model")
    assert Run.open_finished(tmp_path).path == tmp_path
    assert Run.open_finished(tmp_path).finished_at()  # the time status.json records, for the report


def test_open_takes_a_run_in_any_state_but_not_another_folder(tmp_path):
    with pytest.raises(CnnlabError, match="not a cnnlab run directory"):
        Run.open(tmp_path)
    rundir.write_json(tmp_path / rundir.CONFIG, {})
    rundir.set_status(tmp_path, "running")
    assert Run.open(tmp_path).state() == "running"
