"""``python -m rcm_dask`` runs the CLI."""

from .cli import main

main()
