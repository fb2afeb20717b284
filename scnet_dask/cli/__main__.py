"""``python -m scnet_dask.cli``: the same as the ``scnet-dask`` command."""

from scnet_dask.cli.app import main

main()
