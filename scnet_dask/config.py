"""Pydantic configs for every command (unknown keys rejected), loadable from YAML.

A command's ``--config FILE.yaml`` takes the same keys as its command-line options, with dashes
written as underscores; options given on the command line win.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from scnet_dask.errors import InputError

__all__ = [
    "StrictModel",
    "ConvertConfig",
    "ExportConfig",
    "InfoConfig",
    "DenoiseConfig",
    "load_yaml",
    "format_validation_error",
]


def _check_device(v: str) -> str:
    if v not in ("auto", "cpu", "cuda") and not (v.startswith("cuda:") and v[5:].isdigit()):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}")
    return v


#: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, checked.
Device = Annotated[str, AfterValidator(_check_device)]


class StrictModel(BaseModel):
    """Base for configs: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ConvertConfig(StrictModel):
    """Options of ``scnet-dask convert``."""

    input: Path
    output: Path
    chunks: int = Field(128, ge=8, le=1024, description="chunk edge in voxels")
    voxel_size: float | None = Field(
        None, gt=0, description="voxel size in Å (overrides the header)"
    )
    dtype: Literal["float32", "source"] = "float32"
    swap_yz: bool = False
    nan_policy: Literal["error", "zero", "mean"] = "error"
    pyramid_levels: int = Field(3, ge=1, le=8, description="levels incl. level 0 (3 = 1x, 2x, 4x)")
    overwrite: bool = False
    resume: bool = False

    @field_validator("output")
    @classmethod
    def _zarr_suffix(cls, v: Path) -> Path:
        if v.suffix.lower() not in (".zarr", ".ome.zarr") and not str(v).endswith(".zarr"):
            raise ValueError(f"output must end in .zarr, got {str(v)!r}")
        return v


class ExportConfig(StrictModel):
    """Options of ``scnet-dask export``."""

    input: Path
    output: Path
    dtype: Literal["float32", "float16", "source"] = "float32"
    overwrite: bool = False

    @field_validator("output")
    @classmethod
    def _suffix(cls, v: Path) -> Path:
        if v.suffix.lower() not in (".mrc", ".rec", ".map", ".tif", ".tiff"):
            raise ValueError(f"output must end in .mrc, .rec, .map, .tif or .tiff, got {str(v)!r}")
        return v


class InfoConfig(StrictModel):
    """Options of ``scnet-dask info``."""

    path: Path
    json_output: bool = Field(False, alias="json")

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of option names to values (dashes become underscores)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"{p}: cannot read YAML config ({e})") from e
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
        loc = ".".join(str(x) for x in err["loc"]) or "?"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown option"
        parts.append(f"{loc}: {msg} (got {err.get('input')!r})")
    return f"{source}: " + "; ".join(parts)


#: Blind-spot defaults per training method: SC-Net's 3³ regions at 0.1 regions per voxel (the
#: public code's rule), Noise2Void's single voxels at 0.2 % (CAREamics' default).
BLIND_SPOT_DEFAULTS: dict[str, dict[str, float]] = {
    "scnet": {"swap_size": 3, "swap_ratio": 0.1},
    "n2v": {"swap_size": 1, "swap_ratio": 0.002},
}


