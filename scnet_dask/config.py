"""Pydantic configs for every command (unknown keys rejected), loadable from YAML.

A command's ``--config FILE.yaml`` takes the same keys as its command-line options, with dashes
written as underscores; options given on the command line win.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from scnet_dask.errors import InputError
from scnet_dask.methods import get

__all__ = [
    "StrictModel",
    "ConvertConfig",
    "ExportConfig",
    "InfoConfig",
    "DenoiseConfig",
    "TrainConfig",
    "PriorConfig",
    "SimulateConfig",
    "DemoConfig",
    "load_yaml",
    "format_validation_error",
]


def _check_device(v: str) -> str:
    if v not in ("auto", "cpu", "cuda") and not (v.startswith("cuda:") and v[5:].isdigit()):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}")
    return v


#: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, checked.
Device = Annotated[str, AfterValidator(_check_device)]


def parse_voxel_size(v: Any) -> Any:
    """One voxel size or ``Z,Y,X`` (text, number or sequence) as a (z, y, x) tuple in Å.

    Raises
    ------
    ValueError
        Not one or three positive finite numbers.

    """
    if v is None or isinstance(v, tuple) and len(v) == 3 and all(isinstance(x, float) for x in v):
        return v
    items: list[Any]
    if isinstance(v, str):
        items = [x for x in re.split(r"[,\s\[\]()]+", v.strip()) if x]
    elif isinstance(v, (int, float)):
        items = [v]
    else:
        items = list(v)
    try:
        vals = [float(x) for x in items]
    except (TypeError, ValueError):
        raise ValueError(f"voxel size must be one number or Z,Y,X in Å, got {v!r}") from None
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3 or not all(np.isfinite(x) and x > 0 for x in vals):
        raise ValueError(f"voxel size must be one or three positive numbers (Å), got {v!r}")
    return (vals[0], vals[1], vals[2])


#: A (z, y, x) voxel size in Å, given as one number or ``Z,Y,X``.
VoxelSize = Annotated[tuple[float, float, float], BeforeValidator(parse_voxel_size)]


class StrictModel(BaseModel):
    """Base for configs: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ConvertConfig(StrictModel):
    """Options of ``scnet-dask convert``."""

    input: Path = Field(description="MRC/REC/ST, TIFF stack, folder of TIFF slices or Zarr.")
    output: Path = Field(description="OME-Zarr to write (.zarr).")
    chunks: int = Field(128, ge=8, le=1024, description="Chunk edge in voxels.")
    voxel_size: VoxelSize | None = Field(
        None,
        description="Voxel size in Å (overrides the header): one value, or Z,Y,X for "
        "anisotropic voxels (vEM: section thickness first, e.g. 500,40,40).",
    )
    dtype: Literal["float32", "source"] = Field(
        "float32", description="Stored data type: float32, or the source's."
    )
    swap_yz: bool = Field(
        False, description="Swap Y and Z (thickness along Y, IMOD's un-rotated output)."
    )
    nan_policy: Literal["error", "zero", "mean"] = Field(
        "error", description="What to do with NaN/Inf voxels."
    )
    pyramid_levels: int = Field(
        3, ge=1, le=8, description="Pyramid levels incl. full resolution (3 = 1x, 2x, 4x)."
    )
    overwrite: bool = Field(False, description="Replace an existing output.")
    resume: bool = Field(False, description="Continue an interrupted conversion.")

    @field_validator("output")
    @classmethod
    def _zarr_suffix(cls, v: Path) -> Path:
        if v.suffix.lower() not in (".zarr", ".ome.zarr") and not str(v).endswith(".zarr"):
            raise ValueError(f"output must end in .zarr, got {str(v)!r}")
        return v


class ExportConfig(StrictModel):
    """Options of ``scnet-dask export``."""

    input: Path = Field(description="OME-Zarr to export.")
    output: Path = Field(description="MRC (.mrc/.rec/.map) or TIFF (.tif/.tiff) to write.")
    dtype: Literal["float32", "float16", "source"] = Field(
        "float32", description="Output data type; 'source' restores the converted file's."
    )
    overwrite: bool = Field(False, description="Replace an existing output.")

    @field_validator("output")
    @classmethod
    def _suffix(cls, v: Path) -> Path:
        if v.suffix.lower() not in (".mrc", ".rec", ".map", ".tif", ".tiff"):
            raise ValueError(f"output must end in .mrc, .rec, .map, .tif or .tiff, got {str(v)!r}")
        return v


