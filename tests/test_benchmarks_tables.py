"""benchmarks/tables.py: the measured results' tables come from benchmarks/results/*.json, name their machine and
revision, and say when the code they measured has changed since."""

import copy
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_tables():
    spec = importlib.util.spec_from_file_location("benchmarks_tables", ROOT / "benchmarks" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tables = _load_tables()


def _git(repo: Path, *arguments: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@example.invalid",
         "-c", "commit.gpgsign=false", *arguments],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return result.stdout.strip()


def _record(revision: str, depends_on: list[str], **changes) -> dict:
    record = {
        "title": "A result",
        "command": "python benchmarks/something.py --rounds 2",
        "machine": {"cpu": "Some CPU", "cores": 2, "flags": ["avx2"], "bfloat16": False},
        "revision": revision,
        "date": "2026-01-01",
        "seeds": [0, 1],
        "columns": ["what", "img/s"],
        "rows": [["cnnlab", "123"]],
        "notes": ["one run"],
        "depends_on": depends_on,
    }
    record.update(changes)
    return record


def test_committed_results_md_is_what_the_result_files_generate():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the stale marks cannot be computed")
    try:
        targets = tables.generate(ROOT, with_readme=False)
    except tables.ResultError as error:
        if "not a commit of this repository's history" in str(error):
            pytest.skip(f"a shallow clone: {error}")
        raise
    old, new = targets[tables.RESULTS_MD]
    assert old == new, ("benchmarks/RESULTS.md differs from what benchmarks/results/ generates (run python "
                        f"benchmarks/tables.py): {tables.first_difference(old, new)}")


def test_every_committed_result_file_names_its_machine_and_revision():
    results = tables.load_results(ROOT)
    assert len(results) >= 10
    for name, record in results.items():
        assert "machine" in record and "revision" in record, name


@pytest.mark.parametrize("key", ["machine", "revision"])
def test_a_result_file_without_its_machine_or_revision_key_fails_validation(key):
    record = _record("0" * 40, ["src"])
    tables.validate(copy.deepcopy(record), "complete")  # the complete record passes
    del record[key]
    with pytest.raises(tables.ResultError, match=f"no '{key}' key"):
        tables.validate(record, "incomplete")


@pytest.mark.parametrize("key", ["cpu", "cores", "flags", "bfloat16"])
def test_a_machine_without_one_of_its_keys_fails_validation(key):
    record = _record("0" * 40, ["src"])
    del record["machine"][key]
    with pytest.raises(tables.ResultError, match=f"machine has no '{key}' key"):
        tables.validate(record, "incomplete")


def test_a_row_of_the_wrong_width_and_a_cell_outside_the_table_fail_validation():
    with pytest.raises(tables.ResultError, match="row 0 has 1 cells for 2 columns"):
        tables.validate(_record("0" * 40, [], rows=[["only one"]]), "narrow")
    summary = [{"preset": "fast", "model": "net", "accuracy": {"cell": [5, 1]}, "wall_time": "1 min"}]
    with pytest.raises(tables.ResultError, match="outside the table"):
        tables.validate(_record("0" * 40, [], summary=summary), "far")


def test_unknown_values_say_not_recorded():
    record = tables.validate(_record("0" * 40, [], machine=None, seeds=None, command=None), "unknown")
    text = tables.caption(record, git=None)
    assert "Machine: machine not recorded" in text
    assert "Command: not recorded" in text
    assert "Seeds: not recorded" in text


@pytest.fixture
def history(tmp_path):
    """A throwaway repository: src/a.py and src/b.py in a first commit, src/a.py changed in a second."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    _git(tmp_path, "init", "-q", str(repo))
    (repo / "src" / "a.py").write_text("A = 1\n")
    (repo / "src" / "b.py").write_text("B = 1\n")
    _git(repo, "add", "src")
    _git(repo, "commit", "-q", "-m", "first")
    first = _git(repo, "rev-parse", "HEAD")
    (repo / "src" / "a.py").write_text("A = 2\n")
    _git(repo, "commit", "-q", "-am", "second: a changes")
    second = _git(repo, "rev-parse", "HEAD")
    results = repo / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "changed.json").write_text(json.dumps(_record(first, ["src/a.py"], title="Depends on a")))
    (results / "unchanged.json").write_text(json.dumps(_record(first, ["src/b.py"], title="Depends on b")))
    (repo / "benchmarks" / "RESULTS.md").write_text(
        "# Results\n\nSome prose.\n\n<!-- table:changed:begin -->\n<!-- table:changed:end -->\n\nMore prose.\n\n"
        "<!-- table:unchanged:begin -->\nold text\n<!-- table:unchanged:end -->\n"
    )
    (repo / "README.md").write_text("# A project\n\nNo markers here.\n")
    return repo, first, second


def _block(text: str, name: str) -> str:
    begin, end = f"<!-- table:{name}:begin -->", f"<!-- table:{name}:end -->"
    return text[text.index(begin):text.index(end)]


def test_a_result_whose_dependency_changed_after_its_revision_is_marked_stale(history, capsys):
    repo, first, second = history
    assert tables.main(["--root", str(repo)]) == 0
    assert "README.md: no '<!-- results:begin -->'" in capsys.readouterr().err  # skipped with a note
    assert (repo / "README.md").read_text() == "# A project\n\nNo markers here.\n"
    text = (repo / "benchmarks" / "RESULTS.md").read_text()
    changed, unchanged = _block(text, "changed"), _block(text, "unchanged")
    assert f"measured at {first[:7]}; code it depends on changed since: re-measure" in changed
    assert f"first change after {first[:7]}: {second[:7]}" in changed
    assert "re-measure" not in unchanged
    assert f"Measured at {first[:7]}; nothing it depends on changed since" in unchanged
    for block in (changed, unchanged):
        assert "Machine: Some CPU, 2 cores, flags avx2, native bfloat16: no." in block
        assert f"Revision: {first[:7]} (2026-01-01)" in block
        assert "Command: `python benchmarks/something.py --rounds 2`" in block
        assert "Seeds: 0, 1." in block
        assert "| cnnlab | 123 |" in block
    assert "Some prose." in text and "More prose." in text and "old text" not in text

    assert tables.main(["--root", str(repo), "--check"]) == 0
    assert tables.main(["--root", str(repo), "--check-stale"]) == 1
    out = capsys.readouterr().out
    assert f"changed: measured at {first[:7]}; code it depends on changed since: re-measure" in out
    assert "unchanged" not in out


def test_check_names_a_number_edited_by_hand(history, capsys):
    repo = history[0]
    assert tables.main(["--root", str(repo)]) == 0
    results_md = repo / "benchmarks" / "RESULTS.md"
    results_md.write_text(results_md.read_text().replace("| cnnlab | 123 |", "| cnnlab | 125 |", 1))
    capsys.readouterr()
    assert tables.main(["--root", str(repo), "--check"]) == 1
    error = capsys.readouterr().err
    assert "benchmarks/RESULTS.md differs" in error
    assert "'| cnnlab | 125 |'" in error and "'| cnnlab | 123 |'" in error
    assert "| cnnlab | 125 |" in results_md.read_text()  # --check changes nothing


def test_a_result_without_its_block_or_a_block_without_its_result_is_refused(history, capsys):
    repo = history[0]
    results_md = repo / "benchmarks" / "RESULTS.md"
    results_md.write_text(results_md.read_text().replace("<!-- table:unchanged:begin -->\nold text\n"
                                                         "<!-- table:unchanged:end -->\n", ""))
    assert tables.main(["--root", str(repo), "--check"]) == 2
    assert "no block for benchmarks/results/unchanged.json" in capsys.readouterr().err
    (repo / "benchmarks" / "results" / "unchanged.json").unlink()
    results_md.write_text(results_md.read_text() + "<!-- table:gone:begin -->\n<!-- table:gone:end -->\n")
    assert tables.main(["--root", str(repo), "--check"]) == 2
    assert "block 'gone' has no result file" in capsys.readouterr().err


def test_readme_gets_the_summary_rows_between_its_markers(history):
    repo, first, _ = history
    summary = [{"preset": "`fast`", "model": "fast net", "accuracy": [{"cell": [0, 1]}, " img/s"],
                "wall_time": "16 min"}]
    (repo / "benchmarks" / "results" / "changed.json").write_text(
        json.dumps(_record(first, ["src/a.py"], summary=summary)))
    (repo / "README.md").write_text("# A project\n\n<!-- results:begin -->\n<!-- results:end -->\n\nAfter.\n")
    assert tables.main(["--root", str(repo)]) == 0
    readme = (repo / "README.md").read_text()
    row = (f"| `fast` | fast net | 123 img/s | 16 min | 0, 1 | Some CPU, avx2 | {first[:7]} (code changed since: "
           "re-measure) | [changed](benchmarks/RESULTS.md) |")
    assert row in readme
    assert readme.endswith("<!-- results:end -->\n\nAfter.\n")
    assert tables.main(["--root", str(repo), "--check"]) == 0


def test_an_unknown_revision_is_refused(history, capsys):
    repo = history[0]
    (repo / "benchmarks" / "results" / "changed.json").write_text(json.dumps(_record("1" * 40, ["src/a.py"])))
    assert tables.main(["--root", str(repo), "--check"]) == 2
    assert "revision 1111111 is not a commit of this repository's history" in capsys.readouterr().err
