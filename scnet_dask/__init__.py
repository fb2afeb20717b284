"""scnet-dask: out-of-core self-supervised denoising of electron tomograms with Dask.

Layers
------
The package is a stack of layers; **each layer imports only the layers below it**, never one
above, and never through an import inside a function (``import-linter`` checks the rule in CI,
ruff's PLC0415 the second part; see ``docs/architecture.md``). From the top:

``cli``
    click only: commands and options generated from the configs and the method registry.
``commands``
    one module per verb (convert, export, info, prior, denoise, simulate, evaluate, demo):
    orchestration of the layers below, no reusable code.
``distributed``
    Dask clusters (threads, LocalCluster, dask-cuda, dask-jobqueue, an address), GPU workers,
    DDP training on Dask workers, the chunk-by-chunk compute loop.
``engine``
    the method-agnostic training loop, run state, patch sampling, run folder.
``config``
    pydantic configs of every command and the cluster; a method's own options are validated
    by the method, so configs sit above the methods.
``methods``
    the registry, the two contracts (Method, TilePredictor), checkpoint → predictor loading,
    one module or package per method.
``tiling``
    tile plan, halo, blend windows, the overlap-add graph, tile size: no method names.
``io``
    MRC / TIFF / OME-Zarr readers and writers, the pyramid writer, atomic outputs and resume
    markers, provenance, registration checks of stored volumes, figures.
``model`` | ``science``
    independent of each other: pure torch networks, losses, checkpoint files, devices | arrays in,
    arrays out (reconstruction, metrics, statistics, the fast-scan model).
``errors``
    the exception types every layer raises.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("scnet-dask")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
