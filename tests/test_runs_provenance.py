"""What a run directory keeps about its data, and the refusal when the data no longer matches it."""

import dataclasses
import json

import numpy as np
import pytest

from cnnlab.common.errors import CnnlabError
from cnnlab.data import Dataset, SourceRecord
from cnnlab.runs import rundir
from cnnlab.runs.provenance import check_unchanged, metrics_record, record_source

RECORD = SourceRecord("image_folder", "/photos", "abc123" * 10, "listing", 64, ("cat", "dog"),
                      test_files=("cat/1.jpg", "dog/new\nline.png"))


def dataset(record=RECORD, skipped=()):
    empty = np.zeros((0, 64, 64, 3), np.uint8)
    return Dataset(empty, np.zeros(0, np.uint8), empty, np.zeros(0, np.uint8), record, skipped=skipped)


def test_the_record_and_its_file_lists_are_written(tmp_path):
    record_source(tmp_path, dataset(skipped=(("cat/broken.jpg", "truncated"),)))
    assert json.loads((tmp_path / rundir.SOURCE).read_text()) == json.loads(json.dumps(RECORD.to_dict()))
    # One name a line: a newline inside a name is written escaped, so the list stays one line per file.
    assert (tmp_path / rundir.TEST_FILES).read_text() == "cat/1.jpg\ndog/new\\nline.png\n"
    assert (tmp_path / rundir.SKIPPED_FILES).read_text() == "cat/broken.jpg: truncated\n"
    assert not list(tmp_path.glob(".tmp-*"))


def test_no_lists_when_nothing_was_carved_or_skipped(tmp_path):
    record_source(tmp_path, dataset(dataclasses.replace(RECORD, test_files=())))
    assert (tmp_path / rundir.SOURCE).is_file()
    assert not (tmp_path / rundir.TEST_FILES).exists() and not (tmp_path / rundir.SKIPPED_FILES).exists()


def test_metrics_keep_the_record_without_the_test_file_names():
    assert metrics_record(dataset()) == {key: value for key, value in RECORD.to_dict().items() if key != "test_files"}


def test_the_same_data_passes_and_a_run_without_a_record_is_not_checked(tmp_path):
    check_unchanged(tmp_path, dataset())  # from before source.json: nothing to compare with
    record_source(tmp_path, dataset())
    check_unchanged(tmp_path, dataset())


def test_changed_content_is_refused_naming_the_path(tmp_path):
    record_source(tmp_path, dataset())
    changed = dataclasses.replace(RECORD, content_hash="f" * 64)
    with pytest.raises(CnnlabError, match=r"^the data at /photos changed since this run was trained \(content hash "
                                          r"ffffffffffff\.\.\., the run recorded abc123abc123\.\.\.\)"):
        check_unchanged(tmp_path, dataset(changed))


def test_another_test_set_from_the_same_content_is_refused(tmp_path):
    record_source(tmp_path, dataset())
    other = dataclasses.replace(RECORD, test_files=("cat/1.jpg", "dog/2.png"))
    with pytest.raises(CnnlabError, match=r"now gives another test set .* \(2 file\(s\) in one and not the other, "
                                          r"of 2 recorded in test_files.txt\)"):
        check_unchanged(tmp_path, dataset(other))


@pytest.mark.parametrize("content", ['["not", "a record"]', '{"content_hash": 5, "test_files": [], "classes": []}',
                                     '{"content_hash": null, "classes": ["a"]}', "{"])
def test_a_damaged_record_is_one_line(tmp_path, content):
    (tmp_path / rundir.SOURCE).write_text(content)
    with pytest.raises(CnnlabError, match="source.json (is damaged|is not valid JSON)"):
        check_unchanged(tmp_path, dataset())
