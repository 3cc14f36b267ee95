"""Bring the template onto the science pixel grid (the seed's warp step and coverage check).

:func:`register_template` finds the science -> template pixel mapping: the two WCSs
(checked on matched stars, and replaced by the star fit where they disagree), or a
transform fitted on star patterns when there is no usable WCS (:mod:`.register`). The
template's image, variance and mask are resampled at the template pixel that each
science pixel sees. The mapping is evaluated at every science pixel
(:func:`~diffviewer.engine.warp_map.pixel_map`: exactly on a coarse grid, interpolated
where that is exact enough), and the pixel values are interpolated with
``scipy.ndimage.map_coordinates``, the same interpolation ``reproject.reproject_interp``
applies. ``benchmarks/bench_warp.py`` measures, for a 2048 x 2048 template with a
TAN-SIP WCS (image, variance and one mask plane), on a machine at load 10: 2.3 s here
against 21.4 s for ``reproject_interp`` (12.1 s without its round-trip check), with the
same bilinear values to float32 round-off (7.6e-6 on values of 100); the coarse mapping
takes 0.33 s where the exact one takes 6.8 s (the warp took 3.1 s at 1024 x 1024 when
the mapping was evaluated exactly at every pixel, 1.0 s now). Spline orders
(biquadratic, bicubic) agree with reproject in the interior; within a few pixels of the
template's edge they differ because reproject pads with zeros and we extend the edge
pixels.

The warp conserves flux, as SWarp's default does: interpolation keeps a pixel's value, the
surface brightness, so each warped pixel is multiplied by the template pixels it covers (the
mapping's Jacobian determinant, :func:`~diffviewer.engine.warp_map.pixel_area`) and its
variance by that squared. A star keeps its flux and the template its zero point whatever the
two pixel scales (interpolating alone tripled a star's flux from a 0.45"/px template onto a
0.26"/px science grid, and the kernel sum took the factor).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from astropy.wcs import WCS
from scipy import ndimage

from diffviewer.companions import NO_COMPANIONS, Companions
from diffviewer.config import WarpConfig
from diffviewer.engine import mosaic, piece_psfs, register, register_fit, register_stars, resample
from diffviewer.engine.lent import lent_map
from diffviewer.engine.peaks import Peaks
from diffviewer.engine.progress import Reporter, null_reporter
from diffviewer.engine.register import Registration
from diffviewer.engine.register_fit import Mapping
from diffviewer.engine.warp_map import pixel_area, pixel_map, wcs_mapping
from diffviewer.errors import InputError, NoWorkFound, RegistrationError
from diffviewer.exposure import MASK_DTYPE, Exposure, MaskPlane, planes_clear
from diffviewer.fits_header import header_with_wcs
from diffviewer.io import fill_no_data

#: Below this coverage the result carries a warning (the run continues).
COVERAGE_WARNING = 0.5


@dataclasses.dataclass(frozen=True)
class Piece:
    """One template piece as registered and warped.

    Attributes
    ----------
    source : str
        Where the piece came from.
    registration : register.Registration
        How it was registered.
    coverage : float
        Fraction of science pixels it covers with data.
    zero_point : float or None
        Its own zero point (AB mag of one image unit).
    flux_scale : float
        The factor its pixels were multiplied by to put them on the combined template's
        zero point (:func:`diffviewer.engine.mosaic.flux_scales`).
    sky_offset, sky_offset_error : float
        What was then subtracted from its pixels to bring its sky to its neighbours'
        where they overlap, and that offset's standard error
        (:func:`diffviewer.engine.mosaic.sky_offsets`).
    warped : bool
        Whether it was moved onto the science grid (resampled, or pasted at a
        whole-pixel shift: :func:`paste`).
    fwhm : float
        Its PSF's FWHM on the science grid (px; :func:`piece_psfs.piece_fwhm`), NaN for
        a whole template or where not measured.
    companions : Companions
        The files its planes were read from beside its image's
        (:attr:`~diffviewer.exposure.Exposure.companions`).
    """

    source: str
    registration: Registration
    coverage: float
    zero_point: float | None = None
    flux_scale: float = 1.0
    sky_offset: float = 0.0
    sky_offset_error: float = 0.0
    warped: bool = False
    fwhm: float = math.nan
    companions: Companions = NO_COMPANIONS


@dataclasses.dataclass(frozen=True)
class WarpResult:
    """The template on the science grid.

    Attributes
    ----------
    exposure : Exposure
        Template image, variance and mask on the science grid, with the science WCS
        and the template's PSF, zero point and header.
    warped : bool
        Whether the template was moved onto the science grid: resampled, or pasted at a
        whole-pixel shift (:func:`paste`); False when the grids already agreed, or when
        the images have no celestial WCS and are taken as pre-aligned.
    max_offset : float
        Largest offset between the two grids over the science image (px); NaN
        without a celestial WCS on both images.
    coverage : float
        Fraction of science pixels where the warped template has data (no NO_DATA).
    warnings : tuple of str
        What the user should know, e.g. a low coverage.
    registration : register.Registration
        How the mapping was found (of the first piece, when the template came in
        pieces): method, stars found and matched, the fitted transform and its
        residual RMS (px).
    pieces : tuple of Piece
        Each template piece's registration and coverage (one for a whole template).
    covariance_factor : float
        The variance of the warped noise summed over many pixels against the sum of
        their per-pixel variances (over the pieces by coverage; 1 for a piece not
        resampled; :func:`warp_exposure`). ``exposure``'s variance plane is the
        propagated per-pixel variance times it (see :func:`at_psf_scale`).
    science_peaks : Peaks or None
        The science image's peaks the registration found its stars among (None when it
        used no stars), for the kernel candidates to find theirs among.
    template_peaks : Peaks or None
        The template's peaks the registration found its stars among, when
        :attr:`exposure`'s pixels are the template's own (:attr:`is_input`); else None.
    """

    exposure: Exposure
    warped: bool
    max_offset: float
    coverage: float
    warnings: tuple[str, ...]
    registration: Registration
    pieces: tuple[Piece, ...]
    covariance_factor: float = 1.0
    science_peaks: Peaks | None = None
    template_peaks: Peaks | None = None

    @property
    def is_input(self) -> bool:
        """Whether the template on the science grid is the input image itself (one piece,
        not resampled), so that writing it again would only copy it."""
        return not self.warped and len(self.pieces) <= 1


def _with_data_nearby(exposure: Exposure) -> np.ndarray:
    """The image with each NO_DATA pixel given its nearest pixel with data's value.

    The reader sets NO_DATA pixels to 0; a spline's prefilter spreads that step over
    several pixels (by 0.27 of it a pixel for the cubic), past the one pixel by which the
    warped NO_DATA plane grows: a 4 x 4 hole in a sky of 1000 counts left pixels 34, 9
    and 2.6 sigma off at 1, 2 and 3 px from the warped hole. The bilinear kernel reads
    only the pixels it weights and needs no fill.
    """
    no_data = (exposure.mask & MASK_DTYPE(int(MaskPlane.NO_DATA))) != 0
    if not no_data.any() or no_data.all():
        return exposure.image
    rows, cols = ndimage.distance_transform_edt(
        no_data, return_distances=False, return_indices=True
    )
    return np.asarray(exposure.image[rows, cols])


def warp_exposure(
    template: Exposure,
    science: Exposure,
    interpolation: str,
    reporter: Reporter | None = None,
    mapping: Mapping | None = None,
    piece: bool = False,
) -> tuple[Exposure, float]:
    """Resample the template's image, variance and mask onto the science grid.

    Parameters
    ----------
    template, science : Exposure
        Both with a celestial WCS, unless ``mapping`` is given.
    interpolation : str
        One of :data:`diffviewer.engine.resample.INTERPOLATION_ORDER`.
    reporter : Reporter, optional
        Progress and cancellation.
    mapping : callable, optional
        Science (x, y) px -> template (x, y) px, e.g. a transform fitted on stars;
        the WCSs when None.
    piece : bool
        The template is one piece of several: a science pixel has data only where the
        interpolation reads this piece's own pixels
        (:data:`~diffviewer.engine.resample.INTERIOR_REACH`), not the border the
        resampling assumes beyond its edge, where a neighbour piece holds the sky. With
        pieces that abut without overlapping, the seam has no data.

    Returns
    -------
    (Exposure, float)
        The warped template: science shape and WCS; template PSF, zero point and header (its
        WCS cards replaced by the science WCS); its pixels the interpolated values times
        :func:`~diffviewer.engine.warp_map.pixel_area` (flux conserved), its variance that
        of those values (:func:`diffviewer.engine.resample.resample_variance`, times the
        area squared). Science pixels whose sky falls outside the template (beyond half a
        pixel from its edge; for a piece, see ``piece``) get NO_DATA. And the covariance
        factor of the warped noise: ``1 / (r min(a, 1))``, with ``r`` the mean ``sum w^2``
        of the interpolation weights over the covered pixels
        (:func:`diffviewer.engine.resample.variance_ratio`) and ``a`` the mean pixel area. A
        sum over many science pixels covers ``a`` template pixels each, read ``1 / a`` times
        over when ``a < 1``; a template finer than the science grid (``a > 1``) is sampled,
        not averaged, and keeps ``1 / r``, an upper bound.
    """
    reporter = reporter or null_reporter()
    order = resample.INTERPOLATION_ORDER[interpolation]
    if mapping is None:
        mapping = wcs_mapping(science.wcs, template.wcs)
    tx, ty, _ = pixel_map(mapping, science.shape, reporter, (0, 0.3))
    ny, nx = template.shape
    # (less a rounding's worth: pieces on one grid map onto each other's pixel centres
    # through the WCSs to ~1e-10 px)
    inset = resample.INTERIOR_REACH[order] - 1e-6 if piece else -0.5
    outside = ~((tx >= inset) & (tx <= nx - 1 - inset) & (ty >= inset) & (ty <= ny - 1 - inset))
    ratio = resample.variance_ratio(tx, ty, order, ~outside)
    source = _with_data_nearby(template) if order > 1 else template.image
    image = resample.resample(source, tx, ty, order, reporter, (0.3, 0.5))
    del source
    variance = resample.resample_variance(template.variance, tx, ty, order, reporter, (0.5, 0.8))
    mask = resample.resample_mask(template.mask, tx, ty, order, reporter, (0.8, 1.0))
    # The map's two float64 planes are not held beyond their last use (134 MB at 2048 x 4096).
    del tx, ty
    area = pixel_area(mapping, science.shape)
    image *= area
    variance *= np.square(area)
    covered = ~outside
    mean_area = (
        float(np.mean(area[covered]))
        if isinstance(area, np.ndarray) and covered.any()
        else float(np.mean(area))
    )
    mask[outside] |= MASK_DTYPE(int(MaskPlane.NO_DATA))
    image[outside] = np.nan
    variance[outside] = np.nan
    warped = _on_science_grid(template, science, image, variance, mask, "warped")
    return warped, 1.0 / (ratio * min(mean_area, 1.0))


def _on_science_grid(
    template: Exposure,
    science: Exposure,
    image: np.ndarray,
    variance: np.ndarray,
    mask: np.ndarray,
    how: str,
) -> Exposure:
    """The template with these planes on the science grid: the pixels without data
    filled (:func:`fill_no_data`), the science WCS, and a source saying ``how`` it came
    there ('warped', 'shifted')."""
    image, variance, mask = fill_no_data(image, variance, mask)
    return template.replace(
        image=image,
        variance=variance,
        mask=mask,
        wcs=science.wcs,
        header=header_with_wcs(template.header, science.wcs),
        source=f"{template.source} {how} to {science.source}",
    )


def integer_shift(
    mapping: Mapping, shape: tuple[int, int], tolerance: float
) -> tuple[int, int] | None:
    """The whole-pixel translation ``mapping`` is within ``tolerance`` of, if any.

    Parameters
    ----------
    mapping : callable
        Science (x, y) px -> template (x, y) px.
    shape : (int, int)
        The science image's shape (the mapping is compared over it).
    tolerance : float
        Largest departure accepted (px; ``warp.grid_tolerance``).

    Returns
    -------
    (int, int) or None
        ``(dx, dy)`` with the template's pixel ``(x + dx, y + dy)`` on science pixel
        ``(x, y)``, or None.
    """
    points = register_fit.image_grid(shape)
    tx, ty = mapping(*points)
    dx, dy = np.median(tx - points[0]), np.median(ty - points[1])
    if not (np.isfinite(dx) and np.isfinite(dy)):
        return None
    shift = (int(np.rint(dx)), int(np.rint(dy)))

    def shifted(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x + shift[0], y + shift[1]

    return shift if register_fit.max_difference(mapping, shifted, points) <= tolerance else None


def paste(template: Exposure, science: Exposure, shift: tuple[int, int]) -> Exposure:
    """The template on the science grid by a whole-pixel shift, without resampling.

    Parameters
    ----------
    template, science : Exposure
        The template (or piece) and the science exposure.
    shift : (int, int)
        ``(dx, dy)``: science pixel ``(x, y)`` holds the template's ``(x + dx, y + dy)``
        (:func:`integer_shift`).

    Returns
    -------
    Exposure
        The science shape and WCS, the template's pixels (their noise uncorrelated:
        covariance factor 1), NO_DATA where it has none.
    """
    (ny, nx), (tny, tnx), (dx, dy) = science.shape, template.shape, shift
    image = np.full(science.shape, np.nan, dtype=template.image.dtype)
    variance = np.full(science.shape, np.nan, dtype=template.variance.dtype)
    mask = np.full(science.shape, int(MaskPlane.NO_DATA), dtype=MASK_DTYPE)
    x0, x1 = max(0, -dx), min(nx, tnx - dx)
    y0, y1 = max(0, -dy), min(ny, tny - dy)
    if x0 < x1 and y0 < y1:
        inner, outer = np.s_[y0:y1, x0:x1], np.s_[y0 + dy : y1 + dy, x0 + dx : x1 + dx]
        image[inner] = template.image[outer]
        variance[inner] = template.variance[outer]
        mask[inner] = template.mask[outer]
    return _on_science_grid(template, science, image, variance, mask, "shifted")


def template_coverage(exposure: Exposure) -> float:
    """Fraction of pixels without NO_DATA.

    Parameters
    ----------
    exposure : Exposure
        The (warped) template.

    Returns
    -------
    float
        In [0, 1].
    """
    return float(np.mean(planes_clear(exposure.mask, int(MaskPlane.NO_DATA))))


def check_template_sufficient(coverage: float, config: WarpConfig, why: str = "") -> None:
    """Raise :class:`NoWorkFound` when the template covers too little (the seed's check).

    Parameters
    ----------
    coverage : float
        Fraction of science pixels with template data.
    config : WarpConfig
        Holds ``required_template_fraction``.
    why : str, optional
        What the error should add (:func:`sky_apart`).

    Raises
    ------
    NoWorkFound
        When ``coverage`` is below ``config.required_template_fraction``.
    """
    if coverage < config.required_template_fraction:
        raise NoWorkFound(
            f"the template covers {coverage:.1%} of the science image with data, below "
            f"warp.required_template_fraction = {config.required_template_fraction:g}; use a "
            "template that overlaps the science image, or lower warp.required_template_fraction"
            + (f" ({why})" if why else "")
        )


def _check_coverage(
    coverage: float, science: Exposure, pieces: Sequence[Exposure], config: WarpConfig
) -> None:
    """:func:`check_template_sufficient`, saying how far apart the WCSs put the images
    when they put the template nowhere on the science image (:func:`sky_apart`)."""
    placed_by_wcs = not coverage and config.register != "none"
    check_template_sufficient(coverage, config, sky_apart(science, pieces) if placed_by_wcs else "")


def sky_apart(science: Exposure, pieces: Sequence[Exposure]) -> str:
    """How far the template's centre (its nearest piece's) lies from the science image's
    on the sky, when every image has a celestial WCS ('' otherwise).

    The two WCSs are taken in one celestial frame, as the mapping takes them
    (:func:`~diffviewer.engine.warp_map.wcs_mapping`).
    """
    if not all(e.has_celestial_wcs for e in (science, *pieces)):
        return ""
    centres = [_sky_centre(e.wcs, e.shape) for e in (science, *pieces) if e.wcs is not None]
    (ra0, dec0), (ra, dec) = centres[0], np.transpose(centres[1:])
    # great-circle distance (haversine)
    h = np.sin((dec - dec0) / 2) ** 2 + np.cos(dec) * np.cos(dec0) * np.sin((ra - ra0) / 2) ** 2
    apart = float(np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))).min())
    which = "the template's" if len(pieces) == 1 else "the nearest template piece's"
    return f"by their WCSs, {which} centre lies {apart:.3g} deg from the science image's"


def _sky_centre(wcs: WCS, shape: tuple[int, int]) -> tuple[float, float]:
    """RA and Dec (radians) of the centre of an image of ``shape`` by its WCS."""
    ra, dec = wcs.all_pix2world((shape[1] - 1) / 2, (shape[0] - 1) / 2, 0)
    return math.radians(float(ra)), math.radians(float(dec))


def _sibling_linear(placed: list[_Placed], shape: tuple[int, int]) -> np.ndarray | None:
    """The 2x2 linear part (at the science image's centre) of the star fit that paired
    the most stars among template pieces registered on stars, or None.

    Pieces cut from one template share its rotation and scale: with them, a piece whose
    few stars matched no pattern needs only its translation
    (:func:`~diffviewer.engine.register_guesses.shift_guess`).
    """
    best, most = None, -1
    for p in placed:
        reg = p.registration
        if reg.method == "stars" and reg.transform is not None and reg.n_matched > most:
            best, most = reg.transform, reg.n_matched
    return None if best is None else register_fit.jacobian(best, shape)


def _which_lacks_wcs(science: Exposure, template: Exposure) -> str:
    """'neither image has' / 'the science image has no' / 'the template has no'."""
    if not (science.has_celestial_wcs or template.has_celestial_wcs):
        return "neither image has"
    return "the science image has no" if not science.has_celestial_wcs else "the template has no"


def register_template(
    template: Exposure,
    science: Exposure,
    config: WarpConfig,
    science_peaks: Peaks | None = None,
    template_peaks: Peaks | None = None,
    linear: np.ndarray | None = None,
) -> tuple[Registration, Mapping | None]:
    """Find the science -> template pixel mapping as ``config.register`` says.

    Parameters
    ----------
    template, science : Exposure
        The two exposures.
    config : WarpConfig
        ``register``, ``wcs_tolerance``, ``transform_order``.
    science_peaks, template_peaks : Peaks, optional
        Each image's peaks (:func:`register_stars.star_peaks`), when found already.
    linear : numpy.ndarray, optional
        A registered sibling piece's 2x2 linear part, for the translation vote on stars
        (:func:`~diffviewer.engine.register_guesses.shift_guess`).

    Returns
    -------
    (Registration, callable or None)
        How it was found, and the mapping (None: the pixel grids are one).

    Raises
    ------
    InputError
        When no mapping can be found: no WCS for 'wcs', no star match for 'stars' (or
        for 'auto' without a usable WCS, unless the shapes agree and there are too
        few stars to tell), different shapes for 'none'.
    """
    both_wcs = science.has_celestial_wcs and template.has_celestial_wcs
    method = config.register
    if method == "auto":
        method = "wcs-checked" if both_wcs else "stars"
    if method in ("wcs", "wcs-checked"):
        if not both_wcs:
            raise InputError(
                f"warp.register = wcs but {_which_lacks_wcs(science, template)} celestial "
                f"WCS (science {science.source}, template {template.source}); set "
                "warp.register = auto or stars to register on stars"
            )
        mapping = wcs_mapping(science.wcs, template.wcs)
        if method == "wcs":
            return Registration("wcs", None, 0, 0, 0, math.nan), mapping
        reg = register.check_wcs_on_stars(
            science,
            template,
            mapping,
            config.transform_order,
            config.wcs_tolerance,
            science_peaks,
            template_peaks,
        )
        return reg, (mapping if reg.method == "wcs" else reg.transform)
    if method == "stars":
        same_grid = template.shape == science.shape
        try:
            reg = register.register_on_stars(
                science,
                template,
                config.transform_order,
                guess=register_fit.identity if same_grid else None,
                science_peaks=science_peaks,
                template_peaks=template_peaks,
                linear=linear,
            )
        except RegistrationError as exc:
            few = min(exc.n_science_stars, exc.n_template_stars) < register.FEW_STARS
            if config.register == "stars" or not same_grid or not few:
                raise
            note = (
                f"registration on stars was not possible ({exc.n_science_stars} stars on the "
                f"science image, {exc.n_template_stars} on the template; fewer than "
                f"{register.FEW_STARS} on one is too few to tell) and there is no usable WCS "
                "on both: the images are taken as already on one pixel grid (set "
                "warp.register = none to say so)"
            )
            return (
                Registration(
                    "none",
                    None,
                    exc.n_science_stars,
                    exc.n_template_stars,
                    0,
                    math.nan,
                    notes=(note,),
                ),
                None,
            )
        return reg, (reg.transform if reg.applied else None)
    if template.shape != science.shape:
        raise InputError(
            f"template {template.source} has shape {template.shape} but science "
            f"{science.source} has shape {science.shape}, and warp.register = none: images "
            "taken as pre-aligned must share one pixel grid; set warp.register = auto"
        )
    return Registration("none", None, 0, 0, 0, math.nan), None


@dataclasses.dataclass(frozen=True)
class _Placed:
    """One template piece on the science grid, before the coverage check."""

    exposure: Exposure
    warped: bool
    max_offset: float
    registration: Registration
    notes: tuple[str, ...]
    covariance_factor: float


def at_psf_scale(warped: Exposure, covariance_factor: float) -> Exposure:
    """The warped template with the variance its noise has on scales beyond the interpolant.

    Resampling leaves each pixel with ``sum w^2`` of its variance (the plane
    :func:`warp_exposure` propagates) but correlates neighbours, so that a sum over many
    pixels (a PSF, a decorrelation or matched filter) keeps the whole variance: what
    the kernel fit, the decorrelation and detection see is the per-pixel variance times
    the covariance factor (:func:`warp_exposure`).

    Parameters
    ----------
    warped : Exposure
        The resampled template and its propagated per-pixel variance.
    covariance_factor : float
        The warped noise's covariance factor.

    Returns
    -------
    Exposure
        The same image and mask, the variance times ``covariance_factor``.
    """
    variance = warped.variance * np.float32(covariance_factor)
    return warped.replace(variance=variance.astype(warped.variance.dtype, copy=False))


def _place(
    template: Exposure,
    science: Exposure,
    config: WarpConfig,
    reporter: Reporter,
    science_peaks: Peaks | None,
    template_peaks: Peaks | None,
    piece: bool,
    linear: np.ndarray | None = None,
) -> _Placed:
    """Register one template piece and resample it onto the science grid when needed
    (``piece``: one of several, :func:`warp_exposure`; ``linear``: a sibling's linear
    part, :func:`register_template`)."""
    reg, mapping = register_template(
        template, science, config, science_peaks, template_peaks, linear
    )
    notes: list[str] = list(reg.notes)
    warped = False
    max_offset = math.nan
    exposure = template
    factor = 1.0
    if mapping is not None:
        max_offset = register_fit.max_difference(
            mapping, register_fit.identity, register_fit.image_grid(science.shape)
        )
        warped = template.shape != science.shape or not max_offset <= config.grid_tolerance
        shift = integer_shift(mapping, science.shape, config.grid_tolerance) if warped else None
        if shift is not None:
            # on the science grid but for whole pixels: its pixels as they are
            exposure = paste(template, science, shift)
        elif warped:
            resampled, factor = warp_exposure(
                template, science, config.interpolation, reporter, mapping=mapping, piece=piece
            )
            exposure = at_psf_scale(resampled, factor)
            jacobian = register_fit.jacobian(mapping, science.shape)
            if template.psf is not None and not (
                np.all(np.isfinite(jacobian)) and np.abs(jacobian - np.eye(2)).max() < 0.01
            ):
                notes.append(
                    "the template's PSF image is kept in the template's pixel "
                    "orientation and scale, which differ from the science grid's; "
                    "measure the template PSF on the warped template instead"
                )
    if not warped:
        exposure = template.replace(
            wcs=science.wcs, header=header_with_wcs(template.header, science.wcs)
        )
    return _Placed(exposure, warped, max_offset, reg, tuple(notes), factor)


def seam_pixels(has_data: np.ndarray, width: int) -> int:
    """Pixels without data that have data within ``width`` px on both sides along x or
    along y: the seams that template pieces leave between them.

    Parameters
    ----------
    has_data : numpy.ndarray
        Boolean map of the combined template's pixels with data.
    width : int
        Widest seam (px) to count.

    Returns
    -------
    int
    """
    ny, nx = has_data.shape
    before_x, after_x = np.zeros_like(has_data), np.zeros_like(has_data)
    before_y, after_y = np.zeros_like(has_data), np.zeros_like(has_data)
    for k in range(1, width + 1):
        before_x[:, k:] |= has_data[:, : nx - k]
        after_x[:, : nx - k] |= has_data[:, k:]
        before_y[k:] |= has_data[: ny - k]
        after_y[: ny - k] |= has_data[k:]
    seam = ~has_data & ((before_x & after_x) | (before_y & after_y))
    return int(np.count_nonzero(seam))


def overlap_needed(interpolation: str) -> int:
    """Columns (or rows) two template pieces must share for the interpolation to give
    their seam data from one of them (:data:`~diffviewer.engine.resample.INTERIOR_REACH`)."""
    reach = resample.INTERIOR_REACH[resample.INTERPOLATION_ORDER[interpolation]]
    return max(0, math.ceil(2 * reach + 1))


def _why_off_the_grid(reg: Registration) -> str:
    """What put a piece placed by its WCS off the science grid (its stars, when they were
    looked at, paired none of the science's), and what to do should the WCS be wrong; empty
    for other methods."""
    if reg.method != "wcs":
        return ""
    checked = min(reg.n_science_stars, reg.n_template_stars) >= register_fit.MIN_STARS
    stars = (
        f", and its {reg.n_template_stars} stars paired none of the science's beyond what "
        "chance gives"
        if checked
        else " (not checked on stars)"
    )
    return (
        f"its WCS places it there{stars}; if its WCS is wrong, set warp.register = stars "
        "to place it on its stars alone"
    )


def warp_template(
    template: Exposure | Sequence[Exposure],
    science: Exposure,
    config: WarpConfig,
    reporter: Reporter | None = None,
) -> WarpResult:
    """Register the template (or each of its pieces), bring it onto the science grid,
    combine the pieces and check that the result covers enough of the science image.

    Parameters
    ----------
    template : Exposure or sequence of Exposure
        The template, or its pieces (each registered and warped on its own, then
        combined by :func:`diffviewer.engine.mosaic.combine_pieces`).
    science : Exposure
        The science exposure. The mapping comes from :func:`register_template`; a
        piece is warped unless the mapping is within ``config.grid_tolerance`` px of
        the identity everywhere (and the shapes are equal).
    config : WarpConfig
        Registration, tolerance, interpolation and required coverage.
    reporter : Reporter, optional
        Progress and cancellation.

    Returns
    -------
    WarpResult

    Raises
    ------
    InputError
        When no registration can be found (see :func:`register_template`).
    NoWorkFound
        When the template covers less than ``config.required_template_fraction``.
    Cancelled
        When the reporter's token is cancelled.
    """
    reporter = reporter or null_reporter()
    pieces = [template] if isinstance(template, Exposure) else list(template)
    # The science image's stars are found once for all pieces, each piece's once ('wcs'
    # and 'none' use none), each image's on a lent thread (at 4096^2 the pair's peaks
    # take 0.20 s for 0.33 s one after the other).
    stars = config.register in ("auto", "stars")
    peaks, *piece_peaks = (
        list(lent_map()(register_stars.star_peaks, [science, *pieces]))
        if stars
        else [None] * (len(pieces) + 1)
    )
    found: list[_Placed | RegistrationError] = []
    for i, piece in enumerate(pieces):
        try:
            found.append(
                _place(piece, science, config, reporter, peaks, piece_peaks[i], len(pieces) > 1)
            )
        except RegistrationError as exc:
            if len(pieces) == 1:
                raise
            found.append(exc)
        reporter.update((i + 1) / (len(pieces) + 1))
    linear = _sibling_linear([p for p in found if isinstance(p, _Placed)], science.shape)
    placed = []
    for piece, own_peaks, outcome in zip(pieces, piece_peaks, found, strict=True):
        if isinstance(outcome, RegistrationError):
            # a piece with too few stars for patterns: its translation after a
            # registered sibling's rotation and scale, else the piece's own error
            error = outcome
            if linear is None:
                raise error
            try:
                outcome = _place(piece, science, config, reporter, peaks, own_peaks, True, linear)
            except RegistrationError:
                raise error from None
        placed.append(outcome)
    covered = [template_coverage(p.exposure) for p in placed]
    if not any(covered):  # said as for a whole template, before the pieces are combined
        _check_coverage(0.0, science, pieces, config)
    fwhm, psf_note = [math.nan] * len(placed), None
    if len(placed) > 1:
        fwhm = [
            piece_psfs.piece_fwhm(p.exposure) if c > 0 else math.nan
            for p, c in zip(placed, covered, strict=True)
        ]
        psf_note = piece_psfs.fwhm_note(fwhm, [piece.source for piece in pieces])
    # each piece by its input's name (the combination's source names them all)
    combination = mosaic.combine_pieces(
        [p.exposure.replace(source=piece.source) for piece, p in zip(pieces, placed, strict=True)]
        if len(placed) > 1
        else [placed[0].exposure],
        [p.covariance_factor for p in placed],
        fwhm,
        [_why_off_the_grid(p.registration) for p in placed],
    )
    exposure = combination.exposure
    notes = [
        note if len(placed) == 1 else f"template piece {i + 1}: {note}"
        for i, (p, c) in enumerate(zip(placed, covered, strict=True))
        # a piece left without data is not used (and said): nor are its registration's
        # notes (a WCS no stars could check, as none lie on the science image)
        if c > 0 or len(placed) == 1
        for note in p.notes
    ]
    notes.extend(combination.notes)
    if psf_note is not None:
        notes.append(psf_note)
    if len(placed) > 1:
        need = overlap_needed(config.interpolation)
        width = need + 2
        seams = seam_pixels(planes_clear(exposure.mask, int(MaskPlane.NO_DATA)), width)
        if seams:
            notes.append(
                f"the combined template has {seams} px without data in gaps of up to {width} "
                "px between pixels with data: where template pieces meet, they abut or share "
                f"fewer columns or rows than {config.interpolation} interpolation needs "
                f"({need}); give pieces that overlap by {need} px or more"
            )
    # one piece is the template itself (mosaic.combine_pieces): its coverage is the piece's
    coverage = covered[0] if len(placed) == 1 else template_coverage(exposure)
    _check_coverage(coverage, science, pieces, config)
    if coverage < COVERAGE_WARNING:
        notes.append(
            f"the template covers only {coverage:.1%} of the science image; "
            "results outside it are masked NO_DATA"
        )
    reporter.update(1.0)
    offsets = [p.max_offset for p in placed if np.isfinite(p.max_offset)]
    warped = any(p.warped for p in placed)
    return WarpResult(
        exposure=exposure,
        warped=warped,
        max_offset=max(offsets) if offsets else math.nan,
        coverage=coverage,
        warnings=tuple(notes),
        registration=placed[0].registration,
        # each piece's input (its file and extension), not the warped exposure's name: a
        # saved run is matched to its inputs by these (results.incomplete_reason)
        pieces=tuple(
            Piece(
                piece.source,
                p.registration,
                c,
                scale.zero_point,
                scale.scale,
                scale.sky_offset,
                scale.sky_offset_error,
                p.warped,
                f,
                piece.companions,
            )
            for piece, p, c, scale, f in zip(
                pieces, placed, covered, combination.pieces, fwhm, strict=True
            )
        ),
        covariance_factor=float(
            np.average([p.covariance_factor for p in placed], weights=np.add(covered, 1e-12))
        ),
        science_peaks=peaks,
        template_peaks=piece_peaks[0] if len(pieces) == 1 and not warped else None,
    )
