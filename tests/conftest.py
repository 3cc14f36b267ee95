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


@pytest.fixture(scope="session", autouse=True)
def one_blas_thread() -> None:
    """One BLAS thread for the whole session, as ``diffviewer run`` and every window set
    (:func:`diffviewer.gui.qtapp.one_blas_thread`): the engine's tests run the users'
    arithmetic (OpenBLAS's two threads sum in another order: fluxes 4e-4 apart) whatever
    test made the first window, which set it for the rest of the session before."""
    import numpy  # noqa: F401  (its BLAS loaded, so that the limit reaches it)
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, "blas")


@pytest.fixture
def shared_data() -> Path:
    """The ``../shared/data`` folder; skips when absent."""
    return data_path("")
