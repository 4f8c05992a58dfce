"""The measured results' tables, generated from benchmarks/results/*.json, never copied by hand.

Each file in benchmarks/results/ is one measured result: a table's rows from one set of runs, with the machine it
ran on, the git revision of the code it measured, the command, the seeds, and the paths in this repository whose
change could move its numbers (`depends_on`). This script writes each result's table, under a caption naming all
of that, into benchmarks/RESULTS.md between

    <!-- table:<name>:begin -->  and  <!-- table:<name>:end -->

(<name> is the file's name without .json), and a compact table of the presets' results into README.md between
`<!-- results:begin -->` and `<!-- results:end -->`. A result whose `depends_on` paths changed in a commit after
its revision (`git log <revision>..HEAD -- <paths>`) is marked in its caption: "measured at <rev>; code it depends
on changed since: re-measure".

    python benchmarks/tables.py                  rewrite the blocks in place
    python benchmarks/tables.py --check          exit 1, naming the first difference, if a file's blocks are not
                                                 what the result files generate (a number edited by hand)
    python benchmarks/tables.py --check-stale    list the results whose code changed since they were measured;
                                                 exit 1 if there is any
    --results-only                               with either of the first two: benchmarks/RESULTS.md alone

A result file's keys (all required unless marked optional; null where the record does not say, and the table then
says "not recorded"):

    title            what was measured
    command          the command(s) that measured it: a string, a list of strings, or null
    machine          {"cpu", "cores", "flags": [...], "bfloat16": true/false} (each null where unknown; optional
                     "memory_gib", "gpu"), or null
    software         optional: {"keras": ..., "tensorflow": ..., "python": ...}
    revision         the 40-digit commit the numbers were measured on, or null
    revision_source  optional: how the revision was found (the commit that recorded the numbers, or the text)
    date             the revision's commit date, YYYY-MM-DD, or null
    seeds            a list of seeds, a string, or null
    columns, rows    the table: a header cell per column, and rows of Markdown cells (strings)
    align            optional: one letter per column, "l" or "r"
    row_revisions    optional: per row, the commit(s) its numbers were measured on where they differ from
                     `revision` (null for the record's own); shown as a column and checked for staleness too
    notes            measured facts that belong to the result but not to a cell (Markdown strings)
    depends_on       paths in this repository (files or folders) whose change could move the numbers
    summary          optional: rows for README's table: {"preset", "model", "accuracy", "wall_time"} and
                     optionally "seeds" (else the record's), each value a string, {"cell": [row, column]} (a cell
                     of this table) or a list of those, concatenated; README's rows follow RESULTS.md's order
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path("benchmarks") / "results"
RESULTS_MD = Path("benchmarks") / "RESULTS.md"
README = Path("README.md")
MEASURED = Path("src") / "cnnlab" / "config" / "presets" / "measured.json"  # what `cnnlab presets` shows
README_BEGIN = "<!-- results:begin -->"
README_END = "<!-- results:end -->"
STALE = "code it depends on changed since: re-measure"

REQUIRED = ("title", "command", "machine", "revision", "date", "seeds", "columns", "rows", "notes", "depends_on")
OPTIONAL = ("software", "revision_source", "align", "row_revisions", "summary")
MACHINE_REQUIRED = ("cpu", "cores", "flags", "bfloat16")
MACHINE_OPTIONAL = ("memory_gib", "gpu")
SUMMARY_KEYS = ("preset", "model", "accuracy", "wall_time")
SUMMARY_OPTIONAL = ("seeds",)
NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
NOT_RECORDED = "not recorded"


class ResultError(Exception):
    """A result file, a marker or the git history is not what this script needs; the message says which."""


# ---------------------------------------------------------------------------------------------------------- reading


def _check_keys(mapping: dict, required: tuple, optional: tuple, said: str) -> None:
    """Every required key there (null where the record does not say) and no other than the optional ones."""
    for key in required:
        if key not in mapping:
            raise ResultError(f"{said} no '{key}' key (write null where the record does not say)")
    for key in mapping:
        if key not in required and key not in optional:
            raise ResultError(f"{said} an unknown key '{key}'")


def validate(record: object, name: str) -> dict:
    """Check one result's keys and shapes (not the git history); return it. Raises ResultError naming the key."""
    where = f"{RESULTS_DIR / (name + '.json')}"
    if not NAME.match(name):
        raise ResultError(f"{where}: the file name must be lower-case letters, digits and underscores")
    if not isinstance(record, dict):
        raise ResultError(f"{where}: not a JSON object")
    _check_keys(record, REQUIRED, OPTIONAL, f"{where}:")
    if not isinstance(record["title"], str) or not record["title"]:
        raise ResultError(f"{where}: 'title' must be a non-empty string")
    command = record["command"]
    if not (command is None or isinstance(command, str)
            or (isinstance(command, list) and command and all(isinstance(c, str) for c in command))):
        raise ResultError(f"{where}: 'command' must be a string, a list of strings or null")
    machine = record["machine"]
    if machine is not None:
        if not isinstance(machine, dict):
            raise ResultError(f"{where}: 'machine' must be an object or null")
        _check_keys(machine, MACHINE_REQUIRED, MACHINE_OPTIONAL, f"{where}: machine has")
        flags = machine["flags"]
        if flags is not None and not (isinstance(flags, list) and all(isinstance(f, str) for f in flags)):
            raise ResultError(f"{where}: machine.flags must be a list of strings or null")
        if machine["bfloat16"] not in (True, False, None):
            raise ResultError(f"{where}: machine.bfloat16 must be true, false or null")
        if machine["cores"] is not None and (not isinstance(machine["cores"], int) or machine["cores"] < 1):
            raise ResultError(f"{where}: machine.cores must be a positive integer or null")
    revision = record["revision"]
    if revision is not None and not (isinstance(revision, str) and COMMIT.match(revision)):
        raise ResultError(f"{where}: 'revision' must be a 40-digit lower-case commit hash or null")
    if record["date"] is not None and not (isinstance(record["date"], str) and DATE.match(record["date"])):
        raise ResultError(f"{where}: 'date' must be YYYY-MM-DD or null")
    seeds = record["seeds"]
    if not (seeds is None or isinstance(seeds, str)
            or (isinstance(seeds, list) and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds))):
        raise ResultError(f"{where}: 'seeds' must be a list of integers, a string or null")
    columns = record["columns"]
    if not (isinstance(columns, list) and columns and all(isinstance(c, str) for c in columns)):
        raise ResultError(f"{where}: 'columns' must be a non-empty list of strings")
    rows = record["rows"]
    if not (isinstance(rows, list) and rows):
        raise ResultError(f"{where}: 'rows' must be a non-empty list")
    for index, row in enumerate(rows):
        if not (isinstance(row, list) and all(isinstance(cell, str) for cell in row)):
            raise ResultError(f"{where}: row {index} must be a list of strings")
        if len(row) != len(columns):
            raise ResultError(f"{where}: row {index} has {len(row)} cells for {len(columns)} columns")
        if any("\n" in cell for cell in row):
            raise ResultError(f"{where}: row {index} has a line break in a cell")
    if "align" in record:
        align = record["align"]
        if not (isinstance(align, str) and len(align) == len(columns) and set(align) <= {"l", "r"}):
            raise ResultError(f"{where}: 'align' must be one letter per column, l or r")
    if "row_revisions" in record:
        row_revisions = record["row_revisions"]
        if not (isinstance(row_revisions, list) and len(row_revisions) == len(rows)):
            raise ResultError(f"{where}: 'row_revisions' must have one entry per row")
        for entry in row_revisions:
            for revision in _as_list(entry):
                if not (isinstance(revision, str) and COMMIT.match(revision)):
                    raise ResultError(f"{where}: 'row_revisions' entries must be 40-digit commit hashes or null")
        if record["revision"] is None:
            raise ResultError(f"{where}: 'row_revisions' needs the record's own 'revision'")
    notes = record["notes"]
    if not (isinstance(notes, list) and all(isinstance(n, str) and n and "\n" not in n for n in notes)):
        raise ResultError(f"{where}: 'notes' must be a list of one-line strings")
    depends_on = record["depends_on"]
    if not (isinstance(depends_on, list) and all(isinstance(p, str) and p for p in depends_on)):
        raise ResultError(f"{where}: 'depends_on' must be a list of paths")
    for path in depends_on:
        if path.startswith("/") or ".." in Path(path).parts:
            raise ResultError(f"{where}: depends_on path '{path}' must be relative to the repository, inside it")
    if "software" in record and not (isinstance(record["software"], dict)
                                     and all(isinstance(v, str) for v in record["software"].values())):
        raise ResultError(f"{where}: 'software' must map names to version strings")
    if "revision_source" in record and not isinstance(record["revision_source"], str):
        raise ResultError(f"{where}: 'revision_source' must be a string")
    for index, entry in enumerate(record.get("summary", [])):
        if not isinstance(entry, dict) or not set(SUMMARY_KEYS) <= set(entry) <= {*SUMMARY_KEYS, *SUMMARY_OPTIONAL}:
            raise ResultError(f"{where}: summary {index} must have the keys {', '.join(SUMMARY_KEYS)} (and "
                              f"optionally {', '.join(SUMMARY_OPTIONAL)})")
        for key in entry:
            _summary_value(entry[key], rows, f"{where}: summary {index}.{key}")
    return record


