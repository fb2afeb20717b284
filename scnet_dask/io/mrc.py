"""MRC/REC/ST/MRCS/MAP files: lazy reading by positioned reads, streamed writing.

Files are never memory-mapped for reading: a mapped file's pages count towards the process's
resident memory, so a 4 GiB tomogram would be resident by the end of a conversion. Each block is
read with plain ``readinto`` calls instead.
"""

from __future__ import annotations

import base64
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import mrcfile
import mrcfile.utils
import numpy as np

from scnet_dask.errors import InputError

__all__ = ["MRC_SUFFIXES", "MrcInfo", "read_mrc_header", "open_mrc", "write_mrc", "MrcReader"]

MRC_SUFFIXES = (".mrc", ".rec", ".st", ".mrcs", ".map", ".ali", ".preali")
_MAX_EXT_HEADER_BYTES = 4 * 1024 * 1024


@dataclass
class MrcInfo:
    """What an MRC header says about its volume.

    Attributes
    ----------
    shape
        (z, y, x) in voxels.
    voxel_size_angstrom
        (z, y, x) voxel size in Å.
    origin_angstrom
        (z, y, x) origin in Å, as stored in the header.
    start_voxels
        (nzstart, nystart, nxstart): the index of the first voxel in the map's grid (kept
        through every step and written back on export).

    """

    shape: tuple[int, int, int]
    dtype: np.dtype
    voxel_size_angstrom: tuple[float, float, float]
    origin_angstrom: tuple[float, float, float]
    mode: int
    labels: list[str]
    data_offset: int
    exttyp: str = ""
    extended_header_b64: str = ""
    start_voxels: tuple[int, int, int] = (0, 0, 0)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_attrs(self) -> dict[str, Any]:
        """Return the header fields as JSON-serialisable attributes."""
        return {
            "format": "mrc",
            "mode": self.mode,
            "labels": self.labels,
            "origin_angstrom": list(self.origin_angstrom),
            "start_voxels": list(self.start_voxels),
            "exttyp": self.exttyp,
            "extended_header_b64": self.extended_header_b64,
            **self.extra,
        }


