"""Tiled FFT convolution and the blend of per-node kernels (:mod:`diffviewer.engine.tiles`)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffviewer.engine import fftconv, tiles
from diffviewer.engine.lent import lend, threads_worth_lending
from diffviewer.errors import Cancelled
from tests.engine.helpers import gaussian_psf

#: float32 FFTs of values of order 1: the tiled and the whole-image results differ by
#: rounding only (a few 1e-7 relative to the largest value).
ROUNDING = 2e-6


def _kernel(sigma_x: float, sigma_y: float, side: int = 21) -> np.ndarray:
    """An elliptical Gaussian kernel (sum 1) with a constant offset, so it is not symmetric."""
    y, x = np.mgrid[:side, :side] - side // 2
    k = np.exp(-0.5 * ((x / sigma_x) ** 2 + (y / sigma_y) ** 2)) * (1.0 + 0.1 * x / side)
    return k / k.sum()


@pytest.fixture
def small_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles of at most 96 px, so that small images are cut into many."""
    monkeypatch.setattr(tiles, "MAX_TILE_FFT", 96)


def test_tile_lengths_cover_the_axis_within_the_largest_tile() -> None:
    for n, reach in ((4096, 30), (1850, 12), (300, 10), (50, 40)):
        length = tiles.tile_fft_length(n, reach)
        pieces = tiles.axis_tiles(0, n, length - 2 * reach)
        assert pieces[0][0] == 0 and pieces[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
        assert max(b - a for a, b in pieces) + 2 * reach <= length
        # Beyond one tile, no FFT leaves the cache-sized length by more than a fast step.
        if n + 2 * reach > tiles.MAX_TILE_FFT and 4 * reach < tiles.MAX_TILE_FFT:
            assert length <= 1.1 * tiles.MAX_TILE_FFT


@pytest.mark.usefixtures("small_tiles")
def test_tiled_convolution_is_the_whole_image_convolution() -> None:
    rng = np.random.default_rng(1)
    image = rng.normal(size=(301, 257)).astype(np.float32)
    image[100:110, 50:60] += 50.0  # a bright patch across a tile edge
    k1, k2 = _kernel(2.0, 3.0), _kernel(1.5, 1.0, 15)
    out = tiles.convolve(
        image.shape, lambda box: (image[box], image[box] ** 2), (k1, k2), lambda done: None
    )
    assert len(out) == 2 and out[0].dtype == np.float32
    for got, data, k in zip(out, (image, image**2), (k1, k2), strict=True):
        want = fftconv.convolve(data.astype(np.float64), k, mode="same")
        assert np.max(np.abs(got - want)) < ROUNDING * np.max(np.abs(want))


@pytest.mark.usefixtures("small_tiles")
def test_blended_tiles_are_the_blend_of_whole_image_convolutions() -> None:
    """Each pixel is the bilinear blend of its cell's corner nodes' whole-image convolutions."""
    rng = np.random.default_rng(2)
    shape = (230, 410)
    image = rng.normal(size=shape).astype(np.float32)
    xs, ys = (0.0, 150.0, 409.0), (0.0, 229.0)
    kernels = {
        (j, i): gaussian_psf(1.5 + 0.5 * i + 0.7 * j, half=8) for j in range(2) for i in range(3)
    }
    (got,) = tiles.blend_cells(
        shape,
        lambda box: (image[box],),
        xs,
        ys,
        8,
        lambda grid, j, i: (grid.kernel_spectrum(kernels[j, i]),),
        lambda grid, j, i, spectra, data: (grid.image(data[0] * spectra[0]),),
        lambda done: None,
    )
    want = np.zeros(shape)
    for r0, r1, row_nodes in tiles.axis_cells(shape[0], ys):
        for c0, c1, col_nodes in tiles.axis_cells(shape[1], xs):
            for j, wy in row_nodes:
                for i, wx in col_nodes:
                    conv = fftconv.convolve(image.astype(np.float64), kernels[j, i], mode="same")
                    want[r0:r1, c0:c1] += np.outer(wy, wx) * conv[r0:r1, c0:c1]
    assert np.max(np.abs(got - want)) < ROUNDING * np.max(np.abs(want))


def _blend(
    image: np.ndarray,
    xs: tuple[float, ...],
    ys: tuple[float, ...],
    update: Callable[[float], None],
    asked: list[tuple[int, int]] | None = None,
) -> np.ndarray:
    """:func:`tiles.blend_cells` of one image with a Gaussian a node (wider down and right)."""

    def spectra(grid: tiles.FourierGrid, j: int, i: int) -> tiles.Spectra:
        if asked is not None:
            asked.append((j, i))
        return (grid.kernel_spectrum(gaussian_psf(1.2 + 0.4 * i + 0.3 * j, half=6)),)

    (out,) = tiles.blend_cells(
        image.shape,
        lambda box: (image[box],),
        xs,
        ys,
        6,
        spectra,
        lambda grid, j, i, spec, data: (grid.image(data[0] * spec[0]),),
        update,
    )
    return out


@pytest.mark.usefixtures("small_tiles")
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ny=st.integers(13, 260),
    nx=st.integers(13, 260),
    node_rows=st.integers(1, 4),
    node_cols=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_tiles_on_threads_give_the_same_bits_and_each_node_once(
    ny: int, nx: int, node_rows: int, node_cols: int, seed: int
) -> None:
    """Each tile adds into its own pixels, so the threads change no bit; every node's
    spectra are made once however the tiles are shared out."""
    image = np.random.default_rng(seed).normal(size=(ny, nx)).astype(np.float32)
    xs = tuple(np.linspace(0.0, nx - 1.0, node_cols)) if node_cols > 1 else ((nx - 1) / 2,)
    ys = tuple(np.linspace(0.0, ny - 1.0, node_rows)) if node_rows > 1 else ((ny - 1) / 2,)
    serial = _blend(image, xs, ys, lambda done: None)
    asked: list[tuple[int, int]] = []
    progress: list[float] = []
    with ThreadPoolExecutor(3) as pool, lend(pool):
        threaded = _blend(image, xs, ys, progress.append, asked)
    assert np.array_equal(serial, threaded)
    assert sorted(asked) == sorted(set(asked)) and len(asked) == len(xs) * len(ys)
    assert progress == sorted(progress) and progress[-1] == 1.0


@pytest.mark.usefixtures("small_tiles")
def test_a_cancel_on_threads_stops_the_tiles_not_yet_started() -> None:
    """The first row's progress raises: the error reaches the caller and the tiles
    queued after it are not run (24 tiles in all, 8 in the first of 3 rows of cells)."""
    image = np.ones((300, 300), dtype=np.float32)
    ran: list[tuple[slice, slice]] = []
    lock = threading.Lock()

    def planes(box: tuple[slice, slice]) -> tuple[np.ndarray, ...]:
        with lock:
            ran.append(box)
        return (image[box],)

    def run(update: Callable[[float], None]) -> None:
        tiles.blend_cells(
            image.shape,
            planes,
            (0.0, 150.0, 299.0),
            (0.0, 100.0, 200.0, 299.0),
            6,
            lambda grid, j, i: (grid.kernel_spectrum(gaussian_psf(1.5, half=6)),),
            lambda grid, j, i, spec, data: (grid.image(data[0] * spec[0]),),
            update,
        )

    run(lambda done: None)
    total = len(ran)
    ran.clear()

    def stop(done: float) -> None:
        raise Cancelled("cancelled in a test")

    with ThreadPoolExecutor(1) as pool, lend(pool), pytest.raises(Cancelled):
        run(stop)
    assert total == 24 and 8 <= len(ran) < total


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 2), (8, 2)])
def test_a_second_thread_is_lent_on_two_cores(cores: int, threads: int) -> None:
    assert threads_worth_lending(cores) == threads


