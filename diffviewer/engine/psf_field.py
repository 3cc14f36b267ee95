"""The difference's PSF where it varies over the image, for the catalog's measurements.

A spatially varying kernel makes the difference's PSF vary as well: with the template
convolved it is the science PSF at each position; with the science convolved, the
science PSF through the local kernel. One PSF for the whole image then biases every
PSF flux by the PSF's change from the image centre (a 40 % FWHM gradient across the
image gave fluxes 12 % high on the narrow side and 11 % low on the broad side).

The PSF measured at the centre stays the reference; the kernel supplies the change: at
each node of the score's grid (:func:`diffviewer.engine.score_psfs.kernel_psf_grid`,
spaced by the kernel-matched PSF's change) the node's PSF is the centre's plus the
change of the kernel-matched PSF from the centre to the node, passed through the
decorrelation filter when the difference was whitened. Between nodes the PSF is blended
bilinearly, which commutes with shifting a PSF to a sub-pixel position, so
:class:`PsfField` blends the shifted node PSFs. The forced PSF fluxes use it; the rare
dipole fits keep the centre's PSF.
"""

from __future__ import annotations

import bisect
import dataclasses

import numpy as np
from scipy.interpolate import RectBivariateSpline, bisplev

from diffviewer.engine import fftconv
from diffviewer.engine.decorrelate import decorrelated_psf
from diffviewer.engine.kernel import KernelFit
from diffviewer.engine.photometry import PsfModel
from diffviewer.engine.score_psfs import PsfGrid, kernel_matched_psfs
from diffviewer.engine.subtract import difference_psf


def _bracket(nodes: list[float], value: float) -> tuple[int, int, float]:
    """The two nodes around ``value`` (clamped to the ends) and the upper one's weight.

    Plain Python on the nodes' list: it runs twice per forced flux.
    """
    if len(nodes) == 1:
        return 0, 0, 0.0
    i = min(max(bisect.bisect_left(nodes, value) - 1, 0), len(nodes) - 2)
    w = (value - nodes[i]) / (nodes[i + 1] - nodes[i])
    return i, i + 1, float(min(max(w, 0.0), 1.0))


def _bilinear(
    table: np.ndarray, xs: list[float], ys: list[float], x: float, y: float
) -> np.ndarray:
    """The bilinear blend at (x, y) of ``table[row, column]`` given at the nodes' rows
    ``ys`` and columns ``xs`` (:func:`_bracket`: the outer nodes' beyond them)."""
    j0, j1, wy = _bracket(ys, y)
    i0, i1, wx = _bracket(xs, x)
    return (
        (1 - wy) * (1 - wx) * table[j0, i0]
        + (1 - wy) * wx * table[j0, i1]
        + wy * (1 - wx) * table[j1, i0]
        + wy * wx * table[j1, i1]
    )


def padded(psf: np.ndarray, half: tuple[int, int]) -> np.ndarray:
    """``psf`` (odd sides) centred on a stamp of half-sides ``half`` (at least its own)."""
    hy, hx = psf.shape[0] // 2, psf.shape[1] // 2
    out = np.zeros((2 * half[0] + 1, 2 * half[1] + 1))
    out[half[0] - hy : half[0] + hy + 1, half[1] - hx : half[1] + hx + 1] = psf
    return out


