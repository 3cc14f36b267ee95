"""Shared fixtures: the real-data folder and the seeded synthetic pairs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def data_path(relative: str) -> Path:
    """Path of a file under ``../shared/data``; skips the test when it is absent.

    Parameters
    ----------
    relative : str
        Path below ``../shared/data``, e.g. ``"goto/1.fits"``.

    Returns
    -------
    Path
    """
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(
            f"real data {path} is absent (the ../shared/data folder is not beside the project)"
        )
    return path


@pytest.fixture
def shared_data() -> Path:
    """The ``../shared/data`` folder; skips when absent."""
    return data_path("")
