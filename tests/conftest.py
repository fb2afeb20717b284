from __future__ import annotations

import hashlib
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from scnet_dask.cli.app import main

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared(rel: str) -> Path:
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"shared data {p} not present")
    return p


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            if f.is_file():
                h.update(f.read_bytes())
    else:
        h.update(path.read_bytes())
    return h.hexdigest()


def write_mrc(
    path: Path, data: np.ndarray, voxel: float = 7.5, labels: tuple[str, ...] = ()
) -> Path:
    with mrcfile.new(path, overwrite=True) as m:
        m.set_data(data)
        m.voxel_size = voxel
        for lab in labels:
            m.add_label(lab)
    return path


@pytest.fixture
def small_volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[0:20, 0:33, 0:41].astype(np.float32)
    return (
        np.sin(x / 4) * np.cos(y / 5) + 0.1 * z / 20 + 0.2 * rng.standard_normal((20, 33, 41))
    ).astype(np.float32)


@pytest.fixture
def small_mrc(tmp_path: Path, small_volume: np.ndarray) -> Path:
    return write_mrc(tmp_path / "small.mrc", small_volume, labels=("test label one",))


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the real entry point in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    code = exc.value.code
    return (int(code) if code is not None else 0), out, err
