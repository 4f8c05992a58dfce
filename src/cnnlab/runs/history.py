"""history.csv, one row per epoch: written whole and atomically at each epoch end, read back as columns.

Columns as Keras's CSVLogger writes them: "epoch", then the logged values by name, "NA" where an epoch has none.
"""

from __future__ import annotations

import csv
from pathlib import Path

from cnnlab.common.errors import CnnlabError, first_line
from cnnlab.common.files import atomic_path


def history_number(value: str | None) -> float:
    """A history.csv cell as a number; blank cells and Keras's "NA" (no validation set) are NaN."""
    return float("nan") if value in ("", None, "NA") else float(value)


def read_history(history_csv: Path) -> dict[str, list[float]]:
    """history.csv as columns: {"epoch": [...], "loss": [...], "val_accuracy": [...], ...}."""
    columns: dict[str, list[float]] = {}
    try:
        with open(history_csv, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                for key, value in row.items():
                    columns.setdefault(key, []).append(history_number(value))
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise CnnlabError(f"cannot read {history_csv}: {first_line(exc)}") from None
    return columns


def read_rows(history_csv: Path) -> list[dict[str, str]]:
    if not history_csv.is_file():
        return []
    try:
        with open(history_csv, newline="", encoding="utf-8") as handle:
            return [row for row in csv.DictReader(handle) if complete_row(row)]
    except (OSError, csv.Error, UnicodeDecodeError) as exc:  # e.g. the zero-filled blocks a power cut can leave
        raise CnnlabError(f"{history_csv} is damaged ({first_line(exc)})") from None


def write_rows(history_csv: Path, rows: list[dict], columns: list[str]) -> None:
    with atomic_path(history_csv) as temporary:
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            if rows:
                writer = csv.DictWriter(handle, fieldnames=columns, restval="NA")
                writer.writeheader()
                writer.writerows(rows)


def complete_row(row: dict) -> bool:
    """False for the half-written last line a kill can leave in history.csv."""
    try:
        int(row["epoch"])
        return all(value not in (None, "") for value in row.values())
    except (KeyError, TypeError, ValueError):
        return False