def load_results(root: Path) -> dict[str, dict]:
    """Every result file under root/benchmarks/results, by name, validated."""
    folder = root / RESULTS_DIR
    if not folder.is_dir():
        raise ResultError(f"{RESULTS_DIR}: no such folder")
    results = {}
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ResultError(f"{RESULTS_DIR / path.name}: not readable JSON ({error})") from None
        results[path.stem] = validate(record, path.stem)
    if not results:
        raise ResultError(f"{RESULTS_DIR}: no result files")
    return results


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _summary_rows(entry: dict) -> set[int]:
    """The table rows a summary entry's cells come from."""
    found = set()
    for value in entry.values():
        for part in value if isinstance(value, list) else [value]:
            if isinstance(part, dict):
                found.add(part["cell"][0])
    return found


def _summary_value(value, rows: list, where: str) -> str:
    parts = value if isinstance(value, list) else [value]
    text = []
    for part in parts:
        if isinstance(part, str):
            text.append(part)
        elif isinstance(part, dict) and set(part) == {"cell"} and isinstance(part["cell"], list) \
                and len(part["cell"]) == 2 and all(isinstance(i, int) for i in part["cell"]):
            row, column = part["cell"]
            if not (0 <= row < len(rows) and 0 <= column < len(rows[row])):
                raise ResultError(f"{where}: cell {part['cell']} is outside the table")
            text.append(rows[row][column])
        else:
            raise ResultError(f"{where}: each part must be a string or {{\"cell\": [row, column]}}")
    return "".join(text)


