"""The attributes every written volume carries: name, source, voxel size and provenance.

One place for what each command that writes a volume (convert, prior, denoise, simulate)
stores, so that voxel size and provenance survive every step the same way.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scnet_dask import __version__

if TYPE_CHECKING:
    from scnet_dask.io import Volume

__all__ = ["provenance_entry", "volume_attrs"]


def provenance_entry(step: str, **details: Any) -> dict[str, Any]:
    """One provenance record: the step, scnet-dask's version, a UTC time stamp and details."""
    return {
        "step": step,
        "scnet_dask_version": __version__,
        "time_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **details,
    }


def volume_attrs(
    output: str | Path,
    step: str,
    parent: Volume | None,
    voxel_size_angstrom: tuple[float, float, float] | None = None,
    extra: dict[str, Any] | None = None,
    **details: Any,
) -> dict[str, Any]:
    """Attributes of a volume written by ``step`` from ``parent`` (``None``: made from scratch).

    Parameters
    ----------
    output
        The volume being written (its name is recorded).
    step
        The command, e.g. ``"denoise"``.
    parent
        The input volume: its source header, voxel size (unless ``voxel_size_angstrom`` is
        given) and provenance chain are carried over; a new entry for ``step`` with
        ``details`` is appended.
    voxel_size_angstrom
        (z, y, x) in Å, when it differs from the source's (e.g. after ``--swap-yz``).
    extra
        More top-level attributes (e.g. ``source_dtype``).

    """
    voxel = voxel_size_angstrom or (parent.voxel_size_angstrom if parent is not None else None)
    if voxel is None:
        raise ValueError(f"{output}: a voxel size is needed without a source volume, got None")
    attrs: dict[str, Any] = {"name": Path(output).name}
    if parent is not None:
        attrs["source_path"] = str(Path(parent.path).resolve())
        attrs["source"] = parent.attrs.get("source", {})
        if "source_dtype" in parent.attrs:  # so that ``export --dtype source`` finds it
            attrs["source_dtype"] = parent.attrs["source_dtype"]
    attrs["voxel_size_angstrom"] = [float(v) for v in voxel]
    attrs["voxel_size_found"] = bool(parent.voxel_size_found) if parent is not None else True
    chain = list(parent.attrs.get("provenance", [])) if parent is not None else []
    attrs["provenance"] = [*chain, provenance_entry(step, **details)]
    attrs.update(extra or {})
    return attrs