@pytest.mark.usefixtures("small_tiles")
@pytest.mark.parametrize(("side", "on_lent_threads"), [(150, False), (300, True)])
def test_products_of_few_tiles_stay_on_the_calling_thread(side: int, on_lent_threads: bool) -> None:
    """With threads lent, a product of at most SERIAL_TILES tiles (2 x 2 of 96 px at 150
    px) runs them one after the other on the caller's thread, holding one tile's spectra
    at a time; a larger one (300 px: 4 x 4) runs on the lent threads."""
    image = np.ones((side, side), dtype=np.float32)
    where: list[str] = []

    def planes(box: tuple[slice, slice]) -> tuple[np.ndarray, ...]:
        where.append(threading.current_thread().name)
        return (image[box],)

    with ThreadPoolExecutor(2, thread_name_prefix="lent") as pool, lend(pool):
        tiles.blend_cells(
            image.shape,
            planes,
            ((side - 1) / 2,),
            ((side - 1) / 2,),
            6,
            lambda grid, j, i: (grid.kernel_spectrum(gaussian_psf(1.5, half=6)),),
            lambda grid, j, i, spec, data: (grid.image(data[0] * spec[0]),),
            lambda done: None,
        )
    assert (len(where) > tiles.SERIAL_TILES) == on_lent_threads
    lent = [name.startswith("lent") for name in where]
    assert all(lent) if on_lent_threads else not any(lent)