# -------------------------------------------------------------------------------------------------------------- git


class Git:
    """The history questions this script asks, answered by `git` in the repository at root."""

    def __init__(self, root: Path):
        self.root = root
        self._first_change: dict[tuple, str | None] = {}

    def _run(self, *arguments: str) -> str:
        try:
            result = subprocess.run(["git", "-C", str(self.root), *arguments], capture_output=True, text=True,
                                    timeout=60)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise ResultError(f"git {' '.join(arguments)}: {error}") from None
        if result.returncode != 0:
            message = (result.stderr.strip().splitlines() or ["failed"])[-1]
            raise ResultError(f"git {' '.join(arguments)}: {message}")
        return result.stdout

    def check_commit(self, revision: str, where: str) -> None:
        try:
            self._run("cat-file", "-e", f"{revision}^{{commit}}")
        except ResultError:
            raise ResultError(f"{where}: revision {revision[:7]} is not a commit of this repository's history "
                              f"(a shallow clone lacks old commits)") from None

    def first_change(self, revision: str, paths: list[str]) -> str | None:
        """The first commit after revision, up to HEAD, that touched any of paths (None: none did)."""
        key = (revision, tuple(paths))
        if key not in self._first_change:
            if not paths:
                self._first_change[key] = None
            else:
                output = self._run("log", "--format=%H", f"{revision}..HEAD", "--", *paths)
                commits = output.split()
                self._first_change[key] = commits[-1] if commits else None
        return self._first_change[key]

    def commit_time(self, revision: str) -> int:
        return int(self._run("show", "-s", "--format=%ct", revision).strip())


