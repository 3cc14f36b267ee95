"""Convolution with the spatially varying kernel, and the difference image.

The kernel at output pixel (x, y) is ``K(x, y) = sum_s P_s(x, y) K_s`` (Chebyshev terms
``P_s``), so the convolved image is exactly ``sum_s P_s(x, y) (K_s * I)(x, y)``,
computed tile by tile (:mod:`diffviewer.engine.tiles`): one real FFT of each tile,
reused for every term, an inverse transform along y per term and along x per power of x
(:func:`term_sum`; scipy.fft, single precision, all cores). Pixels beyond the image
edge (and NO_DATA/BAD/CR pixels) count as the image's median level. Outputs whose kernel
footprint (the centred square holding 99% of the kernel's absolute weight; on a cutout
narrower than twice it, a quarter of the cutout's side: :func:`edge_half_width`) leaves
the image or touches NO_DATA are flagged EDGE; BAD/SAT/CR/... are grown by that footprint,
and so is the other image's SAT (a saturated core's wings do not subtract).

The variance is convolved with the squared kernel. ``K(x, y)^2`` is not linear in the
terms, so the variance is convolved once with the squared kernel at the image centre and
scaled by ``sum(K(x, y)^2) / sum(K_centre^2)``: exact for a spatially constant kernel and,
for a varying one, wherever the variance is locally flat (the sky); near stars only the
variation of the kernel's shape, not of its power, is neglected.

The differential background is the kernel fit's, from its stamps; the raw difference's
level over the sky of both inputs is then taken out of it where it is significant
(:func:`sky_corrected`): the one empirical correction of the background, estimated from
sky alone and recorded with its value (``KernelFit.sky_level``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.fft as sfft
from numpy.polynomial import chebyshev
from scipy import ndimage

from diffviewer.engine import fftconv, tiles
from diffviewer.engine.field_terms import chebyshev_terms, term_powers
from diffviewer.engine.kernel_basis import size_cap
from diffviewer.engine.kernel_solution import KernelFit, KernelSolution
from diffviewer.engine.progress import Reporter, null_reporter
from diffviewer.engine.sky import sky_level
from diffviewer.exposure import (
    MASK_DTYPE,
    PIXEL_DEFECTS,
    Exposure,
    MaskPlane,
    planes_set,
    read_only,
    row_blocks,
)

#: Planes of a convolved image's mask that are grown by the kernel footprint (NO_DATA
#: grows into EDGE).
GROWN = int(
    MaskPlane.BAD
    | MaskPlane.SAT
    | MaskPlane.SAT_TEMPLATE
    | MaskPlane.CR
    | MaskPlane.INTRP
    | MaskPlane.SUSPECT
    | MaskPlane.NO_DATA
)

#: Share of the kernel's absolute weight that defines its footprint for mask growth and EDGE.
FOOTPRINT_FRACTION = 0.99

#: Input pixels replaced by the median before convolving (their values are meaningless:
#: no data, and the pixel defects, whose value, a cosmic ray's 5e4 counts, would spread
#: over the kernel's footprint).
_INVALID = int(MaskPlane.NO_DATA | PIXEL_DEFECTS)


@dataclasses.dataclass(frozen=True, eq=False)
class SubtractionProducts:
    """The matched image and the (not yet decorrelated) difference.

    Only the matched image and variance are kept as image planes. The masks, the raw
    difference and the background are made again from them, the inputs and the kernel
    solution when they are read (:attr:`matched`, :attr:`difference`,
    :attr:`background`), the same to the bit: nothing downstream of the decorrelation
    reads them but the outputs and the diagnostics, and keeping them cost five image
    planes for the rest of the run (68 MB on GOTO, 340 MB at 4096^2, with int32 masks).

    Attributes
    ----------
    matched_image, matched_variance : numpy.ndarray
        The convolved image and its variance (float32, read-only): the template matched
        to the science (or the science matched to the template when
        ``fit.convolved == 'science'``, then divided by the mean kernel sum: see
        :func:`science_scale`).
    science, template : Exposure
        The inputs on one grid (the unconvolved one is subtracted from, or subtracts,
        the matched image; the difference takes the science's WCS and header).
    fit : KernelFit
        The kernel (its background, which image was convolved, the photometric scale).
    footprint : int
        Side (px, odd) of the kernel's footprint at the image centre, by which the
        masks are grown (:func:`edge_half_width`).
    kernel_sum_map : numpy.ndarray
        Kernel sum on a coarse grid (see ``KernelSolution.kernel_sum_map``, step
        :attr:`kernel_sum_step`).
    kernel_sum_step : int
        Grid spacing (px) of :attr:`kernel_sum_map`.
    psf : numpy.ndarray
        PSF image of the difference (sum 1).
    cut_by_edge : numpy.ndarray or None
        Where a kernel used whole on a cutout narrower than twice its footprint leaves the
        difference dependent on what lies beyond the edge (:func:`beyond_edge`), flagged
        EDGE with the footprint's border; None when the footprint sets EDGE alone.
    """

    matched_image: np.ndarray
    matched_variance: np.ndarray
    science: Exposure
    template: Exposure
    fit: KernelFit
    footprint: int
    kernel_sum_map: np.ndarray
    kernel_sum_step: int
    psf: np.ndarray
    cut_by_edge: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """Shape (ny, nx) of the images."""
        return self.science.shape

    def _convolved_mask(self, mask: np.ndarray) -> np.ndarray:
        """:func:`convolved_mask` of the convolved image's ``mask``, with EDGE where
        :attr:`cut_by_edge` is set."""
        out = convolved_mask(mask, self.footprint)
        if self.cut_by_edge is not None:
            out[self.cut_by_edge] |= MASK_DTYPE(int(MaskPlane.EDGE))
        return out

    @property
    def matched(self) -> Exposure:
        """The convolved image as an exposure: the unconvolved source's metadata, its mask
        grown by the kernel footprint (:func:`convolved_mask`), the science's zero point
        (its pixels are on the science's scale either way), made on each read."""
        source, _ = self.fit.source_target(self.science, self.template)
        scale = science_scale(self.fit)
        scaled = (
            ""
            if scale == 1.0
            else f", times {scale:.7g} (kernel.fits PHOTSCAL: onto the science's flux scale)"
        )
        return source.replace(
            image=self.matched_image,
            variance=self.matched_variance,
            mask=read_only(self._convolved_mask(source.mask)),
            psf=None,
            zero_point=self.science.zero_point,
            source=f"{source.source} convolved with the matching kernel{scaled}",
        )

    @property
    def difference_mask(self) -> np.ndarray:
        """The raw difference's mask (read-only), made on each read: the convolved
        image's mask with the template's SAT as SAT_TEMPLATE, and the unconvolved image's
        SAT grown by the kernel footprint too (the convolved image's wings do not match a
        saturated, or nearly saturated and non-linear, core there)."""
        source, _ = self.fit.source_target(self.science, self.template)
        matched_mask = self._convolved_mask(source.mask)
        sat = int(MaskPlane.SAT)
        if self.fit.convolved == "template":
            mask = template_planes(matched_mask)
            mask |= grow_planes(self.science.mask, self.footprint, sat)
        else:
            mask = template_planes(grow_planes(self.template.mask, self.footprint, sat))
            mask |= matched_mask
        return read_only(mask)

    @property
    def background(self) -> np.ndarray:
        """The differential background that was subtracted (float32, read-only; science
        counts), made on each read."""
        return read_only(scaled_background(self.fit))

    def difference_pixels(self, box: tuple[slice, slice] | None = None) -> np.ndarray:
        """The raw difference's pixels (:attr:`difference`) over the image or its ``box``:
        a new float32 array, no other image-sized plane made (the whole image is made a
        block of rows at a time: at 4096^2 its background plane was 64 MB of fresh memory,
        made and dropped twice a run)."""
        if box is None:
            out = np.empty(self.science.shape, dtype=np.float32)
            for rows in row_blocks(out.shape):
                out[rows] = self.difference_pixels((rows, slice(None)))
            return out
        rows, cols = box
        if self.fit.convolved == "template":
            diff = self.science.image[rows, cols] - self.matched_image[rows, cols]
        else:
            scale = np.float32(science_scale(self.fit))
            diff = self.matched_image[rows, cols] - scale * self.template.image[rows, cols]
        diff -= scaled_background(self.fit, box)
        return diff

    @property
    def difference(self) -> Exposure:
        """``science - K * template - background`` (template convolved), or
        ``(K * science - template - background) / kappa`` (science convolved, ``kappa``
        the mean kernel sum), so it is in the science's counts either way; variance
        propagated, masks carried (:attr:`difference_mask`; its PSF is :attr:`psf`, not
        attached to the exposure). Made on each read (three image planes): read it once
        and keep what you need."""
        # The background plane is made and dropped before the variance and the mask.
        diff = self.difference_pixels()
        scale = np.float32(science_scale(self.fit))
        if self.fit.convolved == "template":
            variance = self.science.variance + self.matched_variance
        else:
            variance = self.matched_variance + scale**2 * self.template.variance
        return self.science.replace(
            image=read_only(diff),
            variance=read_only(variance),
            mask=self.difference_mask,
            psf=None,
            source="difference",
        )


def convolve_terms(
    image: np.ndarray,
    kernels: np.ndarray,
    order: int,
    reporter: Reporter | None = None,
    *,
    level: float = 0.0,
    invalid: np.ndarray | None = None,
) -> np.ndarray:
    """``sum_s P_s(x, y) (K_s * J)``, the spatially varying convolution of ``J``: the
    image, with ``level`` at its ``invalid`` pixels and beyond its edges.

    Tiled (:func:`diffviewer.engine.tiles.convolve`'s one node): each tile's spectrum is
    computed once and reused for every term, each term's kernel spectrum once for all
    tiles, and the terms are brought back to the tile's pixels by :func:`term_sum`.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image (zero beyond its edges).
    kernels : numpy.ndarray
        ``(n_terms(order), size, size)`` kernels of the Chebyshev terms over the image.
    order : int
        Chebyshev order of the terms.
    reporter : Reporter, optional
        Progress (over the tiles) and cancellation.
    level : float
        Each tile is convolved less ``level`` (its ``invalid`` pixels at zero) and
        ``level * sum(K(x, y))`` is added inside :func:`term_sum`: no image-sized copy of
        the image less its level, nor map of the kernel sum, is made.
    invalid : numpy.ndarray, optional
        Boolean map of the pixels that count as ``level``.

    Returns
    -------
    numpy.ndarray
        float32 image of the same shape.
    """
    reporter = reporter or null_reporter()
    levels = level * kernels.sum(axis=(1, 2))
    ny, nx = image.shape
    tx = chebyshev.chebvander(2.0 * np.arange(nx) / max(nx - 1, 1) - 1.0, order).astype(np.float32)
    ty = chebyshev.chebvander(2.0 * np.arange(ny) / max(ny - 1, 1) - 1.0, order).astype(np.float32)
    (out,) = tiles.blend_cells(
        (ny, nx),
        lambda box: (less_level(image[box], level, None if invalid is None else invalid[box]),),
        ((nx - 1) / 2.0,),
        ((ny - 1) / 2.0,),
        kernels.shape[-1] // 2,
        lambda grid, j, i: tuple(grid.kernel_spectrum(k) for k in kernels),
        lambda grid, j, i, spectra, data: (term_sum(grid, data[0], spectra, tx, ty, levels),),
        reporter.update,
    )
    return out


def less_level(tile: np.ndarray, level: float, invalid: np.ndarray | None) -> np.ndarray:
    """A tile less ``level``, zero at its ``invalid`` pixels (a new float32 array)."""
    out = np.subtract(tile, np.float32(level), dtype=np.float32)
    if invalid is not None:
        out[invalid] = 0.0
    return out


def term_sum(
    grid: tiles.FourierGrid,
    data: np.ndarray,
    spectra: tiles.Spectra,
    tx: np.ndarray,
    ty: np.ndarray,
    levels: np.ndarray,
) -> np.ndarray:
    """A tile's ``sum_s P_s(x, y) ((K_s * tile) + levels[s])``, ``P_s = T_px(x) T_py(y)``.

    Each term's product of spectra is transformed back along y (complex) and weighted by
    its ``T_py`` there; the terms of one x power are summed and transformed back along x
    together (a function of y alone commutes with the transform along x), then weighted
    by ``T_px``: ``order + 1`` transforms along x instead of one a term (``irfft2``'s two
    passes, to float32 rounding), and only over the tile's own rows. A term's level is
    added to its zero frequency along x (a constant along x), weighted by its ``T_py``.

    Parameters
    ----------
    grid : tiles.FourierGrid
        The tile's grid.
    data : numpy.ndarray
        The tile's spectrum on it.
    spectra : tiles.Spectra
        The terms' kernel spectra on it, in :func:`field_terms.term_powers` order.
    tx, ty : numpy.ndarray
        ``(nx, order + 1)`` and ``(ny, order + 1)`` float32 Chebyshev polynomials of the
        whole image's columns and rows.
    levels : numpy.ndarray
        ``(n_terms,)`` a constant added to each term's convolution.

    Returns
    -------
    numpy.ndarray
        ``grid.shape`` float32.
    """
    (r0, c0), (rows, cols) = grid.offset, grid.shape
    order = tx.shape[1] - 1
    powers = term_powers(order)
    out = np.zeros(grid.shape, dtype=np.float32)
    for px in range(order + 1):
        along_y = np.zeros((rows, data.shape[1]), dtype=np.complex64)
        for spectrum, level, (qx, py) in zip(spectra, levels, powers, strict=True):
            if qx == px:
                part = sfft.ifft(data * spectrum, axis=0, overwrite_x=True)[:rows]
                part[:, 0] += np.float32(level * grid.padded[1])
                if order > 0:
                    part *= ty[r0 : r0 + rows, py, None]
                along_y += part
        conv = sfft.irfft(along_y, n=grid.padded[1], axis=1)[:, :cols]
        if order > 0:
            conv *= tx[None, c0 : c0 + cols, px]
        out += conv
    return out


def _interp_matrix(n: int, nodes: np.ndarray) -> np.ndarray:
    """Linear-interpolation weights ``(n, len(nodes))`` from increasing nodes to pixels 0..n-1."""
    g = len(nodes)
    w = np.zeros((n, g), dtype=np.float32)
    if g == 1:
        w[:, 0] = 1.0
        return w
    pos = np.clip(np.interp(np.arange(n), nodes, np.arange(g)), 0, g - 1)
    lo = np.minimum(np.floor(pos).astype(int), g - 2)
    frac = (pos - lo).astype(np.float32)
    w[np.arange(n), lo] = 1.0 - frac
    w[np.arange(n), lo + 1] = frac
    return w


def scale_by_squared_sum_ratio(
    variance: np.ndarray, solution: KernelSolution, step: int | None = None
) -> None:
    """Multiply ``variance`` in place by ``sum(K(x, y)^2) / sum(K_c^2)`` (``K_c``: the
    kernel at the centre); nothing to do at spatial order 0, where the ratio is 1.

    ``sum(K^2) = p^T G p`` with ``G = <K_s, K_t>`` is evaluated on a grid of spacing
    ``step`` (default: 1/32 of the shorter side, 8-64 px) and interpolated bilinearly
    (it is a smooth polynomial; the interpolation error is below 1e-3): along the rows
    once, along the columns a block of rows at a time (no image-sized map of the ratio).
    """
    ny, nx = solution.shape
    if solution.spatial_order == 0:
        return
    step = step or int(np.clip(min(ny, nx) // 32, 8, 64))
    k = solution.spatial_kernels().reshape(-1, solution.size**2)
    gram = k @ k.T
    ys = np.unique(np.r_[np.arange(0, ny, step), ny - 1]).astype(float)
    xs = np.unique(np.r_[np.arange(0, nx, step), nx - 1]).astype(float)
    gx, gy = np.meshgrid(xs, ys)
    p = chebyshev_terms(gx.ravel(), gy.ravel(), solution.spatial_order, solution.shape)
    sq = np.einsum("ns,st,nt->n", p, gram, p).reshape(gy.shape)
    centre = solution.evaluate((nx - 1) / 2.0, (ny - 1) / 2.0)
    ratio = (sq / np.sum(centre**2)).astype(np.float32)
    along_x = ratio @ _interp_matrix(nx, xs).T
    along_y = _interp_matrix(ny, ys)
    for rows in row_blocks(variance.shape):
        variance[rows] *= along_y[rows] @ along_x


def convolved(exposure: Exposure, kernel: np.ndarray) -> Exposure:
    """``exposure`` convolved with one kernel as the subtraction convolves its source: its
    NO_DATA/BAD/CR pixels and the world beyond its edges at the median level
    (:func:`convolve_terms`), its variance with the squared kernel (exact for independent
    pixels); the mask unchanged.

    Parameters
    ----------
    exposure : Exposure
        The image.
    kernel : numpy.ndarray
        Centred kernel (odd side).

    Returns
    -------
    Exposure
    """
    invalid = planes_set(exposure.mask, _INVALID)
    (image, _), (variance, _) = (
        _as_source(plane, k[None], 0, invalid)
        for plane, k in ((exposure.image, kernel), (exposure.variance, kernel**2))
    )
    np.clip(variance, 0.0, None, out=variance)
    return exposure.replace(image=read_only(image), variance=read_only(variance))


def _as_source(
    plane: np.ndarray, kernels: np.ndarray, order: int, invalid: np.ndarray
) -> tuple[np.ndarray, float]:
    """:func:`convolve_terms` of one plane of the convolved image, its ``invalid`` pixels
    and the world beyond its edges at its median level there (:func:`median_level`); and
    that level."""
    level = median_level(plane, invalid)
    given = invalid if invalid.any() else None
    return convolve_terms(plane, kernels, order, level=level, invalid=given), level


def median_level(array: np.ndarray, invalid: np.ndarray) -> float:
    """The median of ``array`` off its ``invalid`` pixels (every 4th row and column; 0 when
    none is left): the level that NO_DATA/BAD/CR pixels and the world beyond the image edge
    count as in the convolution (:func:`convolve_terms`), instead of zero."""
    valid = array[::4, ::4][~invalid[::4, ::4]]
    return float(np.median(valid)) if valid.size else 0.0


def footprint_half_width(kernel: np.ndarray, fraction: float = FOOTPRINT_FRACTION) -> int:
    """Half-width (px) of the smallest centred square holding ``fraction`` of ``sum(|K|)``."""
    half = kernel.shape[0] // 2
    weight = np.abs(kernel)
    total = weight.sum()
    for h in range(half + 1):
        if weight[half - h : half + h + 1, half - h : half + h + 1].sum() >= fraction * total:
            return h
    return half


def edge_half_width(solution: KernelSolution) -> int:
    """Half-width (px) of the footprint by which masks grow and EDGE is set.

    The kernel's footprint at the image centre (:func:`footprint_half_width`), at most
    half the largest kernel fitted on stamps of the image (:func:`size_cap`): a kernel
    derived from the PSFs is used whole on a cutout narrower than twice its footprint,
    and its weight beyond that border (which the kernel fit states) counts the image's
    median level, as beyond any edge.

    Parameters
    ----------
    solution : KernelSolution
        The kernel.

    Returns
    -------
    int
    """
    ny, nx = solution.shape
    centre = solution.evaluate((nx - 1) / 2.0, (ny - 1) / 2.0)
    return min(footprint_half_width(centre), size_cap(solution.shape) // 2)


#: Standard errors by which what lies beyond the image edge may move a pixel's
#: PSF-filtered difference before the pixel is flagged EDGE, where the kernel is used
#: whole on a cutout narrower than twice its footprint (:func:`beyond_edge`).
BEYOND_EDGE_SIGMAS = 1.0


def beyond_edge(
    image: np.ndarray, kernel: np.ndarray, level: float, psf: np.ndarray, variance: np.ndarray
) -> np.ndarray:
    """Pixels whose PSF-filtered difference depends on what lies beyond the image edge.

    The convolution takes the image's median ``level`` beyond its edge. A source the edge
    cuts goes on there: taking the image mirrored at its edge instead (a source centred on
    the edge, exactly) changes the convolved image by ``kernel * (mirrored - level)``,
    counted beyond the edge only. Filtered by the difference's PSF and divided by the
    filtered noise (the S/N a PSF fit would give it), that change is compared with
    :data:`BEYOND_EDGE_SIGMAS`. A sky-limited edge changes nothing; on a 30 px Rubin
    cutout a galaxy cut by the edge left a 6.7 sigma false detection 8 px inside it.

    Parameters
    ----------
    image : numpy.ndarray
        The convolved (source) image, its invalid pixels at ``level``.
    kernel : numpy.ndarray
        The kernel at the image centre (odd side).
    level : float
        The value taken beyond the edge (:func:`median_level`).
    psf : numpy.ndarray
        The difference's PSF (sum 1).
    variance : numpy.ndarray
        The difference's variance.

    Returns
    -------
    numpy.ndarray
        Boolean map, True where the change reaches :data:`BEYOND_EDGE_SIGMAS`.
    """
    half = kernel.shape[0] // 2
    beyond = np.pad(np.asarray(image, dtype=np.float64) - level, half, mode="symmetric")
    beyond[half:-half, half:-half] = 0.0
    change = fftconv.convolve(beyond, kernel, mode="valid")
    weight = psf[::-1, ::-1]
    filtered = fftconv.convolve(change, weight, mode="same")
    noise = np.sqrt(np.clip(fftconv.convolve(variance, weight**2, mode="same"), 1e-30, None))
    return np.abs(filtered) >= BEYOND_EDGE_SIGMAS * noise


#: Most painted pixels (set pixels x square area), as a share of the image, for which
#: :func:`grow_square` paints the squares rather than filtering: the index arrays stay
#: within a few bytes per image pixel.
PAINT_SHARE = 0.125


def grow_square(hit: np.ndarray, size: int) -> np.ndarray:
    """A boolean map grown to a ``size`` x ``size`` square around each set pixel.

    ``scipy.ndimage.maximum_filter`` of the map (mode 'constant'), computed where the
    set pixels are: a sparse map (a few saturated cores) has its squares painted, a
    denser one is filtered on the set pixels' bounding box widened by half the square
    (nothing outside it is reached); a map without any set pixel costs one pass.

    Parameters
    ----------
    hit : numpy.ndarray
        Boolean map.
    size : int
        Side of the square (px).

    Returns
    -------
    numpy.ndarray
        Boolean map (new).
    """
    flat = np.flatnonzero(hit)
    out = np.zeros(hit.shape, dtype=bool)
    ny, nx = hit.shape
    if flat.size * size * size <= PAINT_SHARE * hit.size:
        # maximum_filter's window of output i is input i - size // 2 ... i + (size - 1) // 2
        reach = size // 2 - np.arange(size)
        rows, cols = np.divmod(flat, nx)
        out[
            np.clip(rows[:, None, None] + reach[None, :, None], 0, ny - 1),
            np.clip(cols[:, None, None] + reach[None, None, :], 0, nx - 1),
        ] = True
        return out
    rows, cols = np.divmod(flat, nx)
    below, above = (size - 1) // 2, size // 2  # how far a set pixel reaches each way
    box = np.s_[
        max(int(rows.min()) - below, 0) : int(rows.max()) + above + 1,
        max(int(cols.min()) - below, 0) : int(cols.max()) + above + 1,
    ]
    out[box] = ndimage.maximum_filter(hit[box].view(np.uint8), size=size, mode="constant") > 0
    return out


def grow_planes(
    mask: np.ndarray, size: int, planes: int = GROWN, out: np.ndarray | None = None
) -> np.ndarray:
    """A mask with some planes grown to a ``size`` x ``size`` square around each set pixel.

    Parameters
    ----------
    mask : numpy.ndarray
        mask (``MASK_DTYPE``).
    size : int
        Side (px, odd) of the square: a kernel's footprint.
    planes : int
        Planes to grow (default :data:`GROWN`); NO_DATA among them is kept and grows
        into EDGE (the grown pixels have data, but the kernel reaches where there is none).
    out : numpy.ndarray, optional
        A mask (another array than ``mask``) that holds ``mask``'s planes already: the
        grown planes are added to it in place, and no copy of ``mask`` is made.

    Returns
    -------
    numpy.ndarray
        ``out``, or a new mask (``MASK_DTYPE``).
    """
    out = mask.copy() if out is None else out
    present = int(np.bitwise_or.reduce(mask, axis=None)) if mask.size else 0
    for plane in MaskPlane:
        bit = int(plane)
        if not bit & planes & present:
            continue
        grown = grow_square(planes_set(mask, bit), size)
        target = int(MaskPlane.EDGE) if plane == MaskPlane.NO_DATA else bit
        np.bitwise_or(out, MASK_DTYPE(target), out=out, where=grown)
    return out


def convolved_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Mask of an image convolved with a ``size`` kernel.

    :data:`GROWN` planes are grown by the kernel footprint (:func:`grow_planes`); EDGE is
    set where the kernel reaches beyond the image or onto NO_DATA; NO_DATA itself is
    kept; the DETECTED planes are dropped.
    """
    half = size // 2
    out = grow_planes(
        mask & ~MASK_DTYPE(int(MaskPlane.DETECTED | MaskPlane.DETECTED_NEGATIVE)), size
    )
    edge = MASK_DTYPE(int(MaskPlane.EDGE))
    for view in (
        out[:half],
        out[out.shape[0] - half :],
        out[:, :half],
        out[:, out.shape[1] - half :],
    ):
        view |= edge
    return out


def template_planes(mask: np.ndarray) -> np.ndarray:
    """A template's mask as seen on the difference, score and catalog flags.

    SAT becomes SAT_TEMPLATE (to tell it from the science's SAT); the template's own
    DETECTED planes are dropped (they are not detections on the difference).

    Parameters
    ----------
    mask : numpy.ndarray
        The template's mask (``MASK_DTYPE``).

    Returns
    -------
    numpy.ndarray
        A new mask (``MASK_DTYPE``).
    """
    out = mask & ~MASK_DTYPE(int(MaskPlane.SAT | MaskPlane.DETECTED | MaskPlane.DETECTED_NEGATIVE))
    if int(np.bitwise_or.reduce(mask, axis=None) if mask.size else 0) & int(MaskPlane.SAT):
        sat = planes_set(mask, int(MaskPlane.SAT))
        np.bitwise_or(out, MASK_DTYPE(int(MaskPlane.SAT_TEMPLATE)), out=out, where=sat)
    return out


def science_scale(fit: KernelFit) -> float:
    """Factor that puts the convolved frame on the science's photometric scale.

    1 when the template is convolved (the difference is already in science counts);
    the inverse of the mean kernel sum (``fit.photometric_scale``) when the science is
    convolved: ``K * science`` and the template are in template counts, and are
    multiplied by it (their variances by its square), so that fluxes on the difference
    are science fluxes whichever image was convolved.
    """
    return 1.0 if fit.convolved == "template" else float(fit.photometric_scale)


def difference_psf(fit: KernelFit) -> np.ndarray:
    """PSF of the difference: the science PSF, or the kernel (image centre) times it when
    the science is convolved (sum 1)."""
    sci = np.asarray(fit.science_psf.image, dtype=np.float64)
    if fit.convolved == "template":
        return sci / sci.sum()
    ny, nx = fit.solution.shape
    k = fit.solution.evaluate((nx - 1) / 2.0, (ny - 1) / 2.0)
    out = fftconv.convolve(sci, k, mode="full")
    return out / out.sum()


def scaled_background(fit: KernelFit, box: tuple[slice, slice] | None = None) -> np.ndarray:
    """The fitted differential background over the image, in science counts (float32).

    Parameters
    ----------
    fit : KernelFit
        The kernel fit (its background polynomial; times :func:`science_scale` when the
        science was convolved).
    box : (slice, slice), optional
        Only over this box of the image.

    Returns
    -------
    numpy.ndarray
        A new writeable float32 plane of the image's (or the box's) shape.
    """
    background = fit.solution.background_image(box)
    if fit.convolved == "science":
        background *= np.float32(science_scale(fit))
    return background


def background_at(fit: KernelFit, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The subtracted differential background at positions, in science counts: the values
    of :func:`scaled_background`'s plane, evaluated at any (x, y) in double precision.

    Parameters
    ----------
    fit : KernelFit
        The kernel fit (its background polynomial; times :func:`science_scale` when the
        science was convolved).
    x, y : numpy.ndarray
        Positions (0-based science px), any shape (the same).

    Returns
    -------
    numpy.ndarray
        float64, the positions' shape.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    values = fit.solution.background(x.ravel(), y.ravel()) * science_scale(fit)
    return np.asarray(values).reshape(x.shape)


def sky_corrected(products: SubtractionProducts, sky: np.ndarray) -> SubtractionProducts:
    """The products with the raw difference's level on sky taken out of the background.

    A kernel fit's background comes from its stamps, a few hundred pixels around a few
    tens of stars, where it trades against the kernel's wings and sum (a kernel sum off
    by 1 % leaves every star a residual the stamp's background partly absorbs) and moves
    with which stamps survive: on the DECam demo stacks (14 stamps), sources injected at
    blank positions moved it by up to 1.2 counts; on the pyDIA frames the difference's
    sky sat 2-8 counts above none (HOTPANTS's: -1 to +2.4). A PSF flux reads such a level
    times ``1 / sum(P^2)`` (82 px on the demo), an error its variance does not hold. The
    level over the pixels far from every source of either input (a clipped mean:
    :func:`~diffviewer.engine.sky.sky_level`, taken out when significant) is what a blank
    position's flux is measured against.

    Parameters
    ----------
    products : SubtractionProducts
        The subtraction with the kernel fit's background.
    sky : numpy.ndarray
        Boolean map of the sky pixels (:meth:`~diffviewer.engine.sky.InputSources.sky`).

    Returns
    -------
    SubtractionProducts
        With ``fit.sky_level`` set and, when applied, the level (science counts) added to
        the solution's background (in its own units: divided by :func:`science_scale`).
    """
    level = sky_level(products.difference_pixels(), sky)
    fit = products.fit
    solution = fit.solution.with_background_offset(level.offset / science_scale(fit))
    fit = dataclasses.replace(fit, solution=solution, sky_level=level)
    return dataclasses.replace(products, fit=fit)


def subtract_images(
    science: Exposure, template: Exposure, fit: KernelFit, reporter: Reporter
) -> SubtractionProducts:
    """Convolve one image with the kernel and subtract.

    Parameters
    ----------
    science, template : Exposure
        The pair on one pixel grid.
    fit : KernelFit
        The kernel; ``fit.convolved`` says which image it applies to.
    reporter : Reporter
        Progress and cancellation.

    Returns
    -------
    SubtractionProducts
        The difference is always science side minus template side.
    """
    sol = fit.solution
    source, _ = fit.source_target(science, template)
    kernels = sol.spatial_kernels()
    invalid = planes_set(source.mask, _INVALID)
    matched_image, level = _as_source(source.image, kernels, sol.spatial_order, invalid)
    reporter.update(0.45)
    ny, nx = science.shape
    centre = sol.evaluate((nx - 1) / 2.0, (ny - 1) / 2.0)
    matched_var, _ = _as_source(source.variance, (centre**2)[None], 0, invalid)
    scale_by_squared_sum_ratio(matched_var, sol)
    np.clip(matched_var, 0.0, None, out=matched_var)
    reporter.update(0.85)
    if fit.convolved == "science":
        # K * science carries the template's counts: back to the science's photometric
        # scale, as LSST's ip_diffim does on its convolve-science path.
        scale = np.float32(science_scale(fit))
        matched_image *= scale
        matched_var *= scale**2
    half = edge_half_width(sol)
    psf = difference_psf(fit)
    cut_by_edge = None
    if half < footprint_half_width(centre):
        _, target = fit.source_target(science, template)
        factor = float(science_scale(fit)) if fit.convolved == "science" else 1.0
        cut_by_edge = read_only(
            beyond_edge(
                np.where(invalid, level, source.image),
                centre * factor,
                level,
                psf,
                # the difference's variance (the template on the science's scale)
                matched_var + np.float32(factor) ** 2 * target.variance,
            )
        )
    step = max(16, min(science.shape) // 16)
    ksum = sol.kernel_sum_map(step=step)
    ksum.flags.writeable = False
    psf.flags.writeable = False
    reporter.update(1.0)
    return SubtractionProducts(
        read_only(matched_image),
        read_only(matched_var),
        science,
        template,
        fit,
        2 * half + 1,
        ksum,
        step,
        psf,
        cut_by_edge,
    )
