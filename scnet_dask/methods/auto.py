"""``denoise --method auto``: the candidate that scores best on the input's halves.

The choice is made by the ``denoise`` command (:mod:`scnet_dask.commands.auto`), which runs
``score`` on ``--even``/``--odd`` and then denoises with the winner's method and options; this
method only carries the options, so that ``--method auto`` is validated like any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from scnet_dask.errors import InputError
from scnet_dask.methods.base import Method, Options, PredictContext, TilePredictor

__all__ = ["AutoOptions", "Auto"]


class AutoOptions(Options):
    """Options of ``denoise --method auto``."""

    even: Path | None = Field(
        None, description="--method auto: the even half of INPUT (scored against the odd)."
    )
    odd: Path | None = Field(None, description="--method auto: the odd half of INPUT.")
    candidates: Path | None = Field(
        None,
        description="--method auto: YAML list of candidates (as 'score --candidates'); default: "
        "the identity, a Gaussian σ grid, two low-pass filters, Topaz-3D, and a short n2n and "
        "SC-Net (on the better of the Gaussian and Topaz-3D priors) of --auto-steps.",
    )
    auto_steps: int = Field(
        200,
        ge=0,
        description="--method auto: training steps (2 x 32³ patches, 16 features) of the default "
        "set's short n2n and SC-Net, each trained twice on half the volume to be scored and once "
        "on all of it if it wins; 0: filters only.",
    )


class Auto(Method):
    """Score candidates on the halves, denoise with the best (see ``scnet-dask score``)."""

    name = "auto"
    summary = "The candidate that scores best on INPUT's halves (--even, --odd; see 'score')."
    denoise_options = AutoOptions

    def predictor(self, options: Any, ctx: PredictContext) -> tuple[TilePredictor, dict[str, Any]]:
        """Never built: ``denoise`` resolves ``auto`` to the winning candidate first."""
        raise InputError(
            f"{ctx.volume.path}: --method auto is chosen by 'scnet-dask denoise' (it scores the "
            "candidates on --even/--odd first); it cannot run as a tile predictor"
        )