def record_revisions(record: dict, rows: set[int] | None = None) -> list[str]:
    """The revisions a record's numbers (or only those of the given rows) were measured on."""
    if "row_revisions" not in record:
        return [record["revision"]] if record["revision"] else []
    entries = record["row_revisions"] if rows is None else [record["row_revisions"][i] for i in sorted(rows)]
    found = [record["revision"]] if rows is None else []
    for entry in entries:
        found += _as_list(entry) or [record["revision"]]
    return found


def staleness(record: dict, git: Git, rows: set[int] | None = None) -> tuple[list[str], dict[str, str]]:
    """The record's revisions (or those of the given rows), oldest first, and for each stale one the first later
    commit that touched depends_on."""
    revisions = []
    for revision in record_revisions(record, rows):
        if revision is not None and revision not in revisions:
            revisions.append(revision)
    revisions.sort(key=git.commit_time)
    stale = {}
    for revision in revisions:
        change = git.first_change(revision, record["depends_on"])
        if change is not None:
            stale[revision] = change
    return revisions, stale


# --------------------------------------------------------------------------------------------------------- rendering


def short(revision: str | None) -> str:
    return revision[:7] if revision else NOT_RECORDED


def _code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def machine_text(machine: dict | None) -> str:
    if machine is None:
        return f"machine {NOT_RECORDED}"
    cores = machine["cores"]
    parts = [machine["cpu"] or f"CPU {NOT_RECORDED}", f"{cores} cores" if cores else f"cores {NOT_RECORDED}"]
    flags = machine["flags"]
    parts.append(f"flags {', '.join(flags)}" if flags else f"flags {NOT_RECORDED}")
    bfloat16 = {True: "yes", False: "no", None: NOT_RECORDED}[machine["bfloat16"]]
    parts.append(f"native bfloat16: {bfloat16}")
    if machine.get("memory_gib") is not None:
        parts.append(f"{machine['memory_gib']} GiB")
    if machine.get("gpu") is not None:
        parts.append("no GPU" if machine["gpu"] == "none" else f"GPU {machine['gpu']}")
    return ", ".join(parts)


def machine_label(machine: dict | None) -> str:
    """The short form README's table uses."""
    if machine is None:
        return NOT_RECORDED
    flags = ", ".join(machine["flags"]) if machine["flags"] else f"flags {NOT_RECORDED}"
    return f"{machine['cpu'] or NOT_RECORDED}, {flags}"


def status_text(record: dict, git: Git) -> str:
    if record["revision"] is None:
        return f"**Revision {NOT_RECORDED}**: whether code it depends on changed since cannot be told; re-measure."
    revisions, stale = staleness(record, git)
    measured = ", ".join(short(r) for r in revisions)
    if stale:
        oldest = next(r for r in revisions if r in stale)
        return (f"**Stale: measured at {measured}; {STALE}** (first change after {short(oldest)}: "
                f"{short(stale[oldest])}). Depends on: {', '.join(_code(p) for p in record['depends_on'])}.")
    if not record["depends_on"]:
        return f"Measured at {measured}; it depends on no file of this repository."
    return (f"Measured at {measured}; nothing it depends on changed since "
            f"({', '.join(_code(p) for p in record['depends_on'])}).")


