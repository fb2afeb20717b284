"""Configs of ``train`` (the engine's options; the method's own go to ``options``) and ``prior``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from scnet_dask.config.common import (
    Device,
    StrictModel,
    _split_method_options,
)

__all__ = [
    "TrainConfig",
    "PriorConfig",
]


class TrainConfig(StrictModel):
    """Options of ``scnet-dask train``: the engine's, plus the method's own in ``options``.

    Keys that are not engine fields are the method's options (see
    :mod:`scnet_dask.methods`); they are validated by the method's ``train_options`` model.
    """

    noisy: Path | None = Field(
        None, description="The method's first input volume (OME-Zarr); or give --dataset."
    )
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
    dataset: str | None = Field(
        None,
        description="Train on many tomograms of a dataset instead of NOISY: an AreTomo3 or "
        "Warp folder, a RELION-5 tomograms.star, a folder or glob of volumes, or a YAML/CSV "
        "list (as 'denoise --dataset').",
    )
    tomograms: str | None = Field(
        None, description="--dataset: train on these tomograms (names, a,b,c)."
    )
    train_count: int | None = Field(
        None,
        ge=1,
        description="--dataset: train on K tomograms spread over the dataset (seeded by "
        "--seed); default: every tomogram up to 32.",
    )
    val_tomograms: str | None = Field(
        None,
        description="--dataset: hold these tomograms back whole for validation (names, a,b); "
        "log.csv gets a val_NAME column each, and best.pt follows their mean.",
    )
    open_tomograms: int = Field(
        4, ge=1, le=1024, description="--dataset: tomograms whose readers are open at once."
    )
    prior_sigma: float = Field(
        1.0,
        gt=0,
        description="--dataset with scnet/nmsg: σ (voxels) of the Gaussian prior made per "
        "tomogram on the fly (the default recipe's 'prior --method gaussian --sigma 1').",
    )
    strict_voxel_size: bool = Field(
        False,
        description="--dataset: refuse (rather than warn about) training tomograms whose "
        "voxel size differs from the median by more than 5 %.",
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

    @model_validator(mode="after")
    def _one_source(self) -> TrainConfig:
        if (self.noisy is None) == (self.dataset is None):
            given = "both" if self.noisy is not None else "neither"
            raise ValueError(f"give a NOISY volume or --dataset SOURCE, got {given}")
        if self.dataset is None:
            extra = [
                k for k in ("tomograms", "train_count", "val_tomograms", "open_tomograms",
                            "prior_sigma", "strict_voxel_size")
                if getattr(self, k) != type(self).model_fields[k].default
            ]  # fmt: skip
            if extra:
                raise ValueError(f"--{extra[0].replace('_', '-')} applies to --dataset only")
        return self


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
