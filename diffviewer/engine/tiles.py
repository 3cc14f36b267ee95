"""Images convolved with kernels that change over the image, blended between grid nodes.

A kernel known at the nodes of a grid (node columns ``xs``, rows ``ys``) is applied
cell by cell: each cell between four nodes is cut out with the data around it to the
kernels' reach, convolved in Fourier space with each corner node's kernel, and the
results are blended with bilinear weights, which sum to 1 and interpolate linearly
between the nodes. A grid of one node is a plain convolution of the whole image.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import scipy.fft as sfft


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
    out[..., (np.arange(ky) - ky // 2) % shape[0], :] = sfft.rfft(rows, axis=-1, workers=-1)
    return sfft.fft(out, axis=-2, workers=-1, overwrite_x=True)


class FourierGrid:
    """A padded real-FFT grid on which small centred kernels are convolved with images."""

    def __init__(self, shape: tuple[int, int], kernel_side: int) -> None:
        pad = kernel_side // 2 + 1
        self.shape = shape
        self.padded = (
            sfft.next_fast_len(shape[0] + 2 * pad, real=True),
            sfft.next_fast_len(shape[1] + 2 * pad, real=True),
        )

    def spectrum(self, image: np.ndarray) -> np.ndarray:
        """Spectrum of an image placed at the origin of the padded grid (zeros around)."""
        return sfft.rfft2(np.asarray(image, dtype=np.float32), s=self.padded, workers=-1)

    def kernel_spectrum(self, kernel: np.ndarray) -> np.ndarray:
        """Spectrum of a centred kernel, its centre at the origin (:func:`kernel_spectrum`)."""
        return kernel_spectrum(kernel, self.padded)

    def image(self, spectrum: np.ndarray) -> np.ndarray:
        """Back to an image of the original shape."""
        out = sfft.irfft2(spectrum, s=self.padded, workers=-1)
        return out[: self.shape[0], : self.shape[1]]


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


#: Longest side (px) of the piece of a cell convolved at once. Cells between nodes far
#: apart (2 x 2 nodes make one cell of a whole 4096^2 image) are cut into pieces, so
#: that the spectra of a piece's planes and of its nodes' kernels take a few MB each, not
#: an image's worth each: the ZOGY score held 1.2 GB above the run at 4096^2. Cells up
#: to this side (GOTO's 30 nodes make cells of 370-460 px) are convolved whole, as before.
MAX_PIECE = 512


def split_cells(cells: list[AxisCell], longest: int = MAX_PIECE) -> list[AxisCell]:
    """Cut each cell of an axis into equal pieces of at most ``longest`` px.

    Parameters
    ----------
    cells : list of AxisCell
        An axis's cells (:func:`axis_cells`).
    longest : int
        Longest piece (px).

    Returns
    -------
    list of AxisCell
        The pieces in order, each with its slice of its cell's node weights.
    """
    out: list[AxisCell] = []
    for start, stop, nodes in cells:
        count = -(-(stop - start) // longest)
        edges = np.linspace(start, stop, count + 1).round().astype(int)
        for lo, hi in itertools.pairwise(edges.tolist()):
            out.append((lo, hi, [(k, w[lo - start : hi - start]) for k, w in nodes]))
    return out


#: Spectra of the images of a cell, or of a node's kernels, on the cell's FFT grid.
Spectra = tuple[np.ndarray, ...]


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

    Parameters
    ----------
    shape : (int, int)
        Shape of the images (px).
    planes : callable
        ``planes(box)``: the images (zeros where unusable) on ``box``, a pair of slices
        (each cell's data with its margin), made when asked: no image-sized copy of
        them need exist.
    xs, ys : tuple of float
        Node columns and rows (px), increasing (:func:`axis_cells`).
    reach : int
        Half-side (px) of the kernels: each cell is convolved with this margin of data.
    node_spectra : callable
        ``node_spectra(grid, row, column)``: the spectra of node (row, column)'s kernels
        on ``grid``; kept for the node's next cell of the same row of cells when it has
        the same FFT grid, and dropped after its last cell of that row.
    node_products : callable
        ``node_products(grid, row, column, kernel_spectra, plane_spectra)``: images on
        the cell's grid (shape ``grid.shape``) made with that node's kernels.
    update : callable
        Called with the fraction (0 to 1) of rows of cells done (progress, cancellation).

    Returns
    -------
    list of numpy.ndarray
        The blended products (float32, of ``shape``), in ``node_products``' order.
    """
    out: list[np.ndarray] = []
    rows, cols = split_cells(axis_cells(shape[0], ys)), split_cells(axis_cells(shape[1], xs))
    # Each node's kernel spectra, on the grid they were made for, from the first cell of a
    # row of cells that needs them to the last (the last column of cells that weighs node
    # column i); made again for the next row. Kept across rows, a whole row of nodes'
    # spectra was held (GOTO's score: 27 MB of its 114 MB traced peak; 95 MB this way,
    # in the same time).
    last_col = {i: c for c, (_, _, nodes) in enumerate(cols) for i, _ in nodes}
    kept: dict[tuple[int, int], tuple[tuple[int, int], Spectra]] = {}
    for done, (r0, r1, row_nodes) in enumerate(rows):
        for col, (c0, c1, col_nodes) in enumerate(cols):
            lo_r, hi_r = max(0, r0 - reach), min(shape[0], r1 + reach)
            lo_c, hi_c = max(0, c0 - reach), min(shape[1], c1 + reach)
            grid = FourierGrid((hi_r - lo_r, hi_c - lo_c), 2 * reach + 1)
            data = tuple(grid.spectrum(p) for p in planes(np.s_[lo_r:hi_r, lo_c:hi_c]))
            inner = np.s_[r0 - lo_r : r1 - lo_r, c0 - lo_c : c1 - lo_c]
            for j, wy in row_nodes:
                for i, wx in col_nodes:
                    if (j, i) not in kept or kept[j, i][0] != grid.padded:
                        kept[j, i] = (grid.padded, node_spectra(grid, j, i))
                    products = node_products(grid, j, i, kept[j, i][1], data)
                    if col == last_col[i]:
                        del kept[j, i]
                    if not out:
                        out = [np.zeros(shape, dtype=np.float32) for _ in products]
                    w = (wy[:, None] * wx[None, :]).astype(np.float32)
                    for acc, product in zip(out, products, strict=True):
                        acc[r0:r1, c0:c1] += w * product[inner]
        update((done + 1) / len(rows))
    return out