class InfoConfig(StrictModel):
    """Options of ``scnet-dask info``."""

    path: Path = Field(description="Volume (OME-Zarr, MRC or TIFF).")
    json_output: bool = Field(False, alias="json", description="Print one JSON object.")

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of option names to values (dashes become underscores)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise InputError(f"{p}: cannot read YAML config ({e.strerror or e})") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(f"{p}: invalid YAML{where}: {problem}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(
            f"{p}: config must be a mapping of option names to values, got {type(data).__name__}"
        )
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def format_validation_error(e: ValidationError, source: str = "options") -> str:
    """One line naming each bad key and what is wrong with it."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown option"
        if err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}" if loc else msg)
            continue
        parts.append(f"{loc or '?'}: {msg} (got {err.get('input')!r})")
    return f"{source}: " + "; ".join(parts)


def _split_method_options(
    cls: type[BaseModel], data: Any, kind: Literal["train", "denoise"]
) -> Any:
    """Move the keys that are not ``cls``'s own fields into ``options``, validated by the method.

    So that users (CLI, YAML, Python) see one flat namespace while the run keeps the method's
    options apart: ``TrainConfig(noisy=..., method="scnet", lambda_smooth=0.0)``.
    """
    if not isinstance(data, dict):
        return data
    data = dict(data)
    name = str(data.get("method") or "scnet")
    given = data.pop("options", None)
    if isinstance(given, BaseModel):
        given = given.model_dump()
    opts = dict(given or {})
    for key in list(data):
        if key not in cls.model_fields:
            opts[key] = data.pop(key)
    data["options"] = method_options(name, kind, opts)
    return data


def method_options(name: str, kind: Literal["train", "denoise"], opts: dict[str, Any]) -> Any:
    """Validate ``opts`` as method ``name``'s ``train`` or ``denoise`` options.

    Raises
    ------
    ValueError
        One line: an option of another method (listing the method's own), a missing required
        option (as its flag), or the method's own validation errors.

    """
    method = get(name)
    model = method.train_options if kind == "train" else method.denoise_options
    if model is None:
        raise ValueError(f"method {method.name} is not trained; use 'scnet-dask denoise' with it")
    own = set(model.model_fields)
    foreign = sorted(k for k in opts if k not in own)
    if foreign:
        valid = ", ".join(sorted(own)) or "none"
        raise ValueError(
            f"{', '.join(foreign)}: not an option of {kind} --method {method.name} "
            f"(its own options: {valid})"
        )
    try:
        return model(**opts)
    except ValidationError as e:
        missing = [str(err["loc"][0]) for err in e.errors() if err["type"] == "missing"]
        if missing:
            flags = ", ".join(f"--{m.replace('_', '-')}" for m in missing)
            raise ValueError(f"--method {method.name} needs {flags}") from None
        raise ValueError(format_validation_error(e, f"--method {method.name}")) from None


class TrainConfig(StrictModel):
    """Options of ``scnet-dask train``: the engine's, plus the method's own in ``options``.

    Keys that are not engine fields are the method's options (see
    :mod:`scnet_dask.methods`); they are validated by the method's ``train_options`` model.
    """

    noisy: Path = Field(description="The method's first input volume (OME-Zarr).")
    out: Path = Field(description="Run directory (checkpoints, log, plots).")
    method: str = Field("scnet", description="Training method.")
    epochs: int = Field(15, ge=1, description="Epochs.")
    patch_size: int = Field(128, ge=16, description="Patch edge in voxels (multiple of 16).")
    batch_size: int = Field(2, ge=1, description="Patches per step (per rank).")
    steps_per_epoch: int | None = Field(
        None, ge=1, description="Steps per epoch; default: 0.9 x non-overlapping patches / batch."
    )
    val_patches: int = Field(4, ge=0, description="Validation patches (0: no validation).")
    val_fraction: float = Field(
        0.1, ge=0, lt=0.5, description="Fraction of the longest axis held back for validation."
    )
    lr: float = Field(4e-4, gt=0, description="Adam learning rate.")
    lr_schedule: Literal["auto", "constant", "cosine"] = Field(
        "auto",
        description="Learning rate over the run: constant, or a cosine decay from --lr to 0 "
        "over the steps the method's main network trains; auto: the method's choice "
        "(cosine for scnet, constant for the others).",
    )
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam β1.")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam β2.")
    foreground_mask: bool = Field(False, description="Sample patches only in the foreground.")
    augment: bool = Field(True, description="Random flips and 90° rotations of the patches.")
    augment_planes: Literal["auto", "all", "yx"] = Field(
        "auto",
        description="Rotation planes: all three (cubic patches), yx only (keeps z, the section "
        "axis), or auto: yx for anisotropic voxels (z/xy beyond 1.5x) or non-cubic patches.",
    )
    device: Device = Field("auto", description="auto, cpu, cuda or cuda:N.")
    seed: int = Field(0, description="Seed of every random draw (patches, blind spots, weights).")
    plots: bool = Field(True, description="Write curves.png and validation slices each epoch.")
    ranks: int | None = Field(
        None, ge=1, description="Data-parallel ranks on a --cluster (default: one per worker)."
    )
    ddp_timeout_s: float = Field(
        1800.0,
        gt=0,
        description="Seconds a DDP rank waits at a collective (covers rank 0's validation, "
        "checkpoints and plots at each epoch end) before the run stops.",
    )
    resume: bool = Field(False, description="Continue the run in --out exactly.")
    overwrite: bool = Field(False, description="Start over in an existing run directory.")
    options: Any = Field(None, description="The method's own options (validated by it).")

    @field_validator("patch_size")
    @classmethod
    def _multiple_of_16(cls, v: int) -> int:
        if v % 16:
            raise ValueError(f"patch size must be a multiple of 16, got {v}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _options(cls, data: Any) -> Any:
        return _split_method_options(cls, data, "train")


class PriorConfig(StrictModel):
    """Options of ``scnet-dask prior``."""

    noisy: Path = Field(description="The noisy OME-Zarr.")
    output: Path = Field(description="Prior OME-Zarr to write (.zarr).")
    method: Literal["gaussian", "topaz-3d", "tilt-series", "file"] = Field(
        "gaussian", description="How the prior is made."
    )
    sigma: float = Field(1.0, gt=0, description="--method gaussian: σ in voxels.")
    model: Literal["unet-3d-10a", "unet-3d-20a"] = Field(
        "unet-3d-10a", description="--method topaz-3d: Topaz pretrained 3-D model."
    )
    prior_file: Path | None = Field(
        None, description="--method file: your own smoothed volume (same grid)."
    )
    tilt_series: Path | None = Field(
        None, description="--method tilt-series: aligned tilt series (n_tilts, Y, X)."
    )
    tlt: Path | None = Field(
        None, description="--method tilt-series: tilt angles in degrees, one per line."
    )
    tilt_axis: Literal["x", "y"] = Field(
        "x", description="--method tilt-series: image axis the tilt axis lies along."
    )
    angle_sign: Literal[1, -1] = Field(
        -1, description="--method tilt-series: tilt-angle sign convention of the back-projection."
    )
    area_offset: float = Field(
        0.0,
        description="--method tilt-series: offset (detector pixels) of the tomogram's centre "
        "from the detector's centre, perpendicular to the tilt axis, when the tomogram is "
        "narrower than the images (a sub-area, IMOD's WIDTH/SHIFT).",
    )
    slice_start: int | None = Field(
        None,
        ge=0,
        description="--method tilt-series: first image row/column along the tilt axis that the "
        "tomogram starts at, when it is shorter than the images (IMOD's SLICE); default: "
        "centred.",
    )
    z_offset: float = Field(
        0.0, description="--method tilt-series: shift of the reconstruction along z (voxels)."
    )
    tile: int = Field(96, ge=16, description="--method topaz-3d: tile edge in voxels.")
    device: Device = Field("auto", description="auto, cpu, cuda or cuda:N.")
    overwrite: bool = Field(False, description="Replace an existing output.")

    @field_validator("output")
    @classmethod
    def _zarr_suffix(cls, v: Path) -> Path:
        if not str(v).lower().endswith(".zarr"):
            raise ValueError(
                f"the prior is written as OME-Zarr: output must end in .zarr, got {str(v)!r}"
            )
        return v

    @model_validator(mode="after")
    def _unused(self) -> PriorConfig:
        uses = {
            "gaussian": {"sigma"},
            "topaz-3d": {"model", "tile"},
            "tilt-series": {
                "tilt_series",
                "tlt",
                "tilt_axis",
                "angle_sign",
                "area_offset",
                "slice_start",
                "z_offset",
            },  # fmt: skip
            "file": {"prior_file"},
        }
        specific = set().union(*uses.values())
        unused = sorted(k for k in self.model_fields_set & specific if k not in uses[self.method])
        if unused:
            raise ValueError(
                f"{', '.join(unused)}: not used by --method {self.method} "
                f"(it uses {', '.join(sorted(uses[self.method]))})"
            )
        return self


class DenoiseConfig(StrictModel):
    """Options of ``scnet-dask denoise``: common ones, plus the method's own in ``options``."""

    input: Path = Field(description="Volume to denoise (OME-Zarr, MRC or TIFF).")
    output: Path = Field(description="Output (.zarr, .mrc/.rec/.map or .tif/.tiff).")
    checkpoint: Path | None = Field(None, description="best.pt of 'scnet-dask train'.")
    method: str = Field("scnet", description="Denoising method.")
    chunks: int = Field(
        128, ge=16, le=1024, description="Output chunk edge in voxels (multiple of 16)."
    )
    tile: int | Literal["auto"] = Field(
        "auto",
        description="Tile core edge in voxels (a multiple of the network's 16), independent "
        "of --chunks; auto = of the cores up to 256 whose forward fits the device's free "
        "memory, the one with the least halo overhead (one tile per chunk for predictors "
        "without a memory model).",
    )
    halo: int | Literal["auto"] = Field(
        "auto",
        description="Voxels added on each side of a tile core; auto = the network's reach on "
        "that side + post-filter + blend.",
    )
    window: Literal["gaussian", "cosine"] = Field("gaussian", description="Blending window.")
    batch_size: int = Field(1, ge=1, le=64, description="Tiles per forward.")
    device: Device = Field("auto", description="auto, cpu, cuda or cuda:N.")
    amp: bool = Field(True, description="bfloat16 autocast on GPU.")
    resume: bool = Field(False, description="Finish an interrupted run (only missing chunks).")
    overwrite: bool = Field(False, description="Replace an existing output.")
    options: Any = Field(None, description="The method's own options (validated by it).")

    @model_validator(mode="before")
    @classmethod
    def _options(cls, data: Any) -> Any:
        return _split_method_options(cls, data, "denoise")

    @field_validator("halo", "tile", mode="before")
    @classmethod
    def _auto_or_int(cls, v: Any, info: Any) -> Any:
        if isinstance(v, str) and v != "auto":
            try:
                return int(v)
            except ValueError:
                raise ValueError(f"{info.field_name} must be 'auto' or voxels, got {v!r}") from None
        return v

    @field_validator("tile")
    @classmethod
    def _tile(cls, v: int | str) -> int | str:
        if isinstance(v, int) and (v < 16 or v % 16):
            raise ValueError(f"tile must be 'auto' or a multiple of 16 voxels (>= 16), got {v}")
        return v

    @field_validator("chunks")
    @classmethod
    def _multiple_of_16(cls, v: int) -> int:
        if v % 16:
            raise ValueError(
                f"chunks (the tile core) must be a multiple of 16 so tiles align with the "
                f"network's four stride-2 levels, got {v}"
            )
        return v

    @field_validator("halo")
    @classmethod
    def _halo(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 0:
            raise ValueError(f"halo must be 'auto' or >= 0 voxels, got {v}")
        return v

    @field_validator("output")
    @classmethod
    def _suffix(cls, v: Path) -> Path:
        ok = (".zarr", ".mrc", ".rec", ".map", ".tif", ".tiff")
        if not str(v).lower().endswith(ok):
            raise ValueError(
                f"output must end in .zarr, .mrc, .rec, .map, .tif or .tiff, got {str(v)!r}"
            )
        return v


class SimulateConfig(StrictModel):
    """Options of ``scnet-dask simulate``."""

    volume: Path = Field(description="Ground-truth potential (MRC, TIFF or OME-Zarr).")
    out_dir: Path = Field(description="Folder for the simulated volumes and manifest.json.")
    noise_sigma: str = Field(
        "10,15,20",
        description="Noise levels (comma-separated), in units of projections scaled to [0, 255].",
    )
    tilts: str = Field("-60:60:2", description="Tilt angles START:STOP:STEP in degrees.")
    seed: int = Field(0, description="Seed of the noise.")
    format: Literal["zarr", "mrc"] = Field("zarr", description="Output format.")
    overwrite: bool = Field(False, description="Write into a non-empty OUT_DIR.")

    def sigmas(self) -> tuple[float, ...]:
        """The noise levels as numbers (distinct, finite)."""
        try:
            values = tuple(float(v) for v in self.noise_sigma.split(",") if v.strip())
        except ValueError:
            raise InputError(f"--noise-sigma must be numbers, got {self.noise_sigma!r}") from None
        if len(set(values)) != len(values) or not all(np.isfinite(values)):
            raise InputError(
                f"--noise-sigma must be distinct finite numbers, got {self.noise_sigma!r}"
            )
        return values


class DemoConfig(StrictModel):
    """Options of ``scnet-dask demo``."""

    out: Path = Field(Path("scnet-demo"), description="Folder for the demo's outputs (replaced).")
