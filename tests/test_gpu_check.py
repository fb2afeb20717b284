"""The GPU acceptance script runs end to end on the CPU (``--dry-run``): every step wired."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_wires_every_step(tmp_path):
    out = tmp_path / "gpu_check.md"
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    table = out.read_text()
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and "---" not in ln][1:]
    assert len(rows) == 6 and all(ln.rstrip().endswith("| ok |") for ln in rows), table
    assert "identical: True" in table and "dry run" in table
