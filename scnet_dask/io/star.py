"""RELION-5 ``tomograms.star``: read the tomograms of a project, write the denoised column back.

Parsed with ``starfile`` (teamtomo): a maintained STAR reader/writer built on pandas that reads
every data block, loops and single-row blocks alike, and writes them back in RELION's syntax —
hand parsing would have to redo its quoting, comments and block handling.

Paths in a RELION STAR file are relative to the RELION project directory, which is the working
directory RELION runs in: each path is resolved there first, then relative to the STAR file's
folder (for a project opened from elsewhere), and the choice is logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import starfile

from scnet_dask.errors import InputError

__all__ = ["read_tomograms_star", "write_denoised_star", "DENOISED_COLUMN", "TOMOGRAM_BLOCK"]

log = logging.getLogger(__name__)

#: The column RELION-5 reads the denoised tomogram from.
DENOISED_COLUMN = "rlnTomoReconstructedTomogramDenoised"
#: The block of ``tomograms.star`` with one row per tomogram.
TOMOGRAM_BLOCK = "global"


def _table(blocks: Mapping[str, Any], path: Path) -> tuple[str, pd.DataFrame]:
    """The block holding ``rlnTomoName`` rows (``global`` in RELION-5)."""
    for name, df in blocks.items():
        if isinstance(df, pd.DataFrame) and "rlnTomoName" in df.columns:
            return name, df
    raise InputError(f"{path}: no data block with rlnTomoName (not a RELION-5 tomograms.star)")


def _resolve(value: Any, star: Path, column: str, row: str) -> Path | None:
    """A STAR path: relative to the working directory (the RELION project), else to the file."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or str(value) == "":
        return None
    p = Path(str(value))
    if p.is_absolute():
        return p
    if p.exists():
        return p
    beside = star.parent / p
    if beside.exists():
        log.info(
            "%s: %s of %s resolved relative to the STAR file's folder (%s), not the "
            "working directory", star, column, row, beside,
        )  # fmt: skip
        return beside
    raise InputError(
        f"{star}: {column} of {row}: {p} found neither in the working directory (the RELION "
        f"project) nor beside the STAR file"
    )


def _voxel(row: pd.Series) -> tuple[float, float, float] | None:
    """The tomogram's voxel size from the table: tilt-series pixel size x binning, if present."""
    px = row.get("rlnTomoTiltSeriesPixelSize")
    if px is None or pd.isna(px):
        return None
    binning = row.get("rlnTomoTomogramBinning", 1.0)
    v = float(px) * (1.0 if binning is None or pd.isna(binning) else float(binning))
    return (v, v, v)


def read_tomograms_star(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The tomograms of a RELION-5 ``tomograms.star`` and its parsed blocks (kept for writing).

    Returns
    -------
    (list of dict, dict of blocks)
        One row per ``rlnTomoName``: ``name``, ``full`` (``rlnTomoReconstructedTomogram``,
        optional), ``even``/``odd`` (``rlnTomoReconstructedTomogramHalf1/2``) as resolved paths,
        and ``voxel_size_angstrom`` from ``rlnTomoTiltSeriesPixelSize`` x
        ``rlnTomoTomogramBinning`` when given (else ``None``).

    """
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as e:  # starfile raises several types on malformed text
        raise InputError(f"{path}: not a readable STAR file ({type(e).__name__}: {e})") from None
    _, df = _table(blocks, path)
    tomos = []
    for _, row in df.iterrows():
        name = str(row["rlnTomoName"])

        def col(c: str, row: pd.Series = row, name: str = name) -> Path | None:
            return _resolve(row.get(c), path, c, name)

        even = col("rlnTomoReconstructedTomogramHalf1")
        odd = col("rlnTomoReconstructedTomogramHalf2")
        full = col("rlnTomoReconstructedTomogram")
        if (even is None) != (odd is None):
            raise InputError(f"{path}: tomogram {name!r} has one half reconstruction, not two")
        if full is None and even is None:
            raise InputError(f"{path}: tomogram {name!r} names no reconstruction")
        tomos.append(
            {"name": name, "full": full, "even": even, "odd": odd,
             "voxel_size_angstrom": _voxel(row)}
        )  # fmt: skip
    return tomos, dict(blocks)


def write_denoised_star(
    blocks: Mapping[str, Any], star_in: Path, target: Path, outputs: Mapping[str, Path]
) -> None:
    """Write ``target``: the input's blocks, plus ``rlnTomoReconstructedTomogramDenoised``.

    Every other column and block is kept as read. ``outputs`` maps tomogram names to their
    denoised files; rows without one get ``None`` (RELION's empty value). Paths are written
    relative to the working directory (the RELION project) when they lie under it.
    """
    name, df = _table(blocks, star_in)
    cwd = Path.cwd().resolve()

    def rel(p: Path) -> str:
        full = p.resolve()
        try:
            return str(full.relative_to(cwd))
        except ValueError:
            return str(full)

    out = df.copy()
    out[DENOISED_COLUMN] = [
        rel(outputs[n]) if n in outputs else None for n in df["rlnTomoName"].astype(str)
    ]
    new = {k: (out if k == name else v) for k, v in blocks.items()}
    tmp = target.with_name(f".{target.name}.partial")
    starfile.write(new, tmp, overwrite=True)
    os.replace(tmp, target)
