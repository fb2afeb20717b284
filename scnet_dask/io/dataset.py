"""Datasets: the tomograms of a session, found from the layout a pipeline wrote.

``find_dataset(SOURCE)`` recognises (``../shared/DESIGN.md``, "Datasets"):

- an **AreTomo3** folder: ``NAME_Vol.mrc`` with ``NAME_EVN_Vol.mrc`` / ``NAME_ODD_Vol.mrc``
  beside it (the halves belong to ``NAME``; they are not tomograms of their own);
- a **Warp / WarpTools** ``reconstruction/`` folder (or the folder holding it): ``NAME.mrc``
  with ``even/NAME.mrc`` and ``odd/NAME.mrc`` (names keep their dots: ``TS_1_10.00Apx``);
- a **RELION-5** ``tomograms.star`` (:mod:`scnet_dask.io.star`);
- a **glob** or a **folder** of MRC / TIFF / OME-Zarr volumes, one tomogram each;
- a **list**: a YAML (a list of mappings) or CSV file with columns ``name, full, even, odd``.

Ambiguity is refused with one line naming the files: two conventions in one folder, a half
without its partner, two files that give one name.
"""

from __future__ import annotations

import csv
import glob
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scnet_dask.errors import InputError
from scnet_dask.io.mrc import MRC_SUFFIXES
from scnet_dask.io.omezarr import is_zarr
from scnet_dask.io.star import read_tomograms_star
from scnet_dask.io.tiff import TIFF_SUFFIXES

__all__ = ["Tomogram", "Dataset", "find_dataset", "select"]

log = logging.getLogger(__name__)

_ARETOMO = re.compile(r"^(?P<name>.+?)(?P<half>_EVN|_ODD)?_Vol\.mrc$", re.IGNORECASE)
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Tomogram:
    """One tomogram of a dataset: its name and the files that hold it.

    Attributes
    ----------
    name
        Unique within the dataset; names the outputs (``DIR/NAME.mrc``).
    full
        The full reconstruction, or ``None`` when only halves exist.
    even, odd
        The half reconstructions (both or neither).
    voxel_size_angstrom
        (z, y, x) in Å from the dataset's table (a STAR file), or ``None``: from the header.

    """

    name: str
    full: Path | None = None
    even: Path | None = None
    odd: Path | None = None
    voxel_size_angstrom: tuple[float, float, float] | None = None

    @property
    def files(self) -> list[Path]:
        """Every file of the tomogram (full, even, odd; those that exist in the layout)."""
        return [p for p in (self.full, self.even, self.odd) if p is not None]

    @property
    def has_halves(self) -> bool:
        """Both halves are present."""
        return self.even is not None and self.odd is not None


@dataclass
class Dataset:
    """The tomograms found at ``source`` in the ``layout`` it was written in."""

    source: str
    layout: str
    tomograms: list[Tomogram]
    star: Any = field(default=None, repr=False)  # the parsed STAR blocks (RELION-5)

    def names(self) -> list[str]:
        """The tomograms' names, in dataset order."""
        return [t.name for t in self.tomograms]


def _is_volume(p: Path) -> bool:
    suffix = p.suffix.lower()
    if p.is_dir():
        return is_zarr(p)
    return suffix in MRC_SUFFIXES or suffix in TIFF_SUFFIXES


