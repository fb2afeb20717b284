"""Command-line interface (click only): ``scnet-dask VERB ...``; see :mod:`scnet_dask.cli.app`."""

from scnet_dask.cli.app import cli, main

__all__ = ["cli", "main"]
