"""The methods architecture: registry, a toy method from this file, options declared once."""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
import zarr
from pydantic import BaseModel, Field

import scnet_dask.cli.app as cli_mod
from scnet_dask import methods
from scnet_dask.config import (
    ConvertConfig,
    DemoConfig,
    DenoiseConfig,
    ExportConfig,
    InfoConfig,
    PriorConfig,
    SimulateConfig,
    TrainConfig,
)
from scnet_dask.io import open_source
from scnet_dask.methods import Geometry, Method, Options, PredictContext, TrainState
from scnet_dask.methods.loading import load_trained
from scnet_dask.methods.runtime import forward_normalised
from tests.conftest import run_cli, write_mrc


# --- a toy trainable method, defined here and registered at run time ------------------------
class ToyOptions(Options):
    kernel: int = Field(3, ge=3, description="Edge of the blind convolution (odd).")
    toy_scale: float = Field(1.0, gt=0, description="Scale of the toy loss.")


class ToyDenoiseOptions(Options):
    toy_gain: float = Field(1.0, gt=0, description="Multiplies the toy output.")


class BlindConv(torch.nn.Module):
    """A 3-D convolution whose centre tap is zero: a minimal blind-spot denoiser."""

    def __init__(self, kernel: int):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 1, kernel, padding=kernel // 2, bias=True)
        mask = torch.ones_like(self.conv.weight)
        mask[..., kernel // 2, kernel // 2, kernel // 2] = 0
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.conv.weight * self.mask
        return torch.nn.functional.conv3d(x, w, self.conv.bias, padding=self.conv.padding)


@dataclass(frozen=True)
class ToyPredictor:
    checkpoint: str
    gain: float
    geometry: Geometry

    def __call__(self, tiles: np.ndarray, seeds: Sequence[int] | None = None) -> np.ndarray:
        tr = load_trained(self.checkpoint, "", "cpu")
        norm = tr.normalisation["noisy"]
        out = forward_normalised(
            tr.networks["net"], tiles, norm["mean"], norm["std"], "cpu", amp=False
        )
        return out * self.gain


class Toy(Method):
    name = "toy"
    summary = "A blind 3-D convolution (test only)."
    inputs = ("noisy",)
    train_options = ToyOptions
    denoise_options = ToyDenoiseOptions
    log_terms = ("total",)

    def build(self, options: Any) -> dict[str, torch.nn.Module]:
        return {"net": BlindConv(options.kernel)}

    def step(
        self, state: TrainState, batch: Mapping[str, np.ndarray], generator: torch.Generator,
        train: bool = True,
    ) -> dict[str, torch.Tensor]:  # fmt: skip
        x = torch.from_numpy(batch["noisy"]).to(state.device)
        net = state.forward["net"] if train else state.networks["net"]
        loss = state.options.toy_scale * torch.mean((net(x) - x) ** 2)
        if train:
            state.update(loss, "net")
        return {"total": loss}

    def predictor(self, options: Any, ctx: PredictContext) -> tuple[Any, dict[str, Any]]:
        ckpt = str(Path(str(ctx.checkpoint)).resolve())
        k = load_trained(ckpt, "", "cpu").options.kernel
        geom = Geometry(margin=(k // 2,) * 3)
        return ToyPredictor(ckpt, options.toy_gain, geom), {"toy_gain": options.toy_gain}


@pytest.fixture
def toy():
    methods.register(Toy())
    try:
        yield
    finally:
        methods.unregister("toy")
        load_trained.cache_clear()


@pytest.fixture(scope="module")
def vol_zarr(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("m")
    rng = np.random.default_rng(4)
    z, y, x = np.mgrid[0:32, 0:48, 0:48].astype(np.float32)
    clean = np.sin(x / 4) * np.cos(y / 5) * np.cos(z / 6)
    src = write_mrc(d / "v.mrc", (clean + 0.5 * rng.standard_normal(clean.shape)).astype("f4"))
    out = d / "v.zarr"
    convert_cfg = ConvertConfig(input=src, output=out, chunks=16)
    from scnet_dask.commands.convert import convert

    convert(convert_cfg, show_progress=False)
    return out


def test_registry_holds_every_method_class_of_the_package():
    """Every concrete Method subclass defined under scnet_dask/methods/ is registered once."""
    import importlib
    import inspect
    import pkgutil

    import scnet_dask.methods as pkg

    found = set()
    for info in pkgutil.walk_packages(pkg.__path__, "scnet_dask.methods."):
        mod = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(mod, inspect.isclass):
            if issubclass(obj, Method) and obj is not Method and obj.__module__ == mod.__name__:
                if getattr(obj, "name", "") and not inspect.isabstract(obj):
                    found.add(obj)
    registered = {type(methods.get(n)) for n in methods.names()}
    assert found and found <= registered, sorted(c.__name__ for c in found - registered)
    assert len(set(methods.names())) == len(methods.names())
    assert methods.trainable() == [n for n in methods.names() if methods.get(n).trains]
    assert all(methods.get(n).train_options is not None for n in methods.trainable())
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        methods.get("nope")


def test_toy_method_trains_and_denoises_through_the_cli(toy, vol_zarr, tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(
        ["train", vol_zarr, "--method", "toy", "--out", run, "--patch-size", "16",
         "--epochs", "2", "--steps-per-epoch", "5", "--val-patches", "1", "--device", "cpu",
         "--toy-scale", "2.0", "--kernel", "5", "--lr", "0.01", "--no-plots"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    ck = torch.load(run / "best.pt", weights_only=True)
    assert ck["method"] == "toy" and ck["options"] == {"kernel": 5, "toy_scale": 2.0}
    assert set(ck["networks"]) == {"net"} and set(ck["optimizers"]) == {"net"}
    den = tmp_path / "den.zarr"
    code, out, err = run_cli(
        ["denoise", vol_zarr, run / "best.pt", den, "--method", "toy", "--chunks", "16",
         "--toy-gain", "0.5"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "halo (10, 10, 10)" in out  # margin 2 (kernel 5) + 8 of blend
    res = np.asarray(open_source(den).data)
    src = np.asarray(open_source(vol_zarr).data)
    assert res.shape == src.shape and np.isfinite(res).all()
    assert res.std() < 0.75 * src.std()  # gain 0.5 and a smoothing blind convolution
    prov = zarr.open_group(str(den)).attrs["scnet_dask"]["provenance"][-1]
    assert prov["method"] == "toy" and prov["toy_gain"] == 0.5
    # an option of another method is refused, naming the method
    code, _, err = run_cli(
        ["denoise", vol_zarr, run / "best.pt", tmp_path / "x.zarr", "--method", "toy",
         "--sigma", "2"],
        capsys,
    )  # fmt: skip
    assert code == 1 and "sigma: not an option of denoise --method toy" in err
    assert not (tmp_path / "x.zarr").exists()


def _section(f) -> bool:
    return isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)


def _flags(model) -> set[str]:
    """Flags of a model's fields; nested option groups are YAML sections, not flags."""
    fields = model.model_fields.items()
    return {(f.alias or k).replace("_", "-") for k, f in fields if not _section(f)}


@pytest.mark.parametrize("kind", ["train", "denoise"])
def test_help_shows_the_engine_and_the_chosen_methods_options_only(toy, kind, capsys):
    for name in methods.trainable() if kind == "train" else methods.names():
        m = methods.get(name)
        model = m.train_options if kind == "train" else m.denoise_options
        code, out, _ = run_cli([kind, "--method", name, "--help"], capsys)
        assert code == 0, name
        listed = set(re.findall(r"^  --([a-z0-9-]+)", out, flags=re.M))
        own = _flags(model)
        others = set().union(*(
            _flags(o.train_options if kind == "train" else o.denoise_options)
            for o in map(methods.get, methods.names())
            if (o.train_options if kind == "train" else o.denoise_options) is not None
        )) - own  # fmt: skip
        assert own <= listed, (name, sorted(own - listed))
        assert not (others & listed), (name, sorted(others & listed))
        # each option's help is the method's own description, not another method's; a nested
        # group is named in the command's help as a YAML section
        for key, f in model.model_fields.items():
            if _section(f):
                assert f"{key} (" in " ".join(out.split()), (name, key)
                continue
            words = str(f.description).split()[:3]
            flag = (f.alias or key).replace("_", "-")
            block = re.split(rf"^  --{flag}(?=[\s/])", out, maxsplit=1, flags=re.M)[1][:400]
            assert " ".join(words) in " ".join(block.split()), (name, flag)
    # without --method: the default method's (scnet's) options; the choices list every method
    code, out, _ = run_cli([kind, "--help"], capsys)
    scnet = methods.get("scnet")
    default = _flags(scnet.train_options if kind == "train" else scnet.denoise_options)
    listed = set(re.findall(r"^  --([a-z0-9-]+)", out, flags=re.M))
    assert code == 0 and "toy" in out and default <= listed
    assert not ({"toy-scale", "toy-gain"} & listed)


# --- every field of every command's config through YAML ----------------------------------
def _capture(monkeypatch, target: str, attr: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def fake(cfg, *a, **k):
        seen["cfg"] = cfg
        raise SystemExit(0)

    mod = __import__(target, fromlist=[attr])
    monkeypatch.setattr(mod, attr, fake)
    return seen


# (command, positional args, library function that receives the config, YAML values)
CASES: dict[str, tuple[list[str], str, str, dict[str, Any]]] = {
    "convert": (
        ["in.mrc", "out.zarr"],
        "scnet_dask.commands.convert",
        "convert",
        {
            "chunks": 32,
            "voxel_size": [500.0, 40.0, 40.0],
            "dtype": "source",
            "swap_yz": True,
            "nan_policy": "zero",
            "pyramid_levels": 2,
            "overwrite": True,
            "resume": True,
        },
    ),
    "export": (
        ["in.zarr", "out.mrc"],
        "scnet_dask.commands.export",
        "export",
        {
            "dtype": "float16",
            "overwrite": True,
        },
    ),
    "info": (["in.mrc"], "scnet_dask.commands.info", "volume_info", {"json": True, "scan": True}),
    "prior-gaussian": (
        ["in.zarr", "p.zarr"],
        "scnet_dask.commands.prior",
        "make_prior",
        {
            "method": "gaussian",
            "sigma": 2.5,
            "device": "cpu",
            "overwrite": True,
        },
    ),
    "prior-topaz": (
        ["in.zarr", "p.zarr"],
        "scnet_dask.commands.prior",
        "make_prior",
        {
            "method": "topaz-3d",
            "model": "unet-3d-20a",
            "tile": 64,
        },
    ),
    "prior-tilt": (
        ["in.zarr", "p.zarr"],
        "scnet_dask.commands.prior",
        "make_prior",
        {
            "method": "tilt-series",
            "tilt_series": "ts.mrc",
            "tlt": "a.tlt",
            "tilt_axis": "y",
            "angle_sign": 1,
            "area_offset": 12.0,
            "slice_start": 3,
            "z_offset": 2.0,
        },
    ),
    "prior-file": (
        ["in.zarr", "p.zarr"],
        "scnet_dask.commands.prior",
        "make_prior",
        {
            "method": "file",
            "prior_file": "mine.mrc",
        },
    ),
    "train-scnet": (
        ["in.zarr"],
        "scnet_dask.engine.train",
        "train",
        {
            "out": "run",
            "method": "scnet",
            "epochs": 3,
            "patch_size": 32,
            "batch_size": 4,
            "steps_per_epoch": 7,
            "val_patches": 2,
            "val_fraction": 0.2,
            "lr": 1e-3,
            "lr_schedule": "cosine",
            "beta1": 0.9,
            "beta2": 0.99,
            "foreground_mask": True,
            "augment": False,
            "device": "cpu",
            "seed": 5,
            "plots": False,
            "ranks": 2,
            "ddp_timeout_s": 60.0,
            "resume": True,
            "overwrite": True,
            "prior": "p.zarr",
            "features": 8,
            "upsample": False,
            "upsample_axes": "yx",
            "swap_size": 5,
            "swap_window": 7,
            "swap_ratio": 0.05,
            "lambda_rec": 0.9,
            "lambda_smooth": 0.0,
            "lambda_exp": 0.3,
            "lambda_reg": 0.02,
            "rec_warmup": 0.2,
            "rec_variant": "unreplaced",
            "blind_spot_mode": "cross",
            "prior_normalisation": "noisy",
            "swap_ratio_unit": "voxels",
            "blind_spot_strict": True,
        },
    ),
    "train-dataset": (
        [],
        "scnet_dask.engine.train",
        "train",
        {
            "out": "run",
            "method": "n2v",
            "dataset": "tomos/*.mrc",
            "tomograms": "a,b,c",
            "train_count": 2,
            "val_tomograms": "d",
            "open_tomograms": 3,
            "prior_sigma": 1.5,
            "strict_voxel_size": True,
        },
    ),
    "train-n2v": (
        ["in.zarr"],
        "scnet_dask.engine.train",
        "train",
        {
            "out": "run",
            "method": "n2v",
            "features": 8,
            "upsample": False,
            "upsample_axes": "yx",
            "swap_size": 3,
            "swap_window": 7,
            "swap_ratio": 0.01,
            "swap_ratio_unit": "voxels",
            "blind_spot_strict": True,
        },
    ),
    "train-n2n": (
        ["in.zarr"],
        "scnet_dask.engine.train",
        "train",
        {
            "out": "run",
            "method": "n2n",
            "odd": "odd.zarr",
            "features": 8,
            "upsample": True,
            "upsample_axes": "yx",
        },
    ),
    "train-s2s": (
        ["in.zarr"],
        "scnet_dask.engine.train",
        "train",
        {
            "out": "run",
            "method": "s2s",
            "features": 8,
            "depth": 2,
            "dropout": 0.3,
            "mask_p": 0.3,
            "mask_block": 4,
            "masks_per_patch": 3,
        },
    ),
    "train-fourier": (
        ["in.zarr"],
        "scnet_dask.engine.train",
        "train",
        {
            "out": "run",
            "method": "fourier-n2n",
            "features": 8,
            "depth": 2,
            "dropout": 0.7,
            "pool_size": 8,
            "pairs": 3,
            "pool_block": 4,
            "pool_keep": 0.4,
            "pool_flip": 0.2,
            "pool_float16": True,
            "pool": "pool",
        },
    ),
    "train-nmsg": (
        ["in.zarr"],
        "scnet_dask.engine.train",
        "train",
        {
            "out": "run",
            "method": "nmsg",
            "features": 8,
            "upsample": True,
            "upsample_axes": "yx",
            "prior": "p.zarr",
            "lambda_smooth": 0.02,
            "pair_form": "noisier2noise",
            "noise_model": "wgan2d",
            "lambda_recon": 0.9,
            "lambda_guide": 0.3,
            "guide_sigma": 1.5,
            "alpha": 0.5,
            "noise_bank": {
                "path": "nb.zarr", "cube": 12, "rule": "gcbd", "tolerance": 2.0, "mu": 0.2,
                "gamma": 0.3, "max_cubes": 100, "min_cubes": 16, "screen": 0.5,
            },
            "gan": {
                "steps": 7, "batch": 4, "critic_steps": 3, "features": 8, "layers": 3,
                "lr": 0.002, "gp_weight": 5.0, "lambda_spectrum": 0.5, "lambda_adversarial": 0.1,
            },
        },
    ),  # fmt: skip
    "denoise-n2v": (
        ["in.zarr", "c.pt", "o.zarr"],
        "scnet_dask.commands.denoise",
        "denoise",
        {
            "method": "n2v",
            "post_sigma": 0.75,
            "normalise": "input",
        },
    ),
    "denoise-nmsg": (
        ["in.zarr", "c.pt", "o.zarr"],
        "scnet_dask.commands.denoise",
        "denoise",
        {
            "method": "nmsg",
            "post_sigma": 0.5,
            "passes": 3,
            "normalise": "input",
        },
    ),
    "denoise-fourier": (
        ["in.zarr", "c.pt", "o.zarr"],
        "scnet_dask.commands.denoise",
        "denoise",
        {
            "method": "fourier-n2n",
            "versions": 4,
            "passes": 3,
        },
    ),
    "denoise-n2n": (
        ["in.zarr", "c.pt", "o.zarr"],
        "scnet_dask.commands.denoise",
        "denoise",
        {
            "method": "n2n",
            "post_sigma": 0.5,
            "normalise": "checkpoint",
        },
    ),
    "denoise-s2s": (
        ["in.zarr", "c.pt", "o.zarr"],
        "scnet_dask.commands.denoise",
        "denoise",
        {
            "method": "s2s",
            "passes": 5,
            "pass_batch": 2,
            "normalise": "input",
        },
    ),
    "denoise-scnet": (
        ["in.zarr", "c.pt", "o.zarr"],
        "scnet_dask.commands.denoise",
        "denoise",
        {
            "method": "scnet",
            "chunks": 64,
            "tile": 32,
            "halo": 12,
            "window": "cosine",
            "batch_size": 3,
            "device": "cpu",
            "amp": False,
            "resume": True,
            "overwrite": True,
            "normalise": "input",
            "post_sigma": 0.0,
        },
    ),
    "denoise-auto": (
        ["in.zarr", "o.zarr"],
        "scnet_dask.commands.auto",
        "denoise_auto",
        {
            "method": "auto",
            "even": "e.zarr",
            "odd": "o.zarr",
            "candidates": "c.yaml",
            "auto_steps": 50,
        },
    ),
    "denoise-gaussian": (
        ["in.zarr", "o.zarr"],
        "scnet_dask.commands.denoise",
        "denoise",
        {
            "method": "gaussian",
            "sigma": 2.0,
            "sigma_z": 0.0,
        },
    ),
    "train-supervised": (
        ["in.zarr"],
        "scnet_dask.engine.train",
        "train",
        {
            "out": "run",
            "method": "supervised",
            "target": "slow.zarr",
            "network": "3d",
            "slices": 7,
            "depth": 2,
            "features": 8,
            "patch_depth": 32,
            "loss": "mse",
            "check_registration": False,
            "augment_planes": "yx",
        },
    ),
    "train-vem-n2n": (
        ["in.zarr"],
        "scnet_dask.engine.train",
        "train",
        {
            "out": "run",
            "method": "vem-n2n",
            "network": "2.5d",
            "slices": 3,
            "depth": 2,
            "features": 8,
            "patch_depth": 16,
            "loss": "l1",
            "lattices": "anti",
        },
    ),
    "denoise-supervised": (
        ["in.zarr", "c.pt", "o.zarr"],
        "scnet_dask.commands.denoise",
        "denoise",
        {
            "method": "supervised",
            "post_sigma": 0.5,
        },
    ),
    "denoise-vem-n2n": (
        ["in.zarr", "c.pt", "o.zarr"],
        "scnet_dask.commands.denoise",
        "denoise",
        {
            "method": "vem-n2n",
            "post_sigma": 0.5,
            "scale": "lattice",
        },
    ),
    "denoise-lowpass": (
        ["in.zarr", "o.zarr"],
        "scnet_dask.commands.denoise",
        "denoise",
        {
            "method": "lowpass",
            "cutoff_angstrom": 30.0,
        },
    ),
    "denoise-topaz": (
        ["in.zarr", "o.zarr"],
        "scnet_dask.commands.denoise",
        "denoise",
        {
            "method": "topaz-3d",
            "topaz_model": "unet-3d-20a",
        },
    ),
    "denoise-bm4d": (
        ["in.zarr", "o.zarr"],
        "scnet_dask.commands.denoise",
        "denoise",
        {
            "method": "bm4d",
            "noise_sigma": 0.3,
            "bm4d_profile": "refilter",
        },
    ),
    "simulate": (
        ["gt.mrc", "sim"],
        "scnet_dask.commands.simulate",
        "simulate",
        {
            "noise_sigma": "5,7",
            "tilts": "-30:30:3",
            "seed": 9,
            "format": "mrc",
            "overwrite": True,
        },
    ),
}

# the dataset mode's fields, with the n2v case's method options
CASES["train-dataset"][3].update(
    {k: v for k, v in CASES["train-n2v"][3].items() if k not in CASES["train-dataset"][3]}
)

CONFIGS = {
    "convert": ConvertConfig, "export": ExportConfig, "info": InfoConfig, "prior": PriorConfig,
    "train": TrainConfig, "denoise": DenoiseConfig, "simulate": SimulateConfig,
}  # fmt: skip


def _flatten(cfg: Any) -> dict[str, Any]:
    d = cfg.model_dump(mode="json", by_alias=True)
    opts = d.pop("options", None) or {}
    return {**d, **opts}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_config_field_from_yaml_reaches_the_run(case, tmp_path, capsys, monkeypatch):
    positional, module, func, values = CASES[case]
    command = case.split("-")[0]
    seen: dict[str, Any] = {}
    if command == "info":
        real_cls = cli_mod.InfoConfig

        class Spy(real_cls):  # type: ignore[misc,valid-type]
            def __init__(self, **kw: Any):
                super().__init__(**kw)
                seen["cfg"] = self
                raise SystemExit(0)

        monkeypatch.setattr(cli_mod, "InfoConfig", Spy)
    elif command == "simulate":
        mod = __import__(module, fromlist=[func])

        def fake_sim(volume, out_dir, sigmas, tilts, seed, fmt, overwrite):
            seen["cfg"] = {"noise_sigma": ",".join(f"{s:g}" for s in sigmas), "tilts": tilts,
                           "seed": seed, "format": fmt, "overwrite": overwrite}  # fmt: skip
            raise SystemExit(0)

        monkeypatch.setattr(mod, func, fake_sim)
    else:
        seen = _capture(monkeypatch, module, func)
    # every field of the command's config (and of each method's options) is in the table
    model = CONFIGS[command]
    engine = {f.alias or k for k, f in model.model_fields.items()} - {"options"}
    engine -= {"input", "output", "noisy", "checkpoint", "path", "volume", "out_dir"}
    engine -= {"dataset", "tomograms", "exclude"}  # info's dataset mode: tests/test_dataset.py
    if command in ("train", "denoise"):
        m = methods.get(values["method"])
        own = m.train_options if command == "train" else m.denoise_options
        assert own is not None
        wanted = set(own.model_fields)
        covered = {k for c, v in CASES.items() if c.startswith(command) for k in v[3]}
        assert engine <= covered, sorted(engine - covered)
        assert wanted <= set(values), sorted(wanted - set(values))
    elif command == "prior":
        covered = {k for c, v in CASES.items() if c.startswith("prior") for k in v[3]}
        assert engine <= covered, sorted(engine - covered)
    else:
        assert engine <= set(values), sorted(engine - set(values))
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump(values))
    code, _, err = run_cli([command, "--config", cfg_file, *positional], capsys)
    assert code == 0, err
    got = seen["cfg"] if isinstance(seen["cfg"], dict) else _flatten(seen["cfg"])
    for key, value in values.items():
        v = got[key]
        if isinstance(value, str) and key not in ("method",) and "/" not in value:
            v = str(v)
        if key in ("prior", "tilt_series", "tlt", "prior_file", "out", "odd", "pool", "even",
                   "candidates"):
            assert Path(str(v)).name == Path(value).name, key
        else:
            assert v == value, (key, v, value)


def test_yaml_cases_cover_every_registered_method():
    """A method added without its YAML round-trip cases fails here."""
    for kind in ("train", "denoise"):
        covered = {v[3]["method"] for c, v in CASES.items() if c.startswith(f"{kind}-")}
        needed = {
            n for n in methods.names()
            if (methods.get(n).train_options if kind == "train" else methods.get(n).denoise_options)
            is not None and n != "toy"
        }  # fmt: skip
        assert needed <= covered, (kind, sorted(needed - covered))


def test_yaml_loss_weights_reach_the_checkpoint(vol_zarr, tmp_path, capsys):
    """The bug that started it: λ and augment from YAML were silently ignored."""
    prior = tmp_path / "p.zarr"
    assert run_cli(["prior", vol_zarr, prior, "--sigma", "1.5"], capsys)[0] == 0
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "lambda_smooth: 0.0\nlambda_rec: 0.9\naugment: false\npatch-size: 16\nfeatures: 2\n"
        "epochs: 1\nsteps_per_epoch: 2\nval_patches: 1\ndevice: cpu\nplots: false\n"
    )
    run = tmp_path / "run"
    code, _, err = run_cli(
        ["train", vol_zarr, "--prior", prior, "--out", run, "--config", cfg, "--lambda-rec", "0.7"],
        capsys,
    )
    assert code == 0, err
    ck = torch.load(run / "last.pt", weights_only=True)
    assert ck["options"]["lambda_smooth"] == 0.0 and ck["options"]["lambda_rec"] == 0.7
    assert ck["config"]["augment"] is False and ck["config"]["patch_size"] == 16


def test_format1_checkpoint_is_migrated(vol_zarr, tmp_path, capsys):
    from scnet_dask.model.unet import SCNetUNet

    torch.manual_seed(0)
    model = SCNetUNet(features=2, upsample=True)
    old = {
        "format_version": 1,
        "scnet_dask_version": "0.1.0",
        "model": model.state_dict(),
        "optimizer": torch.optim.Adam(model.parameters()).state_dict(),
        "config": {"method": "scnet", "noisy": "n.zarr", "prior": "p.zarr", "features": 2,
                   "upsample": True, "patch_size": 32, "lambda_smooth": 0.1, "epochs": 1},
        "normalisation": {"noisy": {"mean": 0.0, "std": 1.0}, "prior": {"mean": 0, "std": 1}},
        "epoch": 1, "step": 1, "best_val": 1.0,
    }  # fmt: skip
    torch.save(old, tmp_path / "v1.pt")
    code, out, err = run_cli(
        ["denoise", vol_zarr, tmp_path / "v1.pt", tmp_path / "o.zarr", "--chunks", "16",
         "--device", "cpu"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    from scnet_dask.methods.loading import load_checkpoint

    data = load_checkpoint(tmp_path / "v1.pt")
    assert data["migrated_from"] == 1 and data["options"]["features"] == 2
    assert data["config"]["patch_size"] == 32 and "features" not in data["config"]


def test_import_public_scnet_checkpoint(vol_zarr, tmp_path, capsys):
    from scnet_dask.model.unet import SCNetUNet

    torch.manual_seed(1)
    model = SCNetUNet(features=4, upsample=True)
    public = {"netG": {f"module.{k}": v for k, v in model.state_dict().items()}}
    torch.save(public, tmp_path / "public.pth")
    out = tmp_path / "imported.pt"
    code, stdout, err = run_cli(
        ["import-scnet", tmp_path / "public.pth", vol_zarr, out, "--features", "4"], capsys
    )
    assert code == 0, err
    assert "4 features" in stdout
    code, _, err = run_cli(
        ["denoise", vol_zarr, out, tmp_path / "d.zarr", "--chunks", "16", "--device", "cpu"],
        capsys,
    )
    assert code == 0, err
    code, _, err = run_cli(
        ["import-scnet", tmp_path / "public.pth", vol_zarr, tmp_path / "x.pt", "--features", "8"],
        capsys,
    )
    assert code == 1 and "features=8" in err and not (tmp_path / "x.pt").exists()


def test_unexpected_error_is_one_line_and_traceback_with_v(vol_zarr, tmp_path, capsys, monkeypatch):
    import scnet_dask.commands.info as info

    def boom(path, **kw):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(info, "volume_info", boom)
    code, _, err = run_cli(["info", vol_zarr], capsys)
    assert code == 2 and "internal error: ZeroDivisionError: a bug" in err
    assert "Traceback" not in err
    code, _, err = run_cli(["-v", "info", vol_zarr], capsys)
    assert code == 2 and "Traceback" in err


def test_library_modules_do_not_switch_the_matplotlib_backend(tmp_path):
    import subprocess
    import sys

    code = (
        "import matplotlib; matplotlib.use('svg'); import scnet_dask.io.plots, "
        "scnet_dask.commands.evaluate, "
        "scnet_dask.engine.train; print(matplotlib.get_backend())"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "svg", r.stderr


def test_demo_config(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake(out):
        seen["out"] = out
        return "ok"

    monkeypatch.setattr("scnet_dask.commands.demo.run_demo", fake)
    cfg = tmp_path / "d.yaml"
    cfg.write_text(f"out: {tmp_path / 'demo-out'}\n")
    assert run_cli(["demo", "--config", cfg], capsys)[0] == 0
    assert Path(seen["out"]) == tmp_path / "demo-out"
    assert set(DemoConfig.model_fields) == {"out"}
    shutil.rmtree(tmp_path / "demo-out", ignore_errors=True)


@pytest.mark.parametrize(
    "module",
    ["scnet_dask.methods.runtime", "scnet_dask.methods.base", "scnet_dask.methods.scnet",
     "scnet_dask.model.checkpoint", "scnet_dask.tiling.graph", "scnet_dask.config"],
)  # fmt: skip
def test_modules_import_first_without_a_cycle(module):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
