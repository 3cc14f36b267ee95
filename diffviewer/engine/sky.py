"""Where the sky is: pixels far from every source of either input image.

A source is any pixel whose 5 x 5 box mean (after a smooth background) exceeds three
times that mean's robust spread over the pixels usable on both inputs, of either sign (a
hole in the sky is no sky either). The spread is measured on the box mean itself, so
noise correlated between pixels (coadds, resampled stacks) does not make every pixel a
source. The two inputs' sources are found once a run (:func:`input_sources`); sky is
every usable pixel farther than a given distance, in x or y, from a source pixel of
either input (:meth:`InputSources.sky`). Quantities that must not see the sources (the
kernel fit's noise covariances, the renormalisation of the difference's noise, a
differential background) are measured there, each at its own distance.
"""

from __future__ import annotations

import dataclasses
from types import EllipsisType

import numpy as np
from scipy import ndimage

from diffviewer.engine.background import SkyBackground, fit_background, sampled_robust_std
from diffviewer.engine.lent import lent_map
from diffviewer.errors import InsufficientKernelSources
from diffviewer.exposure import Exposure, finite_usable, map_by_rows, read_only, row_blocks
from diffviewer.stats import clip_range, masked_sample

#: Box (px) over which an input is averaged to find its sources, and the threshold
#: (robust sigma of that mean) above which a pixel is a source.
SOURCE_BOX = 5
SOURCE_SIGMA = 3.0

#: Background mesh (px) for finding the inputs' sources.
BACKGROUND_MESH = 128

#: Least number of sky pixels for a background measured on sky alone: their mean is
#: then known to 1 / sqrt(200) ~ 0.07 of the per-pixel noise. With fewer (an alert
#: cutout filled by its transient and host) no sky level is taken out of the difference
#: (:class:`SkyLevel`; such cutouts come background-subtracted, and a median over
#: the source's own pixels ate 5-14 counts of S/N 5 transients on the Rubin HSC
#: cutouts) and :func:`sky_backgrounds` keeps the first estimate.
MIN_BACKGROUND_SKY = 200

#: Fewest pixels usable on both inputs for their sky noise to be measured: the
#: interquartile sigma of n pixels is known to about 1.17 / sqrt(n), 12 % at 100.
MIN_USABLE_PIXELS = 100

#: Significance (in its standard errors) from which a difference's sky level is taken out
#: (:class:`SkyLevel`). On a cutout of a few hundred sky pixels it is known to
#: 0.06-0.08 of the pixel noise, which a PSF of FWHM 6-10 px turns into a flux error
#: (``error / sum(P^2)``) of 0.6-1.0 times a point source's own, which the catalog's
#: errors do not hold (measured: pulls 1.2 at FWHM 8 px). A level within 3 of its errors
#: of none is that noise: inputs already background-subtracted (survey cutouts) agree
#: there, and a sky left on one input stands out by far more.
BACKGROUND_SIGNIFICANCE = 3.0

#: Side (px) of the cells whose means give a sky level's error (:func:`sky_level`): well
#: beyond the reach of a difference's noise correlation (a kernel's footprint, a coadd's
#: resampling kernel, a few px), so that a cell covaries with its neighbours alone, by
#: what :func:`_correlation_factor` adds.
SKY_CELL = 32

#: Fewest cells for that error (a cutout has one or two).
MIN_SKY_CELLS = 16

#: Most cells whose noise correlation tells how much adjacent cells covary
#: (:func:`_correlation_factor`): 1024 cells of :data:`SKY_CELL` px hold 10^6 pixels.
CORRELATION_CELLS = 1024

#: Most sky pixels the clip range is found on (its median and MAD are then known to
#: ~0.1 % of the noise; all of them cost 0.6 s at 4096^2).
SKY_SAMPLES = 1_000_000


