"""The benchmark scripts' own behaviour (their measurements live in benchmarks/RESULTS.md, not in tests)."""

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_preset_seeds_stops_with_one_line_when_a_run_fails(tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "preset_seeds.py"), "--preset", "no-such-preset", "--data", str(tmp_path),
         "--seeds", "0", "1", "--out", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("preset_seeds: seed 0: cnnlab train failed")
    assert "seed 1" not in result.stdout + result.stderr
