"""Images convolved with kernels that change over the image, blended between grid nodes.

A kernel known at the nodes of a grid (node columns ``xs``, rows ``ys``) is applied
cell by cell: each cell between four nodes is cut out with the data around it to the
kernels' reach, convolved in Fourier space with each corner node's kernel, and the
results are blended with bilinear weights, which sum to 1 and interpolate linearly
between the nodes. A grid of one node is a plain convolution of the whole image. Cells longer than a
tile (:data:`MAX_TILE_FFT`) are convolved tile by tile on one FFT grid, so each node's
kernel spectra are computed once for all its tiles.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence

import numpy as np
import scipy.fft as sfft

from diffviewer.engine.lent import lent_map


def embed(
    centred: np.ndarray, shape: tuple[int, int], dtype: type[np.floating] = np.float64
) -> np.ndarray:
    """A zero array of ``shape`` holding a centred image, its centre moved to [0, 0]."""
    out: np.ndarray = np.zeros(shape, dtype=dtype)
    ky, kx = centred.shape
    rows = (np.arange(ky) - ky // 2) % shape[0]
    cols = (np.arange(kx) - kx // 2) % shape[1]
    out[np.ix_(rows, cols)] = centred
    return out


def kernel_spectrum(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``rfft2`` (complex64) of small centred kernels embedded in zeros of ``shape``.

    ``rfft2`` transforms the rows and then the columns; only the kernel's own rows are
    non-zero, so only they are transformed along x, placed at their wrapped rows, and the
    columns transformed: the same operations on the same numbers as ``rfft2`` of
    :func:`embed` (the same bits), at about 40 % of its cost for a kernel of a few tens
    of px on a grid of several hundred.

    Parameters
    ----------
    kernel : numpy.ndarray
        ``(..., ky, kx)`` centred kernels (odd sides, at most ``shape``).
    shape : (int, int)
        The grid (px).

    Returns
    -------
    numpy.ndarray
        ``(..., shape[0], shape[1] // 2 + 1)`` complex64 spectra.
    """
    ky, kx = kernel.shape[-2:]
    lead = kernel.shape[:-2]
    rows = np.zeros((*lead, ky, shape[1]), dtype=np.float32)
    rows[..., (np.arange(kx) - kx // 2) % shape[1]] = kernel
    out = np.zeros((*lead, shape[0], shape[1] // 2 + 1), dtype=np.complex64)
    out[..., (np.arange(ky) - ky // 2) % shape[0], :] = sfft.rfft(rows, axis=-1)
    return sfft.fft(out, axis=-2, overwrite_x=True)


class FourierGrid:
    """A padded real-FFT grid on which small centred kernels are convolved with images.

    An image is placed at the origin with zeros after it; convolved with a kernel of at
    most ``kernel_side`` px, its pixels within half that side of its edges hold the
    circular wrap of the other edge unless the grid leaves that many zeros beyond it.
    """

    def __init__(
        self,
        shape: tuple[int, int],
        kernel_side: int,
        padded: tuple[int, int] | None = None,
        offset: tuple[int, int] = (0, 0),
    ) -> None:
        """``shape``: the images (px); ``padded``: the FFT grid, by default the image with
        ``kernel_side // 2 + 1`` px of zeros on each side, at fast FFT lengths;
        ``offset``: (row, column) in the whole image of the images' pixel [0, 0] (a
        tile's place, for products that depend on position)."""
        pad = kernel_side // 2 + 1
        self.shape = shape
        self.offset = offset
        self.padded = padded or (
            sfft.next_fast_len(shape[0] + 2 * pad, real=True),
            sfft.next_fast_len(shape[1] + 2 * pad, real=True),
        )

    def spectrum(self, image: np.ndarray) -> np.ndarray:
        """Spectrum of an image placed at the origin of the padded grid (zeros around)."""
        return sfft.rfft2(np.asarray(image, dtype=np.float32), s=self.padded)

    def kernel_spectrum(self, kernel: np.ndarray) -> np.ndarray:
        """Spectrum of a centred kernel, its centre at the origin (:func:`kernel_spectrum`)."""
        return kernel_spectrum(kernel, self.padded)

    def image(self, spectrum: np.ndarray) -> np.ndarray:
        """Back to an image of the original shape."""
        out = sfft.irfft2(spectrum, s=self.padded, overwrite_x=True)
        return out[: self.shape[0], : self.shape[1]]


#: Largest FFT length of a tile's side. A transform that leaves the processor's cache
#: costs several times as much per pixel (development machine, float32 rfft2 + irfft2:
#: 5.9 ns/px at 512^2, 7.0 at 768^2, 16 at 1024^2, 41 at 4320^2), so an image is cut
#: into tiles of at most this side, each with the kernels' reach of data around it.
MAX_TILE_FFT = 768


#: Tiles up to which one product's tiles run one after the other, lent threads or not.
#: Two tiles in flight hold two tiles' spectra: at 1024^2 (2 x 2 tiles a convolution) the
#: ZOGY score's two took the run's peak from 231-235 to 246-250 MB, 2.0x HOTPANTS's,
#: and the run was no shorter (2.50 s either way, 5 runs each in turn).
SERIAL_TILES = 4


def tile_fft_length(n: int, reach: int) -> int:
    """FFT length of the tiles along an axis whose cells are at most ``n`` px long.

    The fewest tiles whose FFT length (``reach`` px of margin on each side of the
    tile's output) is at most :data:`MAX_TILE_FFT`, and the shortest fast length that
    holds them (smaller transforms cost more per pixel, and each tile costs its margin).
    A reach too long for any such tile gives one tile over the whole cell.

    Parameters
    ----------
    n : int
        Longest cell along the axis (px).
    reach : int
        Half-side (px) of the kernels.

    Returns
    -------
    int
        The FFT length (a fast length for real transforms).
    """
    longest = MAX_TILE_FFT - 2 * reach
    tiles = -(-n // longest) if longest >= 2 * reach else 1
    return sfft.next_fast_len(-(-n // tiles) + 2 * reach, real=True)


def axis_tiles(start: int, stop: int, inner: int) -> list[tuple[int, int]]:
    """Split ``start:stop`` into the fewest pieces of at most ``inner`` px, of near-equal sizes."""
    count = -(-(stop - start) // inner)
    bounds = np.linspace(start, stop, count + 1).round().astype(int)
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))


#: One cell of an axis: (start, stop, [(node index, weights of the pixels start:stop), ...]).
AxisCell = tuple[int, int, list[tuple[int, np.ndarray]]]


def axis_cells(n: int, nodes: tuple[float, ...]) -> list[AxisCell]:
    """Cut an axis of ``n`` px into the cells between nodes, with each node's linear weight.

    Parameters
    ----------
    n : int
        Axis length (px).
    nodes : tuple of float
        Node positions (px), increasing; one node covers the whole axis with weight 1.

    Returns
    -------
    list of (int, int, list of (int, numpy.ndarray))
        ``(start, stop, [(node index, weight of each pixel in start:stop), ...])``; the
        weights of every pixel sum to 1 and interpolate linearly between the nodes.
    """
    if len(nodes) == 1:
        return [(0, n, [(0, np.ones(n))])]
    bounds = [0] + [int(np.ceil(x)) for x in nodes[1:-1]] + [n]
    cells: list[AxisCell] = []
    for k in range(len(nodes) - 1):
        start, stop = bounds[k], bounds[k + 1]
        u = np.clip((np.arange(start, stop) - nodes[k]) / (nodes[k + 1] - nodes[k]), 0.0, 1.0)
        cells.append((start, stop, [(k, 1.0 - u), (k + 1, u)]))
    return cells


#: Spectra of the images of a cell, or of a node's kernels, on the cell's FFT grid.
Spectra = tuple[np.ndarray, ...]


@dataclasses.dataclass(frozen=True)
class _Tile:
    """One tile of a cell: its FFT grid, its data's box, its output's box and its nodes."""

    grid: FourierGrid
    box: tuple[slice, slice]
    inner: tuple[slice, slice]
    out: tuple[slice, slice]
    #: ``(node row, weights of the tile's rows, node column, weights of its columns)``
    nodes: list[tuple[int, np.ndarray, int, np.ndarray]]


def _cell_tiles(
    shape: tuple[int, int],
    padded: tuple[int, int],
    reach: int,
    cell: tuple[AxisCell, AxisCell],
) -> list[_Tile]:
    """The tiles of one cell (:func:`axis_tiles`), each with ``reach`` px of data around it."""
    (r0, r1, row_nodes), (c0, c1, col_nodes) = cell
    inner = (max(padded[0] - 2 * reach, 1), max(padded[1] - 2 * reach, 1))
    out = []
    for t0, t1 in axis_tiles(r0, r1, inner[0]):
        for u0, u1 in axis_tiles(c0, c1, inner[1]):
            lo_r, hi_r = max(0, t0 - reach), min(shape[0], t1 + reach)
            lo_c, hi_c = max(0, u0 - reach), min(shape[1], u1 + reach)
            nodes = [
                (j, wy[t0 - r0 : t1 - r0], i, wx[u0 - c0 : u1 - c0])
                for j, wy in row_nodes
                for i, wx in col_nodes
            ]
            out.append(
                _Tile(
                    FourierGrid((hi_r - lo_r, hi_c - lo_c), 2 * reach + 1, padded, (lo_r, lo_c)),
                    np.s_[lo_r:hi_r, lo_c:hi_c],
                    np.s_[t0 - lo_r : t1 - lo_r, u0 - lo_c : u1 - lo_c],
                    np.s_[t0:t1, u0:u1],
                    nodes,
                )
            )
    return out


class _NodeSpectra:
    """Each node's kernel spectra, computed once by the first tile that needs them.

    Tiles running at once may need the same node: one computes its spectra while the
    other waits (a lock a node); :meth:`drop` frees them after the node's last cell.
    """

    def __init__(self, compute: Callable[[FourierGrid, int, int], Spectra]) -> None:
        self._compute = compute
        self._values: dict[tuple[int, int], Spectra] = {}
        self._locks: dict[tuple[int, int], threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, grid: FourierGrid, node: tuple[int, int]) -> Spectra:
        """The spectra of ``node`` (computed on ``grid`` if no tile has asked before)."""
        with self._lock:
            lock = self._locks.setdefault(node, threading.Lock())
        with lock:
            if node not in self._values:
                self._values[node] = self._compute(grid, *node)
            return self._values[node]

    def drop(self, node: tuple[int, int]) -> None:
        """Free ``node``'s spectra (no tile may ask for them again)."""
        with self._lock:
            self._values.pop(node, None)
            self._locks.pop(node, None)


def blend_cells(
    shape: tuple[int, int],
    planes: Callable[[tuple[slice, slice]], tuple[np.ndarray, ...]],
    xs: tuple[float, ...],
    ys: tuple[float, ...],
    reach: int,
    node_spectra: Callable[[FourierGrid, int, int], Spectra],
    node_products: Callable[[FourierGrid, int, int, Spectra, Spectra], tuple[np.ndarray, ...]],
    update: Callable[[float], None],
) -> list[np.ndarray]:
    """Products of images with per-node kernels, blended over the cells between the nodes.

    Each cell is cut into tiles (:func:`tile_fft_length`, :func:`axis_tiles`); every tile
    is convolved on the same FFT grid, its data (with ``reach`` px around it, zeros
    beyond the image) placed at the grid's origin with at least ``reach`` px of zeros
    after it, so no output pixel sees the circular wrap. The tiles run in order, on the
    threads lent to the run when there are more than :data:`SERIAL_TILES`
    (:func:`diffviewer.engine.lent.lent_map`): each adds into its own pixels of the
    outputs, so the result is the same bits either way.

    Parameters
    ----------
    shape : (int, int)
        Shape of the images (px).
    planes : callable
        ``planes(box)``: the images (zeros where unusable) on ``box``, a pair of slices
        (each tile's data with its margin), made when asked: no image-sized copy of
        them need exist. Called from the executor's threads.
    xs, ys : tuple of float
        Node columns and rows (px), increasing (:func:`axis_cells`).
    reach : int
        Half-side (px) of the kernels: each tile is convolved with this margin of data.
    node_spectra : callable
        ``node_spectra(grid, row, column)``: the spectra of node (row, column)'s kernels
        on ``grid``; computed once, kept until the node's last cell is done.
    node_products : callable
        ``node_products(grid, row, column, kernel_spectra, plane_spectra)``: images on
        the tile's grid (shape ``grid.shape``, at ``grid.offset`` in the image) made with
        that node's kernels, arrays of their own (they are weighted in place).
    update : callable
        Called with the fraction (0 to 1) of rows of cells done (progress,
        cancellation), on the calling thread.

    Returns
    -------
    list of numpy.ndarray
        The blended products (float32, of ``shape``), in ``node_products``' order.
    """
    rows, cols = axis_cells(shape[0], ys), axis_cells(shape[1], xs)
    padded = (
        tile_fft_length(max(r1 - r0 for r0, r1, _ in rows), reach),
        tile_fft_length(max(c1 - c0 for c0, c1, _ in cols), reach),
    )
    spectra = _NodeSpectra(node_spectra)
    out: list[np.ndarray] = []
    made = threading.Lock()

    def blend(tile: _Tile) -> None:
        data = tuple(tile.grid.spectrum(p) for p in planes(tile.box))
        for j, wy, i, wx in tile.nodes:
            products = node_products(tile.grid, j, i, spectra.get(tile.grid, (j, i)), data)
            with made:
                if not out:
                    out.extend(np.zeros(shape, dtype=np.float32) for _ in products)
            if len(tile.nodes) == 1:  # one node: its weights are 1
                for acc, product in zip(out, products, strict=True):
                    acc[tile.out] = product[tile.inner]
                continue
            w = (wy[:, None] * wx[None, :]).astype(np.float32)
            for acc, product in zip(out, products, strict=True):
                part = product[tile.inner]
                part *= w  # in place: the product is the tile's own array
                acc[tile.out] += part

    # Tiles in cell order, each cell's last tile marked with (row of cells, its column).
    order = [
        (tile, (done, col) if k == len(cell_tiles) - 1 else None)
        for done, row in enumerate(rows)
        for col, column in enumerate(cols)
        for cell_tiles in [_cell_tiles(shape, padded, reach, (row, column))]
        for k, tile in enumerate(cell_tiles)
    ]
    run = lent_map() if len(order) > SERIAL_TILES else map
    results = run(lambda item: blend(item[0]), order)
    try:
        # The results come in order: once a cell's last tile is back, every earlier tile is.
        for (tile, last), _ in zip(order, results, strict=True):
            if last is None:
                continue
            done, col = last
            # A node's last cell is cell (min(j, rows - 1), min(i, columns - 1)).
            for j, _, i, _ in tile.nodes:
                if (done, col) == (min(j, len(rows) - 1), min(i, len(cols) - 1)):
                    spectra.drop((j, i))
            if col == len(cols) - 1:
                update((done + 1) / len(rows))
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()  # an executor's map cancels the tiles not yet started
    return out


def convolve_field(
    shape: tuple[int, int],
    planes: Callable[[tuple[slice, slice]], tuple[np.ndarray, ...]],
    xs: tuple[float, ...],
    ys: tuple[float, ...],
    kernels: Sequence[Sequence[tuple[np.ndarray, ...]]],
    update: Callable[[float], None],
) -> list[np.ndarray]:
    """Images convolved each with its own kernel, the kernels varying over a grid of nodes.

    :func:`blend_cells` with plain products: at each pixel, the bilinear blend of the
    images convolved with the kernels of the four surrounding nodes, which is the image
    convolved with the blend of those kernels (convolution is linear).

    Parameters
    ----------
    shape : (int, int)
        Shape of the images (px).
    planes : callable
        ``planes(box)``: the images on ``box`` (a pair of slices), in the kernels' order.
    xs, ys : tuple of float
        Node columns and rows (px), increasing (:func:`axis_cells`).
    kernels : sequence of sequence of tuple of numpy.ndarray
        ``kernels[row][column]``: that node's centred kernels (odd sides), one per image.
    update : callable
        Called with the fraction (0 to 1) done (progress, cancellation).

    Returns
    -------
    list of numpy.ndarray
        The convolved images (float32, of ``shape``).
    """
    return blend_cells(
        shape,
        planes,
        xs,
        ys,
        max(max(k.shape) for row in kernels for node in row for k in node) // 2,
        lambda grid, j, i: tuple(grid.kernel_spectrum(k) for k in kernels[j][i]),
        lambda grid, j, i, spectra, data: tuple(
            grid.image(d * k) for d, k in zip(data, spectra, strict=True)
        ),
        update,
    )


def convolve(
    shape: tuple[int, int],
    planes: Callable[[tuple[slice, slice]], tuple[np.ndarray, ...]],
    kernels: tuple[np.ndarray, ...],
    update: Callable[[float], None],
) -> list[np.ndarray]:
    """Images convolved each with its own small centred kernel, zeros beyond their edges.

    :func:`convolve_field` with one node, whose ``kernels`` (centred, odd sides) hold
    everywhere: the images are cut into tiles of at most :data:`MAX_TILE_FFT` px (with
    the kernels' reach around each), every tile on one FFT grid, the kernels' spectra
    computed once.
    """
    centre = ((shape[1] - 1) / 2.0,), ((shape[0] - 1) / 2.0,)
    return convolve_field(shape, planes, *centre, ((kernels,),), update)