@dataclasses.dataclass(frozen=True)
class SkyLevel:
    """A difference's level on sky, and whether it is taken out.

    Attributes
    ----------
    level : float
        The clipped mean over the sky pixels (image units; NaN without any:
        :func:`sky_level`).
    error : float
        Its standard error.
    n_pixels : int
        The sky pixels it was measured on.
    """

    level: float
    error: float
    n_pixels: int

    @property
    def applied(self) -> bool:
        """Taken out: measured on at least :data:`MIN_BACKGROUND_SKY` pixels, and further
        than :data:`BACKGROUND_SIGNIFICANCE` standard errors from none."""
        return self.n_pixels >= MIN_BACKGROUND_SKY and bool(
            abs(self.level) > BACKGROUND_SIGNIFICANCE * self.error
        )

    @property
    def offset(self) -> float:
        """What is taken out: the level when :attr:`applied`, else 0."""
        return self.level if self.applied else 0.0

    def describe(self) -> str:
        """The phrase that says what was measured and done."""
        if self.n_pixels < MIN_BACKGROUND_SKY:
            return (
                f"no sky level taken out of the difference ({self.n_pixels} sky pixels, "
                f"fewer than {MIN_BACKGROUND_SKY})"
            )
        measured = (
            f"the difference's sky level {self.level:.4g} +- {self.error:.2g} (clipped mean "
            f"over {self.n_pixels} sky pixels)"
        )
        if self.applied:
            return f"{measured}, taken out of its differential background"
        return (
            f"{measured} is within {BACKGROUND_SIGNIFICANCE:g} standard errors of none: "
            "not taken out"
        )

    def as_dict(self) -> dict[str, object]:
        """The record ``metadata.json`` holds (``kernel.sky_level``; NaN as None)."""
        return {
            "level": self.level if np.isfinite(self.level) else None,
            "error": self.error if np.isfinite(self.error) else None,
            "n_pixels": self.n_pixels,
            "applied": self.applied,
            "why": self.describe(),
        }

    @classmethod
    def from_dict(cls, record: dict[str, object]) -> SkyLevel:
        """The level :meth:`as_dict` recorded."""
        level, error = (record[key] for key in ("level", "error"))
        return cls(
            float("nan") if level is None else float(level),  # type: ignore[arg-type]
            float("nan") if error is None else float(error),  # type: ignore[arg-type]
            int(record["n_pixels"]),  # type: ignore[call-overload]
        )


def sky_level(image: np.ndarray, sky: np.ndarray) -> SkyLevel:
    """A difference's level on its sky pixels: the mean of those within 3 robust standard
    deviations of their median (:func:`~diffviewer.stats.clip_range`, on at most
    :data:`SKY_SAMPLES` of them, regularly spaced), and its error.

    The error comes from the scatter of the means of the :data:`SKY_CELL` px cells the
    sky falls in (each weighted by its pixels: the cluster-robust error of a mean), which
    holds the difference's correlated noise (a convolved image's, a coadd's) and any
    structure of its sky, scaled by what that noise adds between adjacent cells
    (:func:`_correlation_factor`); with fewer than :data:`MIN_SKY_CELLS` cells (a cutout), the
    pixels' own scatter over the square root of their number.

    Parameters
    ----------
    image : numpy.ndarray
        The difference (image units).
    sky : numpy.ndarray
        Boolean map of its sky pixels (:meth:`InputSources.sky`).

    Returns
    -------
    SkyLevel
    """
    sample = masked_sample(image, sky, SKY_SAMPLES)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return SkyLevel(float("nan"), float("nan"), 0)
    sums, squares, counts = _cell_sums(image, sky, *clip_range(sample))
    n = int(counts.sum())
    level = float(sums.sum() / n)
    used = counts > 0
    cells = int(used.sum())
    if cells >= MIN_SKY_CELLS:
        deviations = sums[used] - counts[used] * level
        variance = float(np.sum(deviations**2)) * cells / (cells - 1)
        factor = _correlation_factor(image, sky, *clip_range(sample), level)
        error = float(np.sqrt(variance * factor) / n)
    else:
        variance = (float(squares.sum()) - n * level**2) / max(n - 1, 1)
        error = float(np.sqrt(max(variance, 0.0) / n))
    return SkyLevel(level, error, n)