def caption(record: dict, git: Git | None = None, name: str | None = None) -> str:
    machine = machine_text(record["machine"])
    software = record.get("software")
    if software:
        machine += "; " + ", ".join(f"{name} {version}" for name, version in software.items())
    revision = short(record["revision"])
    details = [d for d in (record["date"], record.get("revision_source")) if d]
    if record["revision"] is not None and details:
        revision += f" ({'; '.join(details)})"
    commands = _as_list(record["command"])
    command = " and ".join(_code(c) for c in commands) if commands else NOT_RECORDED
    seeds = record["seeds"]
    if seeds is None:
        seeds_text = NOT_RECORDED
    elif isinstance(seeds, str):
        seeds_text = seeds
    else:
        seeds_text = ", ".join(str(s) for s in seeds)
    text = f"**{record['title']}.** Machine: {machine}. Revision: {revision}. Command: {command}. Seeds: {seeds_text}."
    if name is not None:
        text += f" Data: `{(RESULTS_DIR / (name + '.json')).as_posix()}`."
    return text


def _escape_cell(text: str) -> str:
    """A cell's | would end the cell: escaped, unless the cell escapes its own."""
    return text.replace("|", "\\|") if "|" in text and "\\|" not in text else text


def markdown_table(columns: list[str], rows: list[list[str]], align: str | None = None) -> list[str]:
    align = align or "l" * len(columns)
    lines = ["| " + " | ".join(_escape_cell(c) for c in columns) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(_escape_cell(c) for c in row) + " |" for row in rows]
    return lines


def render_block(name: str, record: dict, git: Git) -> str:
    """What goes between a result's markers in RESULTS.md (without the markers)."""
    columns, rows, align = list(record["columns"]), [list(r) for r in record["rows"]], record.get("align")
    if "row_revisions" in record:
        columns.append("revision")
        for row, entry in zip(rows, record["row_revisions"]):
            row.append(", ".join(short(r) for r in _as_list(entry)) or short(record["revision"]))
        align = (align or "l" * len(record["columns"])) + "l"
    lines = [f"<!-- generated by benchmarks/tables.py from {RESULTS_DIR.as_posix()}/{name}.json: edit that file "
             "and run the script, not this table -->",
             caption(record, git, name), "", status_text(record, git), "", *markdown_table(columns, rows, align)]
    if record["notes"]:
        lines.append("")
        lines += [f"- {note}" for note in record["notes"]]
    return "\n".join(lines) + "\n"


def render_readme_block(name: str, record: dict, git: Git) -> str:
    """A result as README.md shows it: its table, then one line naming its machine, revision and details."""
    revisions, stale = staleness(record, git) if record["revision"] else ([], {})
    revision = ", ".join(short(r) for r in revisions) or NOT_RECORDED
    if stale:
        revision += " (code changed since: re-measure)"
    lines = [f"<!-- generated by benchmarks/tables.py from {RESULTS_DIR.as_posix()}/{name}.json: edit that file "
             "and run the script, not this table -->",
             *markdown_table(list(record["columns"]), [list(r) for r in record["rows"]], record.get("align")), "",
             f"Measured on {machine_label(record['machine'])}, revision {revision}; how, and notes: "
             f"[benchmarks/RESULTS.md](benchmarks/RESULTS.md) ({name})."]
    return "\n".join(lines) + "\n"