class TrainConfig(StrictModel):
    """Options of ``scnet-dask train``.

    ``method="n2v"`` trains the Noise2Void baseline on the same network and loop: single-voxel
    blind spots, the reconstruction loss only, no prior.
    """

    noisy: Path
    prior: Path | None = None
    out: Path
    method: Literal["scnet", "n2v"] = "scnet"
    epochs: int = Field(15, ge=1)
    patch_size: int = Field(128, ge=16)
    batch_size: int = Field(2, ge=1)
    features: int = Field(32, ge=1)
    steps_per_epoch: int | None = Field(
        None, ge=1, description="default: 0.9 x non-overlapping tiles"
    )
    val_patches: int = Field(4, ge=0)
    val_fraction: float = Field(0.1, ge=0, lt=0.5)
    lr: float = Field(4e-4, gt=0)
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    lambda_rec: float = Field(0.6, ge=0)
    lambda_smooth: float = Field(0.1, ge=0)
    lambda_exp: float = Field(0.2, ge=0)
    lambda_reg: float = Field(0.01, ge=0)
    rec_warmup: float = Field(
        0.1,
        ge=0,
        lt=0.5,
        description="fraction of all steps on L_rec alone; the other terms then ramp in "
        "linearly over as many steps (0 = the paper's schedule, all terms from step 1)",
    )
    rec_variant: Literal["replaced", "unreplaced"] = "replaced"
    blind_spot_mode: Literal["internal", "cross"] = "internal"
    swap_size: int = Field(3, ge=1, description="blind-spot region edge (method default)")
    swap_window: int = Field(5, ge=3)
    swap_ratio: float = Field(0.1, gt=0, le=1, description="regions per voxel (method default)")
    upsample: bool = True
    foreground_mask: bool = False
    augment: bool = True
    device: Device = "auto"
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    plots: bool = True

    @field_validator("patch_size")
    @classmethod
    def _multiple_of_16(cls, v: int) -> int:
        if v % 16:
            raise ValueError(f"patch size must be a multiple of 16, got {v}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _method_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            defaults = BLIND_SPOT_DEFAULTS.get(str(data.get("method", "scnet")), {})
            data = dict(data)
            for key, value in defaults.items():
                if data.get(key) is None:  # not given (or None from the command line)
                    data[key] = value
        return data

    @model_validator(mode="after")
    def _needs_prior(self) -> TrainConfig:
        if self.method == "scnet" and self.prior is None:
            raise ValueError("method scnet needs a prior (scnet-dask prior); n2v does not")
        return self


class PriorConfig(StrictModel):
    """Options of ``scnet-dask prior``."""

    noisy: Path
    output: Path
    method: Literal["gaussian", "topaz-3d", "tilt-series", "file"] = "gaussian"
    sigma: float = Field(1.0, gt=0, description="Gaussian σ in voxels")
    model: Literal["unet-3d-10a", "unet-3d-20a"] = "unet-3d-10a"
    prior_file: Path | None = None
    tilt_series: Path | None = None
    tlt: Path | None = None
    tilt_axis: Literal["x", "y"] = "x"
    angle_sign: Literal[1, -1] = -1
    tile: int = Field(96, ge=16)
    device: Device = "auto"
    overwrite: bool = False


class DenoiseConfig(StrictModel):
    """Options of ``scnet-dask denoise``."""

    input: Path
    output: Path
    checkpoint: Path | None = None
    method: Literal["scnet", "n2v", "gaussian", "lowpass", "topaz-3d", "bm4d"] = "scnet"
    chunks: int = Field(128, ge=16, le=1024, description="chunk (tile core) edge in voxels")
    halo: int | Literal["auto"] = "auto"
    window: Literal["gaussian", "cosine"] = "gaussian"
    batch_size: int = Field(1, ge=1, le=64)
    device: Device = "auto"
    amp: bool = True
    post_sigma: float | None = Field(
        None, ge=0, le=4, description="Gaussian σ (voxels) after the net; None: 0.5 scnet, 0 n2v"
    )
    sigma: float = Field(1.0, gt=0, le=16, description="σ (voxels) of --method gaussian")
    cutoff_angstrom: float = Field(
        40.0, gt=0, description="--method lowpass: resolution (Å) where the response is 0.5"
    )
    topaz_model: Literal["unet-3d-10a", "unet-3d-20a"] = "unet-3d-10a"
    noise_sigma: float | None = Field(
        None, gt=0, description="--method bm4d: noise σ in the input's units (default: estimated)"
    )
    bm4d_profile: Literal["np", "refilter"] = "np"
    resume: bool = False
    overwrite: bool = False

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