def _correlation_factor(
    image: np.ndarray, sky: np.ndarray, low: float, high: float, level: float
) -> float:
    """How much more a sum over whole sky varies than the sum of its cells' variances.

    The cells' scatter counts each :data:`SKY_CELL` px cell's own variance alone, while
    noise correlated over a few px (a kernel's, a coadd's) links each cell's edge to its
    neighbours': on Gaussian-smoothed noise (sigma 1.3-6 px) the level's pulls were
    1.09-1.32, and the 3-error decision fired 2.5-8 times too often. The noise's
    correlation is taken as a Gaussian along each axis, ``rho(d) = r^(d^2)`` with ``r``
    its correlation at a lag of 1 px (from up to :data:`CORRELATION_CELLS` cells,
    regularly spaced: a lag-1 product is known from 10^6 pixels to 0.001, where the sum
    of products over every lag within a cell was known to 0.13 from a 256^2 image's). Per
    axis, a whole sum's variance holds ``sum rho`` per pixel, the cells' ``sum rho w``,
    ``w = 1 - |d| / L`` the share of a lag's pixel pairs that fall within one cell of
    side ``L`` (the image's side where it is narrower than a cell); the factor is the
    product over the two axes of their ratio.

    Parameters
    ----------
    image, sky : numpy.ndarray
        The difference and its sky pixels.
    low, high : float
        The clip range of the level's mean.
    level : float
        The level (its mean over the clipped sky pixels).

    Returns
    -------
    float
        The ratio (1 for uncorrelated or anticorrelated neighbours).
    """
    # cells of SKY_CELL px, or the image's side where it is narrower (a strip's cells)
    sides = (min(SKY_CELL, image.shape[0]), min(SKY_CELL, image.shape[1]))
    origins = [
        (y0, x0)
        for y0 in range(0, image.shape[0] - sides[0] + 1, sides[0])
        for x0 in range(0, image.shape[1] - sides[1] + 1, sides[1])
    ]
    picked = np.unique(np.linspace(0, len(origins) - 1, CORRELATION_CELLS).round().astype(int))
    boxes = [
        (slice(y0, y0 + sides[0]), slice(x0, x0 + sides[1]))
        for y0, x0 in (origins[k] for k in picked)
    ]
    values = np.stack([image[box] for box in boxes]).astype(np.float64)
    kept = np.stack([sky[box] for box in boxes]) & (values >= low) & (values <= high)
    values = np.where(kept, values - level, 0.0)
    variance = float(np.sum(values**2)) / max(int(np.count_nonzero(kept)), 1)
    factor = 1.0
    for axis, side in zip((1, 2), sides, strict=True):
        lags = np.arange(1 - side, side)
        first = [slice(None)] * 3
        second = [slice(None)] * 3
        first[axis], second[axis] = slice(1, None), slice(None, -1)
        pairs = int(np.count_nonzero(kept[tuple(first)] & kept[tuple(second)]))
        product = float(np.sum(values[tuple(first)] * values[tuple(second)]))
        r = product / pairs / variance if pairs and variance > 0 else 0.0
        if 0 < r < 1:
            rho = r ** (lags.astype(np.float64) ** 2)
            factor *= float(np.sum(rho) / np.sum(rho * (1 - np.abs(lags) / side)))
    return factor


