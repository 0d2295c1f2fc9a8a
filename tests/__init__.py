"""rcm_dask's tests; fixtures in conftest.py, fakes and helpers in rcm_dask.testing."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
"""The repository root."""
DATA = Path(__file__).resolve().parent / "data"
"""Small committed inputs: Rust files and crates."""