def summary_rows(results: dict[str, dict], git: Git) -> list[list[str]]:
    """Every result's summary rows: preset, model, accuracy, wall time, seeds, machine, revision, data file name."""
    rows = []
    for name, record in results.items():
        seeds = record["seeds"]
        seeds_text = NOT_RECORDED if seeds is None else seeds if isinstance(seeds, str) else \
            ", ".join(str(s) for s in seeds)
        for entry in record.get("summary", []):
            source_rows = _summary_rows(entry)
            revisions, stale = staleness(record, git, source_rows if len(source_rows) == 1 else None) \
                if record["revision"] else ([], {})
            revision = ", ".join(short(r) for r in revisions) or NOT_RECORDED
            if stale:
                revision += " (code changed since: re-measure)"
            elif record["revision"] is None:
                revision += " (re-measure)"
            values = [_summary_value(entry[key], record["rows"], name) for key in SUMMARY_KEYS]
            entry_seeds = _summary_value(entry["seeds"], record["rows"], name) if "seeds" in entry else seeds_text
            rows.append([*values, entry_seeds, machine_label(record["machine"]), revision, name])
    return rows


def render_measured(results: dict[str, dict], git: Git) -> str:
    """What `cnnlab presets` shows each preset measured (config/presets/measured.json): its summary rows, in words."""
    measured: dict[str, list[str]] = {}
    for preset, model, accuracy, wall_time, seeds, machine, revision, _ in summary_rows(results, git):
        name = re.findall(r"`([^`]+)`", preset)
        if name:
            qualifier = preset.replace(f"`{name[0]}`", "").strip(" ,")
            qualifier = qualifier if qualifier.startswith("(") or not qualifier else f"({qualifier})"
            line = f"{model} {qualifier}".strip() + f": {accuracy}, {wall_time} per run (seeds {seeds}) on {machine}, " \
                                                   f"revision {revision}"
            measured.setdefault(name[0], []).append(re.sub(r"[*`]", "", line))  # Markdown's emphasis, not text
    return json.dumps(measured, indent=2, ensure_ascii=False) + "\n"