def _cell_sums(
    image: np.ndarray, sky: np.ndarray, low: float, high: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per :data:`SKY_CELL` px cell: the sum, the sum of squares and the number of the
    sky pixels of ``image`` within [``low``, ``high``] (row blocks; no image-sized plane)."""
    ny, nx = image.shape
    starts = np.arange(0, nx, SKY_CELL)
    sums, squares, counts = [], [], []
    for y0 in range(0, ny, SKY_CELL):
        rows = slice(y0, y0 + SKY_CELL)
        values = image[rows].astype(np.float64)
        kept = sky[rows] & (values >= low) & (values <= high)
        values[~kept] = 0.0
        sums.append(np.add.reduceat(values.sum(axis=0), starts))
        squares.append(np.add.reduceat(np.einsum("ij,ij->j", values, values), starts))
        counts.append(np.add.reduceat(np.count_nonzero(kept, axis=0), starts))
    return np.concatenate(sums), np.concatenate(squares), np.concatenate(counts)


def usable_on_both(science: Exposure, template: Exposure) -> np.ndarray:
    """Pixels usable on both inputs: no unusable plane, finite values, positive variances.

    Returns
    -------
    numpy.ndarray
        Boolean map.
    """
    return map_by_rows(
        science.shape, lambda rows: finite_usable(science, rows) & finite_usable(template, rows)
    )


def input_backgrounds(
    science: Exposure, template: Exposure, mesh: int, usable: np.ndarray | None = None
) -> tuple[SkyBackground, SkyBackground]:
    """Each input's sky background and noise, on the pixels usable on both (or those given).

    Estimated twice a run (:func:`~diffviewer.engine.background.fit_background`): on every
    usable pixel, to find the inputs' sources (:func:`input_sources`), then on their sky
    (:func:`sky_backgrounds`), the background the kernel fit's noise covariances and ZOGY's
    score subtract.

    Parameters
    ----------
    science, template : Exposure
        The inputs on one grid.
    mesh : int
        Cell side (px) of the background mesh.
    usable : numpy.ndarray, optional
        The pixels to estimate on: by default :func:`usable_on_both` of the two (the
        first estimate), or the sky of :func:`sky_backgrounds`.

    Returns
    -------
    (SkyBackground, SkyBackground)
        The science's and the template's.

    Raises
    ------
    InsufficientKernelSources
        When fewer than :data:`MIN_USABLE_PIXELS` pixels are usable on both (or given): no
        kernel, background or noise can be measured.
    """
    good = usable_on_both(science, template) if usable is None else usable
    both = int(np.count_nonzero(good))
    if both < MIN_USABLE_PIXELS:
        raise InsufficientKernelSources(
            f"{both} pixels are usable on both the science and the template (science "
            f"{int(science.good_pixels().sum())}, template {int(template.good_pixels().sum())} "
            f"of {good.size}), fewer than the {MIN_USABLE_PIXELS} their sky noise needs: the "
            "images overlap little where both have data, or their masks (and a warp, which "
            "grows the template's) cover most pixels; check the registration "
            "(warp.register) and the masks"
        )
    # One image on each lent thread (a quarter less time at 4096^2 on two cores).
    sci_bkg, tmpl_bkg = lent_map()(
        lambda image: fit_background(image, good, mesh), (science.image, template.image)
    )
    return sci_bkg, tmpl_bkg


def sky_backgrounds(
    science: Exposure,
    template: Exposure,
    mesh: int,
    sources: InputSources,
    psf_fwhms: tuple[float, float],
) -> tuple[SkyBackground, SkyBackground]:
    """Each input's background estimated again on its sky, the inputs' sources left out.

    The first estimate (:func:`input_backgrounds` on every usable pixel) finds the sources;
    clipping leaves their wings in it. This one is made on the usable pixels one FWHM of
    the broader PSF from every source of either input (:meth:`InputSources.beyond_psfs`),
    as LSST's detection re-estimates its
    background with the detected footprints, grown by 2.4 PSF sigma (~1 FWHM), left out
    (meas_algorithms ``SourceDetectionConfig``: ``reEstimateBackground``, ``nSigmaToGrow``).
    On a 32 px Rubin cutout the first estimate held the transient and its host: the
    science's background came out 15.6 counts and the template's 1.8, where the sky
    pixels' median difference is 3.8, and ZOGY's score of the transient lost 3 sigma.
    With fewer than :data:`MIN_BACKGROUND_SKY` such pixels, every usable pixel is used
    (the first estimate).

    Parameters
    ----------
    science, template : Exposure
        The inputs on one grid.
    mesh : int
        Cell side (px) of the background mesh.
    sources : InputSources
        The inputs' sources, found on the first estimate (:func:`input_sources`).
    psf_fwhms : (float, float)
        FWHM (px) of the two PSFs.

    Returns
    -------
    (SkyBackground, SkyBackground)
        The science's and the template's.
    """
    sky = sources.beyond_psfs(*psf_fwhms)
    good = sky if np.count_nonzero(sky) >= MIN_BACKGROUND_SKY else sources.usable
    return input_backgrounds(science, template, mesh, good)


def box_mean(image: np.ndarray, size: int) -> np.ndarray:
    """Mean over a ``size`` x ``size`` box (odd) around each pixel, edges mirrored.

    ``scipy.ndimage.uniform_filter(image, size)`` (mode 'reflect') in float32: along
    columns as sums of shifted rows (scipy's pass across rows costs 6 times as much at
    4096^2), along rows by scipy; a block of rows at a time
    (:func:`~diffviewer.exposure.row_blocks`, with the ``size // 2`` rows either side).
    """
    half = size // 2
    ny = image.shape[0]
    if ny <= half:  # mirrored more than once
        return np.asarray(ndimage.uniform_filter(image.astype(np.float32), size))
    out = np.empty(image.shape, dtype=np.float32)
    for rows in row_blocks(image.shape):
        n = rows.stop - rows.start
        at = np.arange(rows.start - half, rows.stop + half)
        at = np.where(at < 0, -at - 1, np.where(at >= ny, 2 * ny - at - 1, at))
        padded = image[at].astype(np.float32, copy=False)
        block = out[rows]
        if size > 1:
            np.add(padded[:n], padded[1 : n + 1], out=block)
        else:
            block[...] = padded[:n]
        for k in range(2, size):
            block += padded[k : k + n]
        ndimage.uniform_filter1d(block, size, axis=1, output=block)
        block *= np.float32(1.0 / size)
    return out


def source_map(
    exposure: Exposure, good: np.ndarray, background: SkyBackground | None = None
) -> np.ndarray:
    """Pixels where an input shows a source (see the module docstring).

    Parameters
    ----------
    exposure : Exposure
        A science or template image on the difference's grid.
    good : numpy.ndarray
        Usable pixels.
    background : SkyBackground, optional
        The image's background (:func:`input_backgrounds`); estimated on ``good`` with a
        mesh of :data:`BACKGROUND_MESH` when not given.

    Returns
    -------
    numpy.ndarray
        Boolean map of source pixels.
    """
    model = background or fit_background(exposure.image, good, BACKGROUND_MESH)
    # One float32 plane besides the box mean, made a block of rows at a time.
    excess = np.empty(exposure.shape, dtype=np.float32)
    for rows in row_blocks(excess.shape):
        block = excess[rows]
        np.subtract(exposure.image[rows], model.image((rows, slice(None))), out=block)
        np.copyto(block, 0.0, where=~good[rows])
    mean = box_mean(excess, SOURCE_BOX)
    del excess
    sigma = sampled_robust_std(mean, good) if good.any() else 0.0
    level = SOURCE_SIGMA * sigma
    return map_by_rows(good.shape, lambda rows: good[rows] & (np.abs(mean[rows]) > level))


@dataclasses.dataclass(frozen=True)
class InputSources:
    """The pixels usable on both inputs, and those of them where either shows a source.

    Found once a run (:func:`input_sources`) and shared by every step that needs sky, each
    growing the sources by its own distance (:meth:`sky`).

    Attributes
    ----------
    usable : numpy.ndarray
        Boolean map (read-only) of the pixels usable on both inputs (:func:`usable_on_both`).
    sources : numpy.ndarray
        Boolean map (read-only) of the pixels of ``usable`` where the science or the
        template shows a source (:func:`source_map`).
    """

    usable: np.ndarray
    sources: np.ndarray

    def sky(
        self, distance: float, within: np.ndarray | None = None, *, hiding: int = 0
    ) -> np.ndarray:
        """Usable pixels (of ``within`` too, when given) farther than ``distance`` px in x
        or y from every source.

        Parameters
        ----------
        distance : float
            Least distance (px) from a source pixel of either input.
        within : numpy.ndarray, optional
            Boolean map of the pixels that may be sky besides (e.g. usable on the difference).
        hiding : int
            When positive, also that far from where a source could not be seen
            (:func:`unseen`): unusable regions (or outside ``within``) that hold a square
            of ``hiding`` px, and the array's border. A pixel near them is not known to be
            far from every source: near the edge of the data the sky is otherwise the
            pixels beside unseen sources, and a frame's edge rows (on the crowded pyDIA
            pair 0120 - 0012, 1,400 of the 3,372 pixels 16.6 px from every source lay
            within 10 px of the difference's edge, whose PSF-filtered noise is 1.3-1.5
            times the interior's: the frames' edges differ by 20-40 counts over 15 px).

        Returns
        -------
        numpy.ndarray
            Boolean sky map (new).
        """
        good = self.usable if within is None else self.usable & within
        if not self.sources.any() and hiding <= 0:
            return good.copy() if within is None else good
        # A square of side 2 distance + 1 (separable, fast), a little wider than the circle.
        reach = int(np.ceil(distance))
        size = 2 * reach + 1
        hidden = self.sources | unseen(good, hiding) if hiding > 0 else self.sources
        near = grown_along(grown_along(hidden, size, 0), size, 1)
        if hiding > 0 and reach > 0:  # beyond the array nothing is seen either
            near[:reach], near[-reach:], near[:, :reach], near[:, -reach:] = True, True, True, True
        return np.asarray(good & ~near)

    def beyond_psfs(self, fwhm_a: float, fwhm_b: float) -> np.ndarray:
        """:meth:`sky` one FWHM of the broader of two PSFs from every source (0 px when that
        FWHM is not finite): where a background is measured (:func:`sky_backgrounds`, the
        kernel fit's fallback)."""
        widest = max(float(fwhm_a), float(fwhm_b))
        return self.sky(widest if np.isfinite(widest) else 0.0)


def unseen(good: np.ndarray, width: int) -> np.ndarray:
    """The pixels not in ``good`` of regions that hold a square of ``width`` px (``width``
    odd, at least 1; the world beyond the array is such a region): where a source's core
    can hide.

    A morphological opening of the unusable map (an erosion then a dilation by the square,
    each :func:`grown_along` along both axes). A cosmic ray, a hot pixel or a bad column
    narrower than the square hides no star (the 5 x 5 box test of :func:`source_map` sees
    it from its neighbours), and leaves the sky around it: grown by the whole sky distance,
    60 cosmic rays on a 256^2 pair left too little sky for the scale on 3 of 6 draws.

    Returns
    -------
    numpy.ndarray
        Boolean map (new).
    """
    bad = ~good
    if width <= 1:
        return bad
    # the outside unusable too, so that a band along the array's edge is a wide region
    pad = width // 2 + 1
    padded = np.pad(good, pad, constant_values=False)
    core = ~grown_along(grown_along(padded, width, 0), width, 1)
    opened = grown_along(grown_along(core, width, 0), width, 1)
    return opened[pad:-pad, pad:-pad] & bad


def input_sources(
    science: Exposure,
    template: Exposure,
    backgrounds: tuple[SkyBackground, SkyBackground] | None = None,
    usable: np.ndarray | None = None,
) -> InputSources:
    """The pixels usable on both inputs and where either shows a source (:func:`source_map`).

    Parameters
    ----------
    science, template : Exposure
        The inputs on one grid.
    backgrounds : (SkyBackground, SkyBackground), optional
        The inputs' backgrounds (:func:`input_backgrounds`); estimated on the pixels
        usable on both with a mesh of :data:`BACKGROUND_MESH` when not given.
    usable : numpy.ndarray, optional
        :func:`usable_on_both` of the two, when the caller has it.

    Returns
    -------
    InputSources
    """
    if usable is None:
        usable = usable_on_both(science, template)
    sci_bkg, tmpl_bkg = backgrounds or (None, None)
    sources = source_map(science, usable, sci_bkg)
    sources |= source_map(template, usable, tmpl_bkg)
    return InputSources(read_only(usable), read_only(sources))


def grown_along(hit: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Where ``hit`` is set within ``size // 2`` px (``size`` odd) along ``axis``.

    ``scipy.ndimage.maximum_filter1d`` of a boolean map (mode 'constant'), by doubling:
    the OR over windows of 1, 2, 4, ... px, then over the window of ``size`` px as the OR
    of two overlapping windows of the largest power of 2 within it. A dozen passes of
    boolean ORs: a third of scipy's cost at 4096^2 and a window of 41 px. Made a block
    of rows at a time (:func:`~diffviewer.exposure.map_by_rows`; along y with ``size // 2``
    rows either side), so that the passes' temporaries are small: 0.05 -> 0.02 s for
    both axes at 4096^2.

    Returns
    -------
    numpy.ndarray
        Boolean map (new).
    """
    half = size // 2
    if axis == 1:
        return map_by_rows(hit.shape, lambda rows: _grown(hit[rows], size, 1))

    def block(rows: slice) -> np.ndarray:
        lo, hi = max(rows.start - half, 0), min(rows.stop + half, hit.shape[0])
        return _grown(hit[lo:hi], size, 0)[rows.start - lo : rows.stop - lo]

    return map_by_rows(hit.shape, block)


def _grown(hit: np.ndarray, size: int, axis: int) -> np.ndarray:
    """:func:`grown_along` of a whole map at once."""
    half = size // 2
    n = hit.shape[axis]
    # forward[j]: OR of hit[j - half : j - half + length] (zeros before the start). Kept
    # in the input's layout, so the output is C-ordered like it: a transposed map costs
    # 0.1 s in each boolean operation with C-ordered ones at 2048 x 4096.
    shape = list(hit.shape)
    shape[axis] = n + half
    forward = np.zeros(shape, dtype=bool)
    forward[_along(axis, half, None)] = hit
    length = 1
    while 2 * length <= size:
        # (numpy buffers the overlap: the same as a copy of the right-hand side)
        forward[_along(axis, None, n + half - length)] |= forward[_along(axis, length, None)]
        length *= 2
    # The window of ``size`` px from i - half: the OR of the one of ``length`` px there
    # and the one of ``length`` px ending where it ends (``size - length <= half``).
    return forward[_along(axis, None, n)] | forward[_along(axis, size - length, size - length + n)]


def _along(axis: int, start: int | None, stop: int | None) -> tuple[slice | EllipsisType, ...]:
    """The index of ``start:stop`` along ``axis`` (0 or 1) of an array, all of the others."""
    return (slice(start, stop),) if axis == 0 else (Ellipsis, slice(start, stop))