class PsfField(PsfModel):
    """A PSF varying over the image, for forced photometry: node PSFs blended bilinearly.

    Behaves as the :class:`~diffviewer.engine.photometry.PsfModel` of the centre's PSF
    (``image``, ``fwhm``, :meth:`on_box`, which the dipole fits use), except that
    :meth:`shifted`, hence ``stamp`` and every forced PSF flux, gives the PSF at the
    position asked for: the bilinear blend of the four surrounding nodes' interpolating
    bicubic splines, evaluated at the sub-pixel offsets. The nodes' splines share their
    knots, so a blend of splines is the spline whose coefficients are the blend of
    theirs: one spline is evaluated per position. Nothing is tabulated per node, so a
    grid of tens of nodes costs tens of small coefficient arrays.

    Parameters
    ----------
    xs, ys : sequence of float
        Node columns and rows (px), increasing.
    nodes : sequence of sequence of numpy.ndarray
        PSF images at node ``[row][column]``, all of one odd shape (each normalised to
        sum ``enclosed`` here).
    centre : numpy.ndarray
        The PSF at the image centre (same shape).
    enclosed : float
        Share of a point source's whole flux within the images (:class:`PsfModel`).
    """

    def __init__(
        self,
        xs: tuple[float, ...],
        ys: tuple[float, ...],
        nodes: tuple[tuple[np.ndarray, ...], ...],
        centre: np.ndarray,
        enclosed: float = 1.0,
    ) -> None:
        super().__init__(centre, enclosed)
        self.xs, self.ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
        self._xs, self._ys = self.xs.tolist(), self.ys.tolist()
        self._images = tuple(tuple(p * (enclosed / p.sum()) for p in row) for row in nodes)
        hy, hx = self.half
        offsets = (np.arange(-hy, hy + 1.0), np.arange(-hx, hx + 1.0))
        splines = [[RectBivariateSpline(*offsets, p) for p in row] for row in self._images]
        self._knots, self._degrees = splines[0][0].tck[:2], splines[0][0].degrees
        self._coefficients = np.array([[s.tck[2] for s in row] for row in splines])

    @property
    def n_nodes(self) -> int:
        """Number of grid nodes whose PSFs are blended."""
        return len(self.xs) * len(self.ys)

    def nodes(
        self,
    ) -> tuple[tuple[float, ...], tuple[float, ...], tuple[tuple[np.ndarray, ...], ...]]:
        """The node PSFs (each of sum :attr:`enclosed`) and their columns and rows (px)."""
        return tuple(self._xs), tuple(self._ys), self._images

    def shifted(self, x: float, y: float) -> tuple[np.ndarray, int, int]:
        """The PSF at (x, y) centred there, on a stamp one pixel larger than the PSF image.

        Returns
        -------
        stamp : numpy.ndarray
            Shape (2 hy + 2, 2 hx + 2); 0 beyond the PSF image's extent.
        x0, y0 : int
            Pixel of the stamp's [0, 0].
        """
        hy, hx = self.half
        x0, y0 = int(np.floor(x)) - hx, int(np.floor(y)) - hy
        oy = y0 + np.arange(2 * hy + 2) - y
        ox = x0 + np.arange(2 * hx + 2) - x
        coefficients = _bilinear(self._coefficients, self._xs, self._ys, x, y)
        blend = bisplev(oy, ox, (*self._knots, coefficients, *self._degrees))
        blend[np.abs(oy) > hy] = 0.0
        blend[:, np.abs(ox) > hx] = 0.0
        return blend, x0, y0


def field_from_nodes(
    xs: tuple[float, ...],
    ys: tuple[float, ...],
    images: tuple[tuple[np.ndarray, ...], ...],
    enclosed: float,
    centre: tuple[float, float],
) -> PsfModel:
    """A catalog PSF model rebuilt from its nodes (``kernel.fits`` ``CAT_PSF``).

    Parameters
    ----------
    xs, ys : tuple of float
        Node columns and rows (px).
    images : tuple of tuple of numpy.ndarray
        Node PSFs ``[row][column]``.
    enclosed : float
        Their share of a point source's flux.
    centre : (float, float)
        The image centre (x, y; px): the field's centre PSF, which :meth:`PsfModel.on_box`
        and ``fwhm`` give, is the nodes' blend there.

    Returns
    -------
    PsfModel
        The one node's model, or a :class:`PsfField`: its forced fluxes, :meth:`stamp`
        and :meth:`shifted` are the run's exactly (what a saved run's source profile
        draws); its centre PSF is the blend, where the run's is the reference the nodes
        were made from (within ~1 % of its peak on a field whose FWHM grows 40 %).
    """
    if len(xs) * len(ys) == 1:
        return PsfModel(images[0][0], enclosed)
    middle = _bilinear(np.asarray(images, dtype=np.float64), list(xs), list(ys), *centre)
    return PsfField(xs, ys, images, middle, enclosed)


