"""scnet-dask: out-of-core self-supervised denoising of electron tomograms with Dask."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("scnet-dask")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
