"""Kernel candidates: isolated, unsaturated stars measured on both images (seed: kernel sources).

Stars are the science image's peaks (:func:`diffviewer.engine.peaks.find_peaks`: local
maxima of the image smoothed by a sigma 1 px binomial filter) above ``detect_threshold``
times the smoothed image's noise over a coarse background. Each is measured on both
images in a circular aperture of radius 1.5 FWHM (none holding a pixel defect, a cosmic
ray's counts, is measured: it is masked), then kept only if its stamp is inside
the image, no pixel of it is saturated (by value or plane) on either image, its science
S/N lies in the window, it is a source of its own above its local background (not a
noise peak on a bright star's halo: :func:`~diffviewer.engine.star_fluxes.local_snr`),
its template/science flux ratio agrees with the median one (10% plus 5 sigma: transients
and variables are not kernel stars), no comparably bright neighbour sits nearby, and its
cell of the image is not yet full (the brightest first; cells are at most a quarter of
the image side), up to ``max_candidates`` in all (each cell's brightest first). Only the
stars so chosen have their whole stamp checked for masked and saturated pixels on both
images (a pixel defect, a cosmic ray or a bad pixel, outside the star's core of
:data:`~diffviewer.engine.kernel_stamps.CORE_FWHM` is left to the fit to leave out); one
that fails gives its place to the next brightest in its cell. Every
``control_every``-th survivor (in order of decreasing S/N) is held out as a control
star. Around the stars kept, the detections with light on one image only (beyond the
field's flux ratio, at one seeing) are listed
(:class:`~diffviewer.engine.star_fluxes.UnmatchedLight`): the kernel fit, which knows
which image it convolves, does not fit a star whose stamp holds as much of it there as
the star. A star list (``candidates.source_list``) whose stars leave the kernel fewer
than ``kernel.min_stamps`` to fit is named in the run's warnings with the reasons its
stars were rejected (:func:`star_list_note`).
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.table import Table

from diffviewer.config import CandidatesConfig, KernelConfig, toml_text
from diffviewer.engine.kernel_basis import stamp_half_width
from diffviewer.engine.kernel_stamps import CORE_FWHM
from diffviewer.engine.peaks import Peaks, coarse_background, find_peaks
from diffviewer.engine.progress import Reporter
from diffviewer.engine.psf import cutouts, estimate_psf, frozen
from diffviewer.engine.psf_stars import measurable
from diffviewer.engine.star_fluxes import (
    LOCAL_SNR_MIN,
    SATURATED,
    UnmatchedLight,
    aperture_fluxes,
    grid_value,
    local_snr,
    median_ratio,
    pairs_within,
    ratio_deviant,
    unmatched_light,
)
from diffviewer.errors import InputError
from diffviewer.exposure import PIXEL_DEFECTS, Exposure
from diffviewer.star_list import FIELD as STAR_LIST_FIELD
from diffviewer.star_list import OR_NONE, StarList, read_star_list

#: Radius (science FWHM) of the apertures the candidates' fluxes are measured in.
APERTURE_FWHM = 1.5

#: Rejection reasons at selection, in the order they are tested (a star counts under the first).
REASONS = (
    "edge",
    "saturated",
    "S/N window",
    "no local source",
    "flux ratio",
    "not isolated",
    "masked",
    "cell limit",
)


@dataclasses.dataclass(frozen=True, eq=False)
class CandidateSet:
    """The kernel candidates and what the selection found and rejected.

    Attributes
    ----------
    table : astropy.table.Table
        One row per candidate, brightest (science S/N) first: ``id``, ``x``, ``y``
        (science pixels, 0-based), ``flux_sci``, ``flux_tmpl`` (aperture fluxes, image
        units), ``snr`` (science aperture S/N), ``peak`` (science peak above background)
        and ``control`` (True: held out, never fitted).
    n_detected : int
        Peaks found (or sources given) before selection.
    rejected : Mapping[str, int]
        Number rejected for each reason of :data:`REASONS`.
    stamp_half_width : int
        Half-width (px) of the stamp that was checked around each candidate: by default
        the stamp the kernel fit reads, in either direction, with the run's kernel config
        (:func:`diffviewer.engine.kernel_basis.stamp_half_width`), from the PSFs of the
        brightest peaks on both images.
    fwhm : float
        Science FWHM (px) estimated from the brightest peaks (sizes stamps and apertures).
    bright : (numpy.ndarray, numpy.ndarray)
        x and y (integer science px) of the brightest peaks unsaturated on the science
        image, brightest first, at most 100, without isolation or cell limits: the relaxed
        PSF stars of :func:`diffviewer.engine.psf.estimate_psf` when kernel stars are few.
    unmatched : UnmatchedLight
        Light on one image only near the candidates: the kernel fit does not fit a star
        whose stamp on the convolved image holds as much as the star
        (:meth:`UnmatchedLight.spoils`).
    warnings : tuple of str
        What the run's notes should say of the selection: a star list that leaves the
        kernel fewer stars to fit than it needs (:func:`star_list_note`).
    """

    table: Table
    n_detected: int
    rejected: Mapping[str, int]
    stamp_half_width: int
    fwhm: float
    bright: tuple[np.ndarray, np.ndarray]
    unmatched: UnmatchedLight
    warnings: tuple[str, ...] = ()


def _by_reason(counts: Mapping[str, int]) -> str:
    """Counts of rejected stars by reason, those not zero: ``edge: 2, S/N window: 3``."""
    return ", ".join(f"{k}: {v}" for k, v in counts.items() if v)


def star_list_note(
    path: Path,
    config: CandidatesConfig,
    kernel_config: KernelConfig,
    counts: tuple[int, int, int, int],
    rejected: Mapping[str, int],
    half: int,
) -> str | None:
    """What to say of a star list that leaves the kernel fewer stars to fit than
    ``kernel.min_stamps``, or None when it leaves enough.

    The kernel fit then says only that few of its stamps passed, and falls back to a
    kernel from the PSFs (or a delta), which points at the PSFs or the field; this says
    that the stars were the user's list's, how many selection rejected and why.

    Parameters
    ----------
    path : Path
        The star list (``candidates.source_list``).
    config : CandidatesConfig
        The selection's limits, for what to do.
    kernel_config : KernelConfig
        ``min_stamps``: the fewest stars the kernel is fitted on.
    counts : (int, int, int, int)
        The list's rows, its stars on the science image, those kept as candidates and
        those of them fitted (not held out as control stars).
    rejected : Mapping[str, int]
        The stars on the image rejected, by reason (:data:`REASONS`).
    half : int
        Half-width (px) of the stamp each star needs.

    Returns
    -------
    str or None
    """
    given, on_image, kept, fitted = counts
    if fitted >= kernel_config.min_stamps:
        return None
    off = f" ({given - on_image} more off it or with no position)" if given > on_image else ""
    if kept == 0:
        what = (
            f"all {on_image} of its stars on the science image{off} were rejected as kernel "
            f"stars ({_by_reason(rejected)})"
        )
    else:
        held = f" and {kept - fitted} held out as control stars" if kept > fitted else ""
        what = (
            f"{on_image - kept} of its {on_image} stars on the science image{off} were "
            "rejected as kernel stars "
            f"({_by_reason(rejected)}), leaving {fitted} to fit{held}, fewer than "
            f"kernel.min_stamps = {toml_text(kernel_config.min_stamps)}"
        )
    side = 2 * half + 1
    return (
        f"{STAR_LIST_FIELD} {path}: {what}, so the kernel is not fitted on its stars: list "
        "stars the selection keeps (unsaturated, with a science S/N from "
        f"candidates.snr_min = {toml_text(config.snr_min)} to candidates.snr_max = "
        f"{toml_text(config.snr_max)}, a source of their own at each position, and "
        f"{side} x {side} px stamps inside the image clear of masked pixels, but for pixel "
        f"defects outside the star's core), {OR_NONE}"
    )


def _saturation_level(exposure: Exposure, config: CandidatesConfig) -> float:
    """Configured level, else the one found when the file was read, else +inf.

    The reader (:func:`diffviewer.io.read_exposure`) takes it from the header's
    saturation keywords, else from the image's flat top or a coadd's pile of clipped
    star cores, and flags those pixels SAT; the candidates use the same level.
    """
    if config.saturation_level > 0:
        return config.saturation_level
    return exposure.saturation[1] if exposure.saturation is not None else np.inf


def star_positions(stars: StarList, science: Exposure) -> tuple[np.ndarray, np.ndarray]:
    """Positions (0-based science px) of the stars of a star list on the science image.

    Parameters
    ----------
    stars : StarList
        The list as read (:func:`diffviewer.star_list.read_star_list`): ``x, y`` in
        0-based science px, or ``ra, dec`` in deg, mapped through the science WCS.
    science : Exposure
        The science image.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        x and y (px) of every row of the list, NaN where a row gives none; at least one
        on the image.

    Raises
    ------
    InputError
        When the list gives ra/dec without a celestial WCS, or none of its stars falls on
        the science image: a run with no star of the list would fit no kernel and give a
        plain difference.
    """
    if stars.sky:
        if not science.has_celestial_wcs or science.wcs is None:
            raise InputError(
                f"{STAR_LIST_FIELD} {stars.path} gives ra,dec but the science image "
                f"{science.source} has no celestial WCS; give x,y columns instead"
            )
        x, y = science.wcs.celestial.all_world2pix(stars.first, stars.second, 0)
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    else:
        x, y = stars.first, stars.second
    on = _on_image(x, y, science.shape)
    if not np.any(on):
        finite = np.isfinite(x) & np.isfinite(y)
        height, width = science.shape
        where = "ra,dec through its WCS" if stars.sky else "x,y in 0-based px"
        raise InputError(
            f"{STAR_LIST_FIELD} {stars.path}: 0 of {len(x)} stars on the image "
            f"({int(np.sum(finite))} outside the science image {science.source} of "
            f"{width} x {height} px, {int(np.sum(~finite))} with no finite position); a "
            f"kernel fitted on none would leave a plain difference, so the pair was not run: "
            f"give stars of this image ({where}), {OR_NONE}"
        )
    return x, y


def _star_list(config: CandidatesConfig, given: StarList | None) -> StarList | None:
    """The star list ``config.source_list`` names: ``given`` when the caller read it
    already (it must be that file), else read here; None when the config names none."""
    if given is not None and given.path != Path(config.source_list).expanduser():
        raise ValueError(
            f"the star list given, {given.path}, is not the one {STAR_LIST_FIELD} names "
            f"({config.source_list!r})"
        )
    if not config.source_list:
        return None
    return given if given is not None else read_star_list(config.source_list)


def _on_image(x: np.ndarray, y: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Whether each position (px; NaN: none) rounds to a pixel of an image of ``shape``."""
    with np.errstate(invalid="ignore"):
        return (x > -0.5) & (x < shape[1] - 0.5) & (y > -0.5) & (y < shape[0] - 0.5)


