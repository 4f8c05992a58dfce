"""What a run directory keeps about its data, so that later commands rebuild the same data or refuse to.

Training writes the data's `SourceRecord` to `source.json` before the first epoch; `train --resume`, `evaluate` and
`report` load the data again from the run's config and compare it with that record: the content hash (of a CIFAR-10
archive, or of an image folder's file listing) and an image folder's test files must be the same, or the scores would
be for other images than the model was trained and tested on. `test_files.txt` and `skipped_files.txt` list the same
names one a line, for people.
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.common.errors import CnnlabError
from cnnlab.common.files import atomic_path, read_json, write_json
from cnnlab.common.text import terminal_text
from cnnlab.data.dataset import Dataset
from cnnlab.runs import rundir


def record_source(run_dir: Path, dataset: Dataset) -> None:
    """Write what `run_dir` trains on, and the files left out of it (the source warned of their count as it loaded)."""
    write_json(run_dir / rundir.SOURCE, dataset.record.to_dict())
    if dataset.record.test_files:
        _write_lines(run_dir / rundir.TEST_FILES, dataset.record.test_files)
    if dataset.skipped:
        _write_lines(run_dir / rundir.SKIPPED_FILES, [f"{name}: {why}" for name, why in dataset.skipped])


def metrics_record(dataset: Dataset) -> dict[str, object]:
    """The data a run was scored on, as metrics.json keeps it: the record without the test file names (thousands,
    for a large folder; source.json and test_files.txt have them)."""
    return {key: value for key, value in dataset.record.to_dict().items() if key != "test_files"}


def check_unchanged(run_dir: Path, dataset: Dataset) -> None:
    """Refuse `dataset` unless it is the data `run_dir` was trained on (runs older than source.json are not checked)."""
    recorded = _recorded(run_dir)
    if recorded is None:
        return
    now = dataset.record
    where = f"the data at {now.path}"
    if now.content_hash != recorded["content_hash"]:
        raise CnnlabError(
            f"{where} changed since this run was trained (content hash {_short(now.content_hash)}, the run recorded "
            f"{_short(recorded['content_hash'])}); put back the data it was trained on, or train a new run"
        )
    if list(now.test_files) != recorded["test_files"]:
        differ = len(set(now.test_files) ^ set(recorded["test_files"]))
        raise CnnlabError(
            f"{where} now gives another test set than this run was trained with ({differ} file(s) in one and not the "
            f"other, of {len(recorded['test_files'])} recorded in {rundir.TEST_FILES}); train a new run on it"
        )


def _recorded(run_dir: Path) -> dict | None:
    file = Path(run_dir) / rundir.SOURCE
    if not file.is_file():
        return None
    recorded = read_json(file)
    if not (isinstance(recorded, dict) and isinstance(recorded.get("content_hash"), (str, type(None)))
            and _is_text_list(recorded.get("test_files")) and _is_text_list(recorded.get("classes"))):
        raise CnnlabError(f"{file} is damaged (no content hash, classes and test file list)")
    return recorded


def _is_text_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _short(content_hash: str | None) -> str:
    return f"{content_hash[:12]}..." if content_hash else "none"


def _write_lines(path: Path, lines) -> None:
    """One name a line; a name holding a newline or other invisible character is written escaped (as `\\n`)."""
    with atomic_path(path) as temporary:
        temporary.write_text("".join(f"{terminal_text(line)}\n" for line in lines), encoding="utf-8")
