"""Local PSFs for ZOGY's score from the spatially varying PSF-matching kernel.

ZOGY subtracts a source cleanly only where its science PSF is the template PSF
convolved with the matching kernel, P_n = K(x, y) (x) P_r (up to the flux ratio). A
kernel fitted with a spatial order above 0 follows a PSF that changes over the field,
so the score's PSFs are built from it at the nodes of a grid (ZOGY section 9 cuts the
image into sub-images for the same reason), and :func:`diffviewer.engine.zogy.zogy_score_grid`
blends between them. The grid is as fine as the kernel's change requires: one node at the
centre when the matched PSF departs from the centre's by less than the blend's own
error (:func:`kernel_psf_grid`), else nodes at the image edges and as many between as
keep the matched PSF's change from one node to the next within
``ScoreConfig.max_psf_change``.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from diffviewer.config import ScoreConfig
from diffviewer.engine import fftconv
from diffviewer.engine.kernel import KernelFit


@dataclasses.dataclass(frozen=True, eq=False)
class PsfGrid:
    """PSFs of the two images and their flux ratio at the nodes of a grid over the image.

    The score between nodes blends the scores made with the PSFs of the nearest nodes
    (bilinear weights); a grid of one node is a PSF constant over the image.

    Attributes
    ----------
    xs, ys : tuple of float
        Node columns and rows (0-based px), increasing; one of each for a constant PSF,
        else the first and last at the image edges.
    science, template : tuple of tuple of numpy.ndarray
        PSF images (odd sides, any normalisation) at node ``[row][column]``.
    flux_ratio : numpy.ndarray
        ``(len(ys), len(xs))`` science over template flux of one source (F_n / F_r).
    """

    xs: tuple[float, ...]
    ys: tuple[float, ...]
    science: tuple[tuple[np.ndarray, ...], ...]
    template: tuple[tuple[np.ndarray, ...], ...]
    flux_ratio: np.ndarray

    @classmethod
    def constant(
        cls, sci_psf: np.ndarray, tmpl_psf: np.ndarray, flux_ratio: float, shape: tuple[int, int]
    ) -> PsfGrid:
        """One node at the centre of an image of ``shape``: the same PSFs everywhere."""
        return cls(
            ((shape[1] - 1) / 2.0,),
            ((shape[0] - 1) / 2.0,),
            ((sci_psf,),),
            ((tmpl_psf,),),
            np.array([[flux_ratio]], dtype=float),
        )

    @property
    def n_nodes(self) -> int:
        """Number of nodes (PSF pairs) in the grid."""
        return len(self.xs) * len(self.ys)


#: Positions per axis at which the kernel's change over the image is measured.
PROBES = 9

#: A matched PSF changing by less than this (fraction, L2) across the image is constant.
CONSTANT_CHANGE = 1e-3


def kernel_matched_psfs(fit: KernelFit, x: float, y: float) -> tuple[np.ndarray, np.ndarray]:
    """Science and template PSFs at (x, y), made consistent with the fitted matching kernel.

    ZOGY's matching is implicit in the two PSFs: it subtracts a source cleanly only when
    P_n = K (x) P_r (up to the flux ratio). Independently measured PSFs rarely meet that
    to the accuracy a bright galaxy needs (on the DECam demo stacks, PSFs broadened by
    galaxies among the stars turned the transient on its host into a negative dipole),
    and they do not carry the residual misregistration that the kernel absorbs by
    moving its centroid. So the image that was convolved keeps its measured PSF and the
    other's is that PSF convolved with the kernel at (x, y), normalised to sum 1 (the
    flux ratio enters ZOGY separately).

    Parameters
    ----------
    fit : KernelFit
        The PSF-matching kernel fit, with the two PSF estimates it was sized from.
    x, y : float
        Position (0-based science px).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        PSF images (odd, sum 1) of the science and of the template.
    """
    k = fit.solution.evaluate(x, y)
    k = k / k.sum()
    source = fit.template_psf if fit.convolved == "template" else fit.science_psf
    measured = np.asarray(source.image, dtype=np.float64)
    matched = fftconv.convolve(measured, k, mode="full")
    matched /= matched.sum()
    return (matched, measured) if fit.convolved == "template" else (measured, matched)


def _flux_ratio(fit: KernelFit, x: float, y: float) -> float:
    """Science over template flux of a source at (x, y): the local kernel sum (or inverse)."""
    k_sum = float(fit.solution.kernel_sum(x, y))
    return k_sum if fit.convolved == "template" else 1.0 / k_sum


def _matched(fit: KernelFit, x: float, y: float) -> np.ndarray:
    """The PSF made by the kernel at (x, y) (the science PSF when the template is convolved)."""
    sci, tmpl = kernel_matched_psfs(fit, x, y)
    return sci if fit.convolved == "template" else tmpl


def _variation(fit: KernelFit, shape: tuple[int, int]) -> tuple[float, float, float]:
    """The matched PSF's change along x and y (:func:`psf_change`) and its largest
    departure from the centre's (L2, over the centre's L2 norm) at the probes."""
    if fit.solution.spatial_order == 0:
        return 0.0, 0.0, 0.0
    ny, nx = shape
    xs, ys = np.linspace(0.0, nx - 1.0, PROBES), np.linspace(0.0, ny - 1.0, PROBES)
    psfs = np.array([[_matched(fit, x, y) for x in xs] for y in ys])
    centre = _matched(fit, (nx - 1) / 2.0, (ny - 1) / 2.0)
    scale = float(np.linalg.norm(centre))
    along_x = np.linalg.norm(np.diff(psfs, axis=1), axis=(2, 3)).sum(axis=1).max()
    along_y = np.linalg.norm(np.diff(psfs, axis=0), axis=(2, 3)).sum(axis=0).max()
    departure = np.linalg.norm(psfs - centre, axis=(2, 3)).max()
    return float(along_x) / scale, float(along_y) / scale, float(departure) / scale


def psf_change(fit: KernelFit, shape: tuple[int, int]) -> tuple[float, float]:
    """Fractional change of the kernel-matched PSF along x and along y over the image.

    The matched PSF is evaluated on :data:`PROBES` x :data:`PROBES` positions spanning the
    image; along each row (column) the L2 norms of the differences between neighbours,
    over the L2 norm of the PSF at the image centre, are summed (the path length of the
    PSF along that line), and the largest over the rows (columns) is returned.

    Parameters
    ----------
    fit : KernelFit
        The PSF-matching kernel fit.
    shape : (int, int)
        Image shape (ny, nx).

    Returns
    -------
    (float, float)
        Change along x and along y (fraction; 0 for a kernel of spatial order 0).
    """
    along_x, along_y, _ = _variation(fit, shape)
    return along_x, along_y


def _nodes(n: int, change: float, config: ScoreConfig) -> tuple[float, ...]:
    """Node positions along an axis of ``n`` px over which the PSF changes by ``change``."""
    if change < CONSTANT_CHANGE:
        return ((n - 1) / 2.0,)
    cells = int(np.ceil(change / config.max_psf_change))
    cells = max(1, min(cells, n // config.min_tile))
    return tuple(float(v) for v in np.linspace(0.0, n - 1.0, cells + 1))


def kernel_psf_grid(fit: KernelFit, shape: tuple[int, int], config: ScoreConfig) -> PsfGrid:
    """PSFs and flux ratios for ZOGY at a grid of nodes sized by the kernel's change.

    Parameters
    ----------
    fit : KernelFit
        The PSF-matching kernel fit.
    shape : (int, int)
        Image shape (ny, nx).
    config : ScoreConfig
        ``max_psf_change`` (fraction between neighbouring nodes) and ``min_tile`` (px).

    Returns
    -------
    PsfGrid
        One node at the centre when the matched PSF departs from the centre's by less
        than ``max_psf_change ** 2`` at every probe (L2, fraction): the blend between
        nodes ``max_psf_change`` apart errs to second order, of that size, and one node
        errs by the departure; else nodes at the image edges, evenly spaced, with cells
        no smaller than ``min_tile`` px (one along an axis the PSF does not change along).
    """
    change_x, change_y, departure = _variation(fit, shape)
    if departure < config.max_psf_change**2:
        change_x = change_y = 0.0
    xs, ys = _nodes(shape[1], change_x, config), _nodes(shape[0], change_y, config)
    pairs = [[kernel_matched_psfs(fit, x, y) for x in xs] for y in ys]
    return PsfGrid(
        xs,
        ys,
        tuple(tuple(p[0] for p in row) for row in pairs),
        tuple(tuple(p[1] for p in row) for row in pairs),
        np.array([[_flux_ratio(fit, x, y) for x in xs] for y in ys]),
    )