def _peak_offsets(
    image: np.ndarray, xi: np.ndarray, yi: np.ndarray, background: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel offsets of stars from their integer positions (px).

    The brightest pixel of the 3x3 box around each position (the smoothed image's peak
    can sit one pixel off) is refined by the vertex of a parabola through the log of its
    row and column (exact for a Gaussian), limited to half a pixel.
    """
    s5, _ = cutouts(image, xi, yi, 2)
    s5 = s5.astype(np.float64) - background[:, None, None]
    n = len(xi)
    best = np.argmax(s5[:, 1:4, 1:4].reshape(n, 9), axis=1)
    oy, ox = best // 3 - 1, best % 3 - 1
    rows = (oy + 2)[:, None] + np.array([-1, 0, 1])[None, :]
    cols = (ox + 2)[:, None] + np.array([-1, 0, 1])[None, :]
    k = np.arange(n)[:, None]
    row = s5[k, (oy + 2)[:, None], cols]
    col = s5[k, rows, (ox + 2)[:, None]]
    with np.errstate(all="ignore"):
        lr = np.log(np.clip(row, 1e-30, None))
        lc = np.log(np.clip(col, 1e-30, None))
        dx = 0.5 * (lr[:, 0] - lr[:, 2]) / (lr[:, 0] - 2 * lr[:, 1] + lr[:, 2])
        dy = 0.5 * (lc[:, 0] - lc[:, 2]) / (lc[:, 0] - 2 * lc[:, 1] + lc[:, 2])
    return (ox + np.clip(np.nan_to_num(dx), -0.5, 0.5), oy + np.clip(np.nan_to_num(dy), -0.5, 0.5))


def _by_cells(
    ordered: np.ndarray,
    xi: np.ndarray,
    yi: np.ndarray,
    side: int,
    width: int,
    config: CandidatesConfig,
) -> np.ndarray:
    """The stars kept by the cells: at most ``max_per_cell`` per cell, the brightest first,
    and at most ``max_candidates`` in all by whole ranks (every cell's brightest, then its
    second, ...).

    Parameters
    ----------
    ordered : numpy.ndarray
        Indices of the eligible stars, brightest first.
    xi, yi : numpy.ndarray
        Integer positions of all stars.
    side : int
        Cell side (px).
    width : int
        Image width (px).
    config : CandidatesConfig
        ``max_per_cell`` and ``max_candidates``.

    Returns
    -------
    numpy.ndarray
        The kept indices, still brightest first.
    """
    n = len(ordered)
    ncx = int(np.ceil(width / side))
    cell = (yi[ordered] // side) * ncx + xi[ordered] // side
    order = np.lexsort((np.arange(n), cell))
    starts = np.r_[0, np.nonzero(np.diff(cell[order]))[0] + 1] if n else np.zeros(0, int)
    rank = np.empty(n, dtype=int)
    rank[order] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    by_rank = np.lexsort((np.arange(n), rank))
    allowed = by_rank[rank[by_rank] < config.max_per_cell]
    if config.max_candidates:
        allowed = allowed[: config.max_candidates]
    return ordered[np.sort(allowed)]


def _defective_cores(
    science: Exposure, template: Exposure, xi: np.ndarray, yi: np.ndarray, radius: float
) -> np.ndarray:
    """Whether each star's core, within ``radius`` px, holds a pixel defect
    (:data:`~diffviewer.exposure.PIXEL_DEFECTS`) on either image."""
    half = int(np.ceil(radius))
    planes = cutouts(science.mask, xi, yi, half)[0] | cutouts(template.mask, xi, yi, half)[0]
    result: np.ndarray = ~measurable(planes & int(PIXEL_DEFECTS), radius)
    return result


def _stamp_flags(
    science: Exposure,
    template: Exposure,
    xi: np.ndarray,
    yi: np.ndarray,
    half: int,
    core_radius: float,
    saturation: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Whether each stamp is masked, or saturated, on either image.

    Masked: not :func:`~diffviewer.engine.psf_stars.measurable` with a core of
    ``core_radius`` px (a pixel defect outside the core, a cosmic ray in the wing, is
    left to the fit to leave out). Saturated: a saturated plane, or a value at the
    image's ``saturation`` level (science, template), pixel defects' left out.
    """
    masked = np.zeros(len(xi), dtype=bool)
    saturated = np.zeros(len(xi), dtype=bool)
    chunk = max(1, int(2e7 // (2 * half + 1) ** 2))
    for start in range(0, len(xi), chunk):
        sl = slice(start, start + chunk)
        bits = np.zeros((len(xi[sl]), 2 * half + 1, 2 * half + 1), dtype=science.mask.dtype)
        for exposure, level in zip((science, template), saturation, strict=True):
            planes = cutouts(exposure.mask, xi[sl], yi[sl], half)[0]
            values = cutouts(exposure.image, xi[sl], yi[sl], half)[0]
            np.putmask(values, (planes & int(PIXEL_DEFECTS)) != 0, -np.inf)
            saturated[sl] |= values.max(axis=(1, 2)) >= level
            bits |= planes
        masked[sl] = ~measurable(bits & ~SATURATED, core_radius)
        saturated[sl] |= np.any((bits & SATURATED) != 0, axis=(1, 2))
    return masked, saturated


def select_candidates(
    science: Exposure,
    template: Exposure,
    config: CandidatesConfig,
    reporter: Reporter,
    peaks: Peaks | None = None,
    template_peaks: Peaks | None = None,
    *,
    kernel_config: KernelConfig,
    star_list: StarList | None = None,
) -> CandidateSet:
    """Select the stars on which the PSF-matching kernel is fitted.

    Parameters
    ----------
    science, template : Exposure
        The pair, on the same pixel grid.
    config : CandidatesConfig
        Thresholds, window, isolation, cells, control sample, optional source list.
    reporter : Reporter
        Progress and cancellation.
    peaks : Peaks, optional
        The science image's peaks when they were found already (by the registration),
        used when their threshold is at most ``config.detect_threshold``; else they are
        found here.
    template_peaks : Peaks, optional
        Peaks found on ``template``'s own pixels (by the registration, when the template
        was not resampled): their background grid is the template's.
    kernel_config : KernelConfig
        The run's basis, whose stamps each star must hold (:func:`stamp_half_width`),
        unless ``config.stamp_half_width`` gives it (required: a default basis here once
        chose stars for stamps other than the run's).
    star_list : StarList, optional
        The star list ``config.source_list`` names, when it was read already (by
        ``diffviewer run``, before the images); read here when None.

    Returns
    -------
    CandidateSet
        Possibly empty (tiny cutouts, blank fields): the kernel fit decides what to do then.
    """
    shape = science.shape
    stars = _star_list(config, star_list)
    if stars is not None:
        x_all, y_all = star_positions(stars, science)
        inside = _on_image(x_all, y_all, shape)
        xi, yi = np.rint(x_all[inside]).astype(np.intp), np.rint(y_all[inside]).astype(np.intp)
        bg_s, _ = coarse_background(science.image, science.good_pixels())
        peak = science.image[yi, xi] - grid_value(bg_s, shape, xi, yi)
        n_detected = len(x_all)
    else:
        if peaks is None or peaks.threshold > config.detect_threshold:
            peaks = find_peaks(science, config.detect_threshold, reporter)
        found = peaks.above(config.detect_threshold)
        xi, yi, peak, bg_s = found.x, found.y, found.peak, found.background
        n_detected = len(xi)
    if template_peaks is not None:
        bg_t = template_peaks.background
    else:
        bg_t, _ = coarse_background(template.image, template.good_pixels())
    reporter.update(0.6)

    # FWHM from the brightest unsaturated peaks, to size stamps and apertures.
    sat_s, sat_t = _saturation_level(science, config), _saturation_level(template, config)
    bright = np.argsort(-peak)
    bright = bright[science.image[yi[bright], xi[bright]] < 0.5 * sat_s][:100]
    bright_xy = (frozen(xi[bright]), frozen(yi[bright]))
    psf_s = estimate_psf(science, *bright_xy, bright=bright_xy)
    psf_t = estimate_psf(template, *bright_xy, bright=bright_xy)
    fwhm = psf_s.fwhm
    half = config.stamp_half_width or stamp_half_width(psf_s, psf_t, kernel_config)
    reach = max(half, stamp_half_width(psf_s, psf_t, kernel_config, wing=True))

    reasons = np.full(len(xi), "", dtype=object)

    def reject(mask: np.ndarray, reason: str) -> None:
        reasons[mask & (reasons == "")] = reason

    inside = (xi - half >= 0) & (yi - half >= 0) & (xi + half < shape[1]) & (yi + half < shape[0])
    reject(~inside, "edge")
    rad = APERTURE_FWHM * fwhm
    # A pixel defect in a star's aperture (a cosmic ray's counts) would spoil its fluxes,
    # and the star be rejected for their ratio or as saturated: it is masked first.
    idx = np.nonzero(reasons == "")[0]
    flag = np.zeros(len(xi), dtype=bool)
    flag[idx] = _defective_cores(science, template, xi[idx], yi[idx], rad)
    reject(flag, "masked")
    # Aperture photometry on small cutouts first; full stamps only for the few survivors.
    idx = np.nonzero(reasons == "")[0]
    flux_s, flux_t, var_s, var_t = (np.zeros(len(xi)) for _ in range(4))
    ap = aperture_fluxes(science, template, xi[idx], yi[idx], (bg_s, bg_t), rad)
    flux_s[idx], flux_t[idx], var_s[idx], var_t[idx] = ap.flux_s, ap.flux_t, ap.var_s, ap.var_t
    snr = np.zeros(len(xi))
    snr[idx] = flux_s[idx] / np.sqrt(var_s[idx])
    sat = np.zeros(len(xi), dtype=bool)
    sat[idx] = (ap.max_s >= sat_s) | (ap.max_t >= sat_t)
    reject(sat, "saturated")
    reject((snr < config.snr_min) | (snr > config.snr_max), "S/N window")
    idx = np.nonzero(reasons == "")[0]
    local = np.full(len(xi), np.nan)
    local[idx] = local_snr(science, xi[idx], yi[idx], rad, fwhm)
    reject(~(local >= LOCAL_SNR_MIN) & (reasons == ""), "no local source")
    ratio = median_ratio(flux_s, flux_t, reasons == "")
    if ratio is not None:
        deviant = ratio_deviant(flux_s, flux_t, var_s, var_t, ratio)
        reject(deviant & (reasons == ""), "flux ratio")
    reporter.update(0.7)

    if stars is None and config.isolation_radius > 0 and len(xi) > 1:
        alive = np.nonzero(reasons == "")[0]
        star, other = pairs_within(xi, yi, alive, config.isolation_radius * half, 2.0)
        # Each star's brightest other detection within the radius.
        brightest = np.full(len(xi), -np.inf)
        np.maximum.at(brightest, star, peak[other])
        crowded = brightest >= config.isolation_flux_ratio * peak
        reject(crowded, "not isolated")

    # Cells, then the stamp check (masks, saturation) of the stars that would be kept; a
    # star that fails it frees its place for the next brightest in its cell.
    alive = np.nonzero(reasons == "")[0]
    alive = alive[np.argsort(-snr[alive], kind="stable")]
    side = max(1, min(config.cell_size, min(shape) // 4))
    checked = np.zeros(len(xi), dtype=bool)
    while True:
        keep = _by_cells(alive[reasons[alive] == ""], xi, yi, side, shape[1], config)
        todo = keep[~checked[keep]]
        if not len(todo):
            break
        masked, saturated = _stamp_flags(
            science, template, xi[todo], yi[todo], half, CORE_FWHM * fwhm, (sat_s, sat_t)
        )
        checked[todo] = True
        flag = np.zeros(len(xi), dtype=bool)
        flag[todo] = masked
        reject(flag, "masked")
        flag[:] = False
        flag[todo] = saturated
        reject(flag, "saturated")
        reporter.update(0.9)
    full = np.zeros(len(xi), dtype=bool)
    full[alive] = True
    full[keep] = False
    reject(full, "cell limit")

    dxs, dys = _peak_offsets(
        science.image, xi[keep], yi[keep], grid_value(bg_s, shape, xi[keep], yi[keep])
    )
    ids = np.arange(len(keep))
    control = (
        ((ids + 1) % config.control_every == 0)
        if config.control_every
        else np.zeros(len(keep), bool)
    )
    table = Table(
        {
            "id": ids,
            "x": xi[keep] + dxs,
            "y": yi[keep] + dys,
            "flux_sci": flux_s[keep],
            "flux_tmpl": flux_t[keep],
            "snr": snr[keep],
            "peak": peak[keep],
            "control": control,
        }
    )
    counts = {r: int(np.sum(reasons == r)) for r in REASONS}
    unmatched = unmatched_light(
        science, template, xi, yi, keep, reach, (bg_s, bg_t), rad, (psf_s.fwhm, psf_t.fwhm)
    )
    note = None
    if stars is not None:
        numbers = (int(n_detected), len(xi), len(keep), int(np.sum(~control)))
        note = star_list_note(stars.path, config, kernel_config, numbers, counts, int(half))
    reporter.update(1.0)
    return CandidateSet(
        table,
        int(n_detected),
        types.MappingProxyType(counts),
        int(half),
        float(fwhm),
        bright_xy,
        unmatched,
        () if note is None else (note,),
    )