def varying_psf(
    reference: np.ndarray,
    grid: PsfGrid,
    centre: np.ndarray,
    side: str,
    phi: np.ndarray | None,
    enclosed: float = 1.0,
) -> PsfModel:
    """The PSF of one image over the field: the reference plus the kernel's change.

    Parameters
    ----------
    reference : numpy.ndarray
        The PSF used at the image centre (odd sides, sum 1).
    grid : PsfGrid
        Kernel-matched PSFs at the grid's nodes.
    centre : numpy.ndarray
        The kernel-matched PSF of the same image at the image centre (sum 1).
    side : {'science', 'template'}
        Which of the grid's PSFs follows the image (the difference's PSF is the
        convolved-to image's: the science's when the template is convolved).
    phi : numpy.ndarray or None
        The decorrelation filter (sum 1) the image went through, if any.
    enclosed : float
        Share of a point source's whole flux within the reference (:class:`PsfModel`).

    Returns
    -------
    PsfModel
        A plain model of ``reference`` where the kernel-matched PSF does not change
        over the grid (one node, or the side that keeps its measured PSF); else a
        :class:`PsfField`.
    """
    matched = grid.science if side == "science" else grid.template
    changes = [[m - centre for m in row] for row in matched]
    if not any(np.any(c) for row in changes for c in row):
        return PsfModel(reference, enclosed)
    if phi is not None:
        changes = [[fftconv.convolve(c, phi, mode="full") for c in row] for row in changes]
    half = (
        max(reference.shape[0], changes[0][0].shape[0]) // 2,
        max(reference.shape[1], changes[0][0].shape[1]) // 2,
    )
    ref = padded(np.asarray(reference, dtype=np.float64), half)
    nodes = tuple(tuple(ref + padded(c, half) for c in row) for row in changes)
    return PsfField(grid.xs, grid.ys, nodes, ref, enclosed)


def catalog_psfs(
    fit: KernelFit,
    grid: PsfGrid,
    diff_psf: np.ndarray,
    sci_psf: np.ndarray,
    phi: np.ndarray | None,
) -> tuple[PsfModel, PsfModel]:
    """The PSFs the catalog measures with: the difference's and the science image's.

    Parameters
    ----------
    fit : KernelFit
        The PSF-matching kernel fit.
    grid : PsfGrid
        Kernel-matched PSFs at the nodes of a grid over the image.
    diff_psf, sci_psf : numpy.ndarray
        The difference's PSF (after the decorrelation, if any) and the science PSF at
        the image centre.
    phi : numpy.ndarray or None
        The decorrelation filter, when the difference was decorrelated.

    Returns
    -------
    (PsfModel, PsfModel)
        Models of the difference's and the science's PSF, varying over the image with
        the kernel (the difference's follows the image the template or science was
        matched to; the science's varies only when the template was convolved). Both
        carry the science PSF's share of the flux within its image
        (:attr:`diffviewer.engine.psf.PsfEstimate.enclosed`): a transient on the
        difference is a science source, through the kernel and the decorrelation filter,
        which keep its flux.
    """
    ny, nx = fit.solution.shape
    sci_centre, tmpl_centre = kernel_matched_psfs(fit, (nx - 1) / 2.0, (ny - 1) / 2.0)
    est = fit.science_psf
    share = est.enclosed
    if est.photometric is not None:
        # The difference's PSF as the subtraction and the decorrelation made it, from the
        # science PSF measured for photometry.
        sci_psf = est.photometric
        photometric = dataclasses.replace(est, image=est.photometric)
        diff_psf = difference_psf(dataclasses.replace(fit, science_psf=photometric))
        if phi is not None:
            diff_psf = decorrelated_psf(diff_psf, phi)
    if fit.convolved == "template":
        diff = varying_psf(diff_psf, grid, sci_centre, "science", phi, share)
    else:
        diff = varying_psf(diff_psf, grid, tmpl_centre, "template", phi, share)
    return diff, varying_psf(sci_psf, grid, sci_centre, "science", None, share)
