"""The commands beside the pipeline: ``evaluate``, ``score``, ``demo``, ``import-scnet``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from scnet_dask.cli.options import build_config, cluster_options, command_from_models, on_cluster
from scnet_dask.commands import demo as demo_cmd
from scnet_dask.commands import evaluate as evaluate_cmd
from scnet_dask.commands import score as score_cmd
from scnet_dask.commands.score_dataset import score_dataset
from scnet_dask.config import DemoConfig, ScoreConfig
from scnet_dask.methods import scnet as scnet_method

__all__ = ["evaluate_command", "score_command", "demo_command", "import_scnet_command"]


def score_command() -> click.Command:
    """``score EVEN ODD --out DIR`` or ``score --dataset SOURCE --out DIR``."""

    def body(**kwargs: Any) -> None:
        cfg = build_config(ScoreConfig, **kwargs)
        with on_cluster(kwargs):
            if cfg.dataset is not None:
                rows, per = score_dataset(cfg)
                click.echo((Path(cfg.out) / "score.md").read_text().rstrip())
                click.echo(f"{len(per)} tomograms; best on average: {rows[0]['candidate']}; "
                           f"score.csv in {cfg.out}, one folder per tomogram")  # fmt: skip
                return
            rows = score_cmd.score(cfg)
        click.echo((Path(cfg.out) / "score.md").read_text().rstrip())
        click.echo(f"{len(rows)} candidates; best: {rows[0]['candidate']}; score.csv, "
                   f"slices.png in {cfg.out}")  # fmt: skip

    return command_from_models(
        "score", [("", ScoreConfig)],
        [click.Argument(["even"], type=click.Path(path_type=Path), required=False),
         click.Argument(["odd"], type=click.Path(path_type=Path), required=False)], body,
        "Rank denoising candidates on your own EVEN/ODD halves (or on every tomogram with "
        "halves of --dataset SOURCE), without ground truth: each denoises one half and is "
        "compared with the other, at a half's noise and at twice it, and ranked by the "
        "error extrapolated to the full volume's noise (lower is better).",
        cluster=True,
    )  # fmt: skip


def evaluate_command() -> click.Command:
    """``evaluate CONFIG``."""

    @click.command("evaluate")
    @click.argument("config", type=click.Path(path_type=Path))
    @cluster_options
    def evaluate(config: Path, **kwargs: Any) -> None:
        """Run the methods listed in CONFIG (YAML) on a dataset; write tables and figures."""
        cfg = evaluate_cmd.load_config(config)
        with on_cluster(kwargs):
            rows = evaluate_cmd.evaluate(cfg)
        click.echo((Path(cfg.out_dir) / "results.md").read_text().rstrip())
        made = [n for n in ("results.csv", "fsc.png", "slices.png") if (cfg.out_dir / n).exists()]
        click.echo(f"{len(rows)} methods; {', '.join(made)} in {cfg.out_dir}")

    return evaluate


def demo_command() -> click.Command:
    """``demo``."""

    def body(**kwargs: Any) -> None:
        cfg = build_config(DemoConfig, **kwargs)
        click.echo(demo_cmd.run_demo(cfg.out))

    return command_from_models(
        "demo", [("", DemoConfig)], [], body,
        "Run the pipeline on the embedded sample tomogram and print a summary.",
    )  # fmt: skip


def import_scnet_command() -> click.Command:
    """``import-scnet PUBLIC NOISY OUTPUT``."""

    @click.command("import-scnet")
    @click.argument("public", type=click.Path(path_type=Path))
    @click.argument("noisy", type=click.Path(path_type=Path))
    @click.argument("output", type=click.Path(path_type=Path))
    @click.option("--features", type=int, default=32, show_default=True, help="nch_ker.")
    @click.option(
        "--upsample/--no-upsample", default=True, show_default=True, help="2x up-sampling block."
    )
    @click.option("--overwrite", is_flag=True, help="Replace an existing OUTPUT.")
    def import_scnet(
        public: Path, noisy: Path, output: Path, features: int, upsample: bool, overwrite: bool
    ) -> None:
        """Turn a public SC-Net checkpoint PUBLIC (netG) into OUTPUT for 'denoise'.

        NOISY is the volume it will denoise (or one like it): its statistics become the
        checkpoint's normalisation and its voxel size the training voxel size.
        """
        s = scnet_method.import_public_checkpoint(
            public, noisy, output, features, upsample, overwrite
        )
        click.echo(f"wrote {s['output']}: SC-Net, {s['features']} features, {s['tensors']} tensors")

    return import_scnet