def _stem(p: Path) -> str:
    """A volume's name: the file name without its (last) volume suffix; dots elsewhere kept."""
    name = p.name
    for suf in (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif", *MRC_SUFFIXES, *TIFF_SUFFIXES):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return p.stem


def _unique(tomos: Iterable[Tomogram], source: object) -> list[Tomogram]:
    """``tomos`` sorted by name; two with one name are refused, naming both files."""
    seen: dict[str, Tomogram] = {}
    for t in tomos:
        if t.name in seen:
            a, b = seen[t.name].files[0], t.files[0]
            raise InputError(f"{source}: two volumes give the tomogram name {t.name!r}: {a}, {b}")
        seen[t.name] = t
    return [seen[k] for k in sorted(seen)]


class _Unpaired(InputError):
    """A half without its partner (skipped instead of refused when not strict)."""


def _paired(name: str, full: Path | None, even: Path | None, odd: Path | None) -> Tomogram:
    if (even is None) != (odd is None):
        have, missing = (even, "odd") if even is not None else (odd, "even")
        raise _Unpaired(f"{have}: half of tomogram {name!r} without its {missing} partner")
    return Tomogram(name, full, even, odd)


def _pairs(
    rows: Iterable[tuple[str, Path | None, Path | None, Path | None]], strict: bool
) -> list[Tomogram]:
    """Tomograms of ``(name, full, even, odd)`` rows.

    An unpaired half is refused when ``strict``, else left out (logged): during a live
    acquisition its partner may follow.
    """
    out = []
    for row in rows:
        try:
            out.append(_paired(*row))
        except _Unpaired as e:
            if strict:
                raise
            log.info("%s (not yet complete)", e)
    return out


def _aretomo3(folder: Path, files: Sequence[Path], strict: bool) -> list[Tomogram]:
    groups: dict[str, dict[str, Path]] = {}
    for p in files:
        m = _ARETOMO.match(p.name)
        if m:
            half = (m.group("half") or "full").lstrip("_").lower()
            groups.setdefault(m.group("name"), {})[half] = p
    rows = [(n, g.get("full"), g.get("evn"), g.get("odd")) for n, g in groups.items()]
    return _unique(_pairs(rows, strict), folder)


def _warp(folder: Path, strict: bool) -> list[Tomogram]:
    def volumes(d: Path) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for p in sorted(d.iterdir()) if d.is_dir() else []:
            if p.is_file() and p.suffix.lower() in MRC_SUFFIXES:
                out[_stem(p)] = p
        return out

    full, even, odd = volumes(folder), volumes(folder / "even"), volumes(folder / "odd")
    names = sorted(set(full) | set(even) | set(odd))
    return _pairs(((n, full.get(n), even.get(n), odd.get(n)) for n in names), strict)


def _folder(folder: Path, strict: bool) -> tuple[str, list[Tomogram]]:
    if (folder / "reconstruction").is_dir() and not any(
        _is_volume(p) for p in folder.iterdir() if p.name != "reconstruction"
    ):
        folder = folder / "reconstruction"
    files = sorted(p for p in folder.iterdir() if _is_volume(p))
    aretomo = [p for p in files if _ARETOMO.match(p.name)]
    warp = (folder / "even").is_dir() or (folder / "odd").is_dir()
    if aretomo and warp:
        raise InputError(
            f"{folder}: two conventions in one folder: AreTomo3 volumes ({aretomo[0].name}, ...) "
            f"and Warp even/odd folders; point --dataset at one of them"
        )
    if aretomo:
        others = [p for p in files if p not in aretomo]
        if others:  # AreTomo3 also writes tilt series (NAME.mrc, NAME_EVN.mrc, ...)
            log.info(
                "%s: AreTomo3 layout; %d other file(s) ignored (%s, ...)",
                folder, len(others), others[0].name,
            )  # fmt: skip
        return "aretomo3", _aretomo3(folder, aretomo, strict)
    if warp:
        return "warp", _warp(folder, strict)
    return "folder", _unique((Tomogram(_stem(p), p) for p in files), folder)


def _listed(path: Path) -> list[Tomogram]:
    """A YAML (list of mappings) or CSV file of ``name, full, even, odd`` (paths relative to it)."""
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="") as f:
                rows: Any = list(csv.DictReader(f))
        else:
            rows = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, csv.Error, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a readable dataset list ({type(e).__name__})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InputError(f"{path}: a dataset list is a list of name/full/even/odd rows")

    def rel(v: Any) -> Path | None:
        if v in (None, ""):
            return None
        p = Path(str(v))
        return p if p.is_absolute() else path.parent / p

    out = []
    for i, r in enumerate(rows, 1):
        unknown = set(r) - {"name", "full", "even", "odd"}
        if unknown:
            raise InputError(f"{path}: row {i}: unknown column(s) {sorted(unknown)}")
        full, even, odd = rel(r.get("full")), rel(r.get("even")), rel(r.get("odd"))
        anyfile = full or even or odd
        if anyfile is None:
            raise InputError(f"{path}: row {i} names no volume")
        name = str(r.get("name") or _stem(anyfile))
        out.append(_paired(name, full, even, odd))
    return _unique(out, path)


def find_dataset(source: str | Path, strict: bool = True) -> Dataset:
    """The tomograms at ``source`` (a folder, a glob, a ``.star``, a ``.yaml``/``.csv`` list).

    ``strict=False`` (``--live``) leaves out a half whose partner is not there yet instead of
    refusing the dataset.

    Raises
    ------
    InputError
        Nothing found, a missing file, or an ambiguity (named with its files).

    """
    text = str(source)
    path = Path(text)
    if _GLOB_CHARS.search(text) and not path.exists():
        files = sorted(Path(p) for p in glob.glob(text))
        vols = [p for p in files if _is_volume(p)]
        layout, tomos = "glob", _unique((Tomogram(_stem(p), p) for p in vols), text)
        ds = Dataset(text, layout, tomos)
    elif not path.exists():
        raise InputError(f"{path}: no such dataset (a folder, a glob, a .star, .yaml or .csv)")
    elif path.is_file() and path.suffix.lower() == ".star":
        rows, blocks = read_tomograms_star(path)
        ds = Dataset(text, "relion5", _unique((Tomogram(**r) for r in rows), path), blocks)
    elif path.is_file() and path.suffix.lower() in (".yaml", ".yml", ".csv"):
        ds = Dataset(text, "list", _listed(path))
    elif path.is_dir() and not is_zarr(path):
        layout, tomos = _folder(path, strict)
        ds = Dataset(text, layout, tomos)
    else:
        raise InputError(f"{path}: a dataset is a folder, a glob, a .star, .yaml or .csv file")
    if not ds.tomograms:
        raise InputError(f"{source}: no tomograms found ({ds.layout} layout)")
    log.info("%s: %s layout, %d tomograms", source, ds.layout, len(ds.tomograms))
    return ds


def _names(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


def select(ds: Dataset, tomograms: str | None = None, exclude: str | None = None) -> Dataset:
    """``ds`` restricted to the comma-separated ``tomograms`` and without ``exclude``.

    Raises
    ------
    InputError
        A name that is not in the dataset (the message lists a few that are).

    """
    known = set(ds.names())
    want, drop = _names(tomograms), _names(exclude)
    unknown = [n for n in want + drop if n not in known]
    if unknown:
        have = ", ".join(ds.names()[:5]) + (", ..." if len(known) > 5 else "")
        raise InputError(f"{ds.source}: no tomogram named {unknown[0]!r} (it has {have})")
    keep = [t for t in ds.tomograms if (not want or t.name in want) and t.name not in drop]
    if not keep:
        raise InputError(f"{ds.source}: the selection leaves no tomogram")
    return Dataset(ds.source, ds.layout, keep, ds.star)