def render_readme(results: dict[str, dict], git: Git) -> str:
    """What goes between README's results markers: every result's summary rows."""
    rows = [[*row[:-1], f"[{row[-1]}](benchmarks/RESULTS.md)"] for row in summary_rows(results, git)]
    columns = ["preset", "model", "test accuracy", "wall time per run", "seeds", "machine", "revision",
               "details"]
    lines = ["<!-- generated by benchmarks/tables.py from benchmarks/results/*.json: edit those files and run the "
             "script, not this table -->",
             "Each row's machine, command, seeds and notes are in [benchmarks/RESULTS.md](benchmarks/RESULTS.md), "
             "in the table whose data file the last column names; a revision marked \"re-measure\" is older than "
             "a change to the code its numbers depend on.", "",
             *markdown_table(columns, rows)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------ the blocks


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- table:{name}:begin -->", f"<!-- table:{name}:end -->"


def replace_between(text: str, begin: str, end: str, body: str, where: str) -> str:
    if text.count(begin) != 1 or text.count(end) != 1:
        raise ResultError(f"{where}: needs exactly one '{begin}' and one '{end}' (found {text.count(begin)} and "
                          f"{text.count(end)})")
    start = text.index(begin) + len(begin)
    stop = text.index(end)
    if stop < start:
        raise ResultError(f"{where}: '{end}' comes before '{begin}'")
    return text[:start] + "\n" + body + text[stop:]


def generate(root: Path, notes: list[str] | None = None, with_readme: bool = True) -> dict[Path, tuple[str, str]]:
    """For each target file: (its text now, its text with every block generated). README.md is left out, with a
    line in notes, where its markers are absent (or with_readme is false)."""
    notes = notes if notes is not None else []
    results = load_results(root)
    git = Git(root)
    for name, record in results.items():
        where = f"{RESULTS_DIR / (name + '.json')}"
        for revision in [record["revision"], *[r for e in record.get("row_revisions", []) for r in _as_list(e)]]:
            if revision is not None:
                git.check_commit(revision, where)
    targets = {}
    results_md = root / RESULTS_MD
    if not results_md.is_file():
        raise ResultError(f"{RESULTS_MD}: no such file")
    text = results_md.read_text(encoding="utf-8")
    new = text
    for name, record in results.items():
        begin, end = _markers(name)
        if begin not in new:
            raise ResultError(f"{RESULTS_MD}: no block for {RESULTS_DIR / (name + '.json')} (add '{begin}' and "
                              f"'{end}' where its table belongs)")
        new = replace_between(new, begin, end, render_block(name, record, git), str(RESULTS_MD))
    for found in re.findall(r"<!-- table:([^:\s]+):begin -->", new):
        if found not in results:
            raise ResultError(f"{RESULTS_MD}: block '{found}' has no result file {RESULTS_DIR / (found + '.json')}")
    targets[RESULTS_MD] = (text, new)
    if not with_readme:
        return targets
    # README's rows follow the order of the blocks in RESULTS.md
    results = dict(sorted(results.items(), key=lambda item: new.index(_markers(item[0])[0])))
    measured = root / MEASURED
    targets[MEASURED] = (measured.read_text(encoding="utf-8") if measured.is_file() else "",
                         render_measured(results, git))
    readme = root / README
    readme_text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    if README_BEGIN in readme_text or README_END in readme_text:
        new_readme = replace_between(readme_text, README_BEGIN, README_END, render_readme(results, git), str(README))
        for found in re.findall(r"<!-- table:([^:\s]+):begin -->", new_readme):  # a result's own table, shown whole
            if found not in results:
                raise ResultError(f"{README}: block '{found}' has no result file {RESULTS_DIR / (found + '.json')}")
            new_readme = replace_between(new_readme, *_markers(found), render_readme_block(found, results[found], git),
                                         str(README))
        targets[README] = (readme_text, new_readme)
    else:
        notes.append(f"{README}: no '{README_BEGIN}' / '{README_END}' markers, so its results table was not "
                     "written")
    return targets


def first_difference(old: str, new: str) -> str:
    old_lines, new_lines = old.splitlines(), new.splitlines()
    for number, (was, now) in enumerate(zip(old_lines, new_lines), start=1):
        if was != now:
            return f"line {number}: the file has {was[:160]!r}, the results generate {now[:160]!r}"
    number = min(len(old_lines), len(new_lines)) + 1
    if len(old_lines) > len(new_lines):
        return f"line {number}: the file has {old_lines[number - 1][:160]!r}, the results generate nothing more"
    return f"line {number}: the file ends, the results generate {new_lines[number - 1][:160]!r}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true",
                       help="change nothing; exit 1 naming the first difference if a generated block differs")
    group.add_argument("--check-stale", action="store_true",
                       help="change nothing; list results whose code changed after their revision, exit 1 if any")
    parser.add_argument("--results-only", action="store_true",
                        help="write (or check) benchmarks/RESULTS.md alone, not README.md")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this script's)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    notes: list[str] = []
    try:
        if args.check_stale:
            results = load_results(root)
            git = Git(root)
            count = 0
            for name, record in results.items():
                if record["revision"] is None:
                    print(f"{name}: revision {NOT_RECORDED}: re-measure")
                    count += 1
                    continue
                git.check_commit(record["revision"], name)
                revisions, stale = staleness(record, git)
                for revision, change in stale.items():
                    print(f"{name}: measured at {short(revision)}; {STALE} (first change: {short(change)})")
                count += bool(stale)
            print(f"{count} of {len(results)} results stale", file=sys.stderr)
            return 1 if count else 0
        targets = generate(root, notes, with_readme=not args.results_only)
    except ResultError as error:
        print(f"tables.py: {error}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"tables.py: {note}", file=sys.stderr)
    for path, (old, new) in targets.items():
        if old == new:
            continue
        if args.check:
            print(f"tables.py: {path} differs from what benchmarks/results/ generates: {first_difference(old, new)}"
                  " (run python benchmarks/tables.py)", file=sys.stderr)
            return 1
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(new, encoding="utf-8")
        print(f"tables.py: wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