def read_mrc_header(path: str | os.PathLike[str]) -> MrcInfo:
    """Read and check an MRC header without touching the data.

    Raises
    ------
    InputError
        If the file is not a readable MRC file, has an unsupported mode, is not 3-D, or is
        shorter than its header promises.

    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with mrcfile.open(path, mode="r", header_only=True, permissive=True) as mrc:
                header = mrc.header.copy()
                vs = mrc.voxel_size.copy()
                ext = mrc.extended_header
                ext_bytes = bytes(ext.tobytes()) if ext is not None else b""
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: not a readable MRC file ({e})") from e
    if header is None:
        raise InputError(f"{path}: not a readable MRC file (header too short)")
    try:
        dtype = mrcfile.utils.data_dtype_from_header(header)
    except ValueError as e:
        if bytes(header.map).strip(b"\x00 ") != b"MAP":  # old-style headers lack the ID
            raise InputError(
                f"{path}: not an MRC file (no 'MAP ' identifier and no valid mode)"
            ) from e
        raise InputError(f"{path}: unsupported MRC mode {int(header.mode)}") from e
    if np.dtype(dtype).kind == "c":
        raise InputError(
            f"{path}: complex data (MRC mode {int(header.mode)}) is not a real-valued volume; "
            "the imaginary part would be lost: convert it to real values first"
        )
    axes = (int(header.mapc), int(header.mapr), int(header.maps))
    if axes != (1, 2, 3) and axes != (0, 0, 0):
        raise InputError(
            f"{path}: MRC axis order mapc/mapr/maps = {axes[0]},{axes[1]},{axes[2]} is not the "
            "standard 1,2,3 (columns x, rows y, sections z); reorder it first (e.g. with "
            "IMOD's 'clip rotx' or 'trimvol -yz'): it is not reinterpreted here"
        )
    nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
    ispg = int(header.ispg)
    mz = int(header.mz) if int(header.mz) > 0 else nz
    if ispg >= 401 and mz != nz:
        raise InputError(
            f"{path}: 4-D MRC volume stack ({nz // max(mz, 1)} volumes of {mz} sections); "
            "expected one 3-D volume"
        )
    if nz <= 1 or ny <= 1 or nx <= 1:
        raise InputError(f"{path}: expected a 3-D volume, got shape (z, y, x) = ({nz}, {ny}, {nx})")
    offset = 1024 + int(header.nsymbt)
    expected = offset + nx * ny * nz * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise InputError(
            f"{path}: truncated MRC file: header promises {expected} bytes, file has {actual}"
        )
    voxel = (float(vs.z), float(vs.y), float(vs.x))
    org = header.origin
    labels = [bytes(lab).decode("latin-1").rstrip() for lab in header.label[: int(header.nlabl)]]
    ext_b64 = ""
    if 0 < len(ext_bytes) <= _MAX_EXT_HEADER_BYTES:
        ext_b64 = base64.b64encode(ext_bytes).decode("ascii")
    return MrcInfo(
        shape=(nz, ny, nx),
        dtype=np.dtype(dtype),
        voxel_size_angstrom=voxel,
        origin_angstrom=(float(org.z), float(org.y), float(org.x)),
        mode=int(header.mode),
        labels=labels,
        data_offset=offset,
        exttyp=bytes(header.exttyp).decode("latin-1").strip("\x00 "),
        extended_header_b64=ext_b64,
        start_voxels=(int(header.nzstart), int(header.nystart), int(header.nxstart)),
    )


class MrcReader:
    """A lazily-read, picklable array view of an MRC file's data, for ``dask.array.from_array``.

    Each ``__getitem__`` reads the whole x-rows of the requested z and y range with positioned
    reads and slices the rest in memory.
    """

    def __init__(self, path: str | os.PathLike[str], info: MrcInfo):
        self.path = str(path)
        self.shape = info.shape
        self.dtype = info.dtype
        self.ndim = 3
        self.offset = info.data_offset

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (3 - len(key))
        zs, ys, xs = (k if isinstance(k, slice) else slice(k, k + 1) for k in key)
        nz, ny, nx = self.shape
        z0, z1, zst = zs.indices(nz)
        y0, y1, _ = ys.indices(ny)
        item = self.dtype.itemsize
        zr = range(z0, z1, zst)
        out = np.empty((len(zr), max(y1 - y0, 0), nx), dtype=self.dtype)
        with open(self.path, "rb", buffering=0) as f:
            for i, z in enumerate(zr):
                f.seek(self.offset + (z * ny + y0) * nx * item)
                buf = memoryview(out[i]).cast("B")
                n = f.readinto(buf)
                if n != len(buf):
                    raise InputError(f"{self.path}: truncated MRC file (short read at z={z})")
        out = out[:, :: (ys.step or 1), xs]
        squeeze = tuple(i for i, k in enumerate(key) if not isinstance(k, slice))
        return out.squeeze(axis=squeeze) if squeeze else out


def open_mrc(
    path: str | os.PathLike[str], chunks: tuple[int, int, int] | None = None
) -> tuple[da.Array, MrcInfo]:
    """Open an MRC file as a lazily-read dask array of shape (z, y, x).

    Parameters
    ----------
    path
        The MRC file.
    chunks
        (z, y, x) chunk shape; by default 64 sections of full rows.

    """
    info = read_mrc_header(path)
    nz, ny, nx = info.shape
    if chunks is None:
        chunks = (min(64, nz), min(256, ny), nx)
    reader = MrcReader(path, info)
    arr = da.from_array(
        reader,
        chunks=chunks,
        lock=False,
        asarray=False,
        fancy=False,
        meta=np.empty((0, 0, 0), dtype=info.dtype),
        name=f"mrc-{os.path.abspath(path)}-{chunks}",
    )
    return arr, info


_MODE_FOR_DTYPE = {
    np.dtype(np.int8): 0,
    np.dtype(np.int16): 1,
    np.dtype(np.float32): 2,
    np.dtype(np.uint16): 6,
    np.dtype(np.float16): 12,
}


def _slab_bytes(block: np.ndarray) -> bytes:
    """The bytes of one slab as written to disk (a seam for fault-injection tests)."""
    return block.tobytes()


def _mrc_header(
    path: str | os.PathLike[str],
    dtype: np.dtype,
    shape: tuple[int, int, int],
    voxel_size_angstrom: tuple[float, float, float],
    attrs: dict[str, Any],
    ext: bytes,
) -> tuple[Any, bytes]:
    """Create ``path`` with the header of a (z, y, x) ``shape`` volume; its header, ext. header.

    Voxel size in Å, origin, the source's labels (then ours where there is room) and its
    extended header are kept.
    """
    nz, ny, nx = shape
    with mrcfile.new(path, overwrite=True) as mrc:
        # header only: set data as a tiny placeholder of the right dtype, then fix the header.
        mrc.set_data(np.zeros((1, 1, 1), dtype=dtype))
        if ext:
            mrc.set_extended_header(np.frombuffer(ext, dtype="V1"))
            exttyp = attrs.get("exttyp", "")
            if exttyp:
                mrc.header.exttyp = exttyp.encode("latin-1")[:4].ljust(4)
        h = mrc.header
        h.nx, h.ny, h.nz = nx, ny, nz
        h.mx, h.my, h.mz = nx, ny, nz
        h.ispg = 1
        vz, vy, vx = voxel_size_angstrom
        h.cella.x, h.cella.y, h.cella.z = vx * nx, vy * ny, vz * nz
        oz, oy, ox = attrs.get("origin_angstrom", (0.0, 0.0, 0.0))
        h.origin.x, h.origin.y, h.origin.z = ox, oy, oz
        sz, sy, sx = attrs.get("start_voxels", (0, 0, 0))
        h.nxstart, h.nystart, h.nzstart = int(sx), int(sy), int(sz)
        # the source's labels first (all ten if it had ten), then ours where there is room
        labels = [str(lab)[:80] for lab in attrs.get("labels", [])][:10]
        if len(labels) < 10:
            labels.append("scnet-dask: written by scnet-dask")
        h.label[:] = b""
        for i, lab in enumerate(labels):
            h.label[i] = lab.encode("latin-1", errors="replace")
        h.nlabl = len(labels)
        header = h.copy()
        ext_bytes = mrc.extended_header.tobytes() if mrc.extended_header is not None else b""
    return header, ext_bytes


def write_mrc(
    path: str | os.PathLike[str],
    data: da.Array,
    voxel_size_angstrom: tuple[float, float, float],
    header_attrs: dict[str, Any] | None = None,
    slab: int = 16,
    progress: Any = None,
) -> None:
    """Stream a (z, y, x) dask array into a new MRC file, slab by slab.

    Parameters
    ----------
    path
        Output file (written in place: wrap in :func:`atomic_output`).
    data
        Volume of dtype int8, int16, uint16, float16 or float32.
    voxel_size_angstrom
        (z, y, x) voxel size in Å.
    header_attrs
        Header fields from :meth:`MrcInfo.to_attrs` (labels, origin, extended header) to restore.
    slab
        Number of sections computed and written at a time.

    """
    dtype = np.dtype(data.dtype)
    if dtype == np.uint8:  # MRC has no unsigned 8-bit mode: store as mode 6 (uint16)
        dtype = np.dtype(np.uint16)
        data = data.astype(np.uint16)
    if dtype not in _MODE_FOR_DTYPE:
        raise ValueError(
            f"cannot write dtype {dtype} to MRC; expected int8/int16/uint16/float16/float32"
        )
    attrs = header_attrs or {}
    ext = base64.b64decode(attrs.get("extended_header_b64", "") or b"")
    nz, ny, nx = (int(s) for s in data.shape)
    header, ext_bytes = _mrc_header(path, dtype, (nz, ny, nx), voxel_size_angstrom, attrs, ext)
    # Rewrite the file: header, extended header, then the data streamed slab by slab; the
    # statistics (dmin/dmax/dmean/rms) are accumulated on the way and patched in at the end.
    stats = {"min": np.inf, "max": -np.inf, "sum": 0.0, "sumsq": 0.0}
    with open(path, "r+b") as f:
        f.seek(0)
        f.write(header.tobytes())
        f.write(ext_bytes)
        f.truncate(1024 + len(ext_bytes))
        for z0 in range(0, nz, slab):
            block = np.ascontiguousarray(data[z0 : z0 + slab].compute(), dtype=dtype)
            f.write(_slab_bytes(block))
            b64 = block.astype(np.float64)
            stats["min"] = min(stats["min"], float(b64.min()))
            stats["max"] = max(stats["max"], float(b64.max()))
            stats["sum"] += float(b64.sum())
            stats["sumsq"] += float((b64 * b64).sum())
            if progress is not None:
                progress.update(block.shape[0])
        n = nz * ny * nx
        mean = stats["sum"] / n
        header.dmin, header.dmax, header.dmean = stats["min"], stats["max"], mean
        header.rms = float(np.sqrt(max(stats["sumsq"] / n - mean * mean, 0.0)))
        f.seek(0)
        f.write(header.tobytes())
        f.flush()
        os.fsync(f.fileno())
