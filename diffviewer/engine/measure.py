"""Measurement of DIA sources: the diaSources catalog with ids, photometry, shapes, flags, dipoles.

Every source is measured on a cutout around its footprint, never on the whole image,
and every quantity of a source refers to one point: the strongest extreme of the
*thresholded* image (the score, or the PSF-filtered difference) in its footprint.

- ``sign``: the sign of that extreme (the only definition of the sign); ``peak_value``
  its value (sigma);
- centroid: its position, refined to sub-pixel by a three-point Gaussian fit in x and
  in y (the maximum-likelihood position of a point source: both images are matched
  filters);
- PSF flux on the difference forced there with the difference's PSF, fitted as the
  matched filter does (:func:`diffviewer.engine.photometry.forced_psf_flux`), its
  error from the variance plane, which was renormalised once on sky
  (:mod:`diffviewer.engine.renormalise`) and is not rescaled again here;
- ``score_peak``: the score at the extreme's pixel, NaN where the score is not defined;
- the science image's PSF flux at the same place, above the science's smooth sky
  background, as LSST's forced measurement on the background-subtracted visit image
  (the DiaSource's ``scienceFlux``): no local sky is fitted, which on a bright star's
  flank drew the level up and the flux below zero (GOTO: 208 of 521 detections below
  -5 sigma); a neighbour's light within the PSF is in it;
- aperture fluxes (exact circular overlap, :mod:`diffviewer.engine.apertures`) at
  ``aperture_radii``;
- second moments from Gaussian-weighted moments (weight twice the PSF width),
  corrected for the weight (exact for a Gaussian source);
- flags from the mask planes of the difference, science and template, in the
  footprint and in the 3 x 3 pixels at the centroid (``*_center``);
- dipoles (:mod:`diffviewer.engine.dipole`): a footprint with a positive and a
  negative part is fitted with two PSFs of opposite sign; a footprint with both
  signs that is not a dipole is split back into the connected pieces of its positive
  and negative parts, one source each (they only touched). A dipole is one source
  whose sign and ``peak_value`` are its stronger lobe's on the thresholded image, at
  the midpoint of its fitted lobes (as LSST's), where ``psf_flux`` is one PSF's fit
  (a fraction of the net flux, :mod:`~diffviewer.engine.columns`); the lobes' own
  fluxes are ``pos_flux`` and ``neg_flux``.

Sky sources (blank positions from detection) are rows of the same table with
``sky_source`` true, sign 0 and only the forced fluxes and flags measured, as the
LSST diaSource catalog carries them: the scatter of their ``snr`` shows how well the
renormalised variance describes the noise. Ids: :mod:`diffviewer.engine.ids`.
Columns, units and descriptions: :mod:`diffviewer.engine.columns` (each column of the
table carries them). ``meta`` holds ``diff_psf_fwhm`` (px), ``psf_nodes`` (the
positions whose PSFs the forced fluxes blend; 1 for one PSF everywhere),
``detection_image``, ``exposure_id`` and ``exposure_bits``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from astropy.table import Table
from scipy import ndimage

from diffviewer.config import MeasurementConfig
from diffviewer.engine.apertures import aperture_sums
from diffviewer.engine.columns import (
    COLUMNS,
    aperture_columns,
    describe,
    empty_columns,
    image_unit,
)
from diffviewer.engine.detect import Detections
from diffviewer.engine.dipole import fit_dipole, is_dipole
from diffviewer.engine.ids import make_id_factory
from diffviewer.engine.photometry import PsfModel, forced_psf_fit, forced_psf_flux
from diffviewer.engine.progress import Reporter
from diffviewer.engine.psf_fit import Cutout, fit_position
from diffviewer.engine.source_noise import (
    InputNoise,
    aperture_weights,
    error_factors,
    psf_weights,
)
from diffviewer.engine.subtract import template_planes
from diffviewer.engine.zogy import ScoreResult
from diffviewer.exposure import UNUSABLE, Exposure, MaskPlane
from diffviewer.stats import FWHM_PER_SIGMA

#: Flag columns and the mask planes (difference, science, template) that raise them.
FLAG_PLANES: dict[str, int] = {
    "edge": int(MaskPlane.EDGE),
    "nodata": int(MaskPlane.NO_DATA),
    "saturated": int(MaskPlane.SAT | MaskPlane.SAT_TEMPLATE),
    "interpolated": int(MaskPlane.INTRP),
    "bad": int(MaskPlane.BAD),
    "suspect": int(MaskPlane.SUSPECT),
    "cr": int(MaskPlane.CR),
}

#: Flags that make a source "flagged" (the seed's SourceFlagChecker bad flags): any
#: of these anywhere in the footprint, or at the centre.
FLAGGED_ANYWHERE = ("edge", "nodata", "saturated")
FLAGGED_CENTER = ("interpolated", "bad", "suspect", "cr")


def _refine_peak(img: np.ndarray, good: np.ndarray, iy: int, ix: int) -> tuple[float, float]:
    """Sub-pixel offset (dy, dx) of a local maximum: three-point Gaussian, else parabola, fit.

    Along an axis where a neighbour is off the cutout or not ``good`` (the detection image
    holds 0 on unusable pixels, which a fit would take for the source's wing and move the
    position away from them), the offset is 0.
    """
    out = []
    for axis, (c, n) in enumerate(((iy, img.shape[0]), (ix, img.shape[1]))):
        if c <= 0 or c >= n - 1:
            out.append(0.0)
            continue
        line = (slice(c - 1, c + 2), ix) if axis == 0 else (iy, slice(c - 1, c + 2))
        if not good[line].all():
            out.append(0.0)
            continue
        lo, mid, hi = img[line]
        if lo > 0 and mid > 0 and hi > 0:
            lo, mid, hi = np.log(lo), np.log(mid), np.log(hi)
        curv = lo - 2.0 * mid + hi
        out.append(float(np.clip(0.5 * (lo - hi) / curv, -0.5, 0.5)) if curv < 0 else 0.0)
    return out[0], out[1]


def _peak(
    image: np.ndarray, inside: np.ndarray, good: np.ndarray, sign: int
) -> tuple[float, float, int, int]:
    """The extreme of ``sign * image`` within a footprint (cutout px), refined on the
    ``good`` pixels (:func:`_refine_peak`).

    Returns
    -------
    x, y : float
        Sub-pixel position.
    ix, iy : int
        The extreme's pixel.
    """
    signed = sign * image
    vals = np.where(inside, signed, -np.inf)
    iy, ix = np.unravel_index(int(np.argmax(vals)), vals.shape)
    dy, dx = _refine_peak(signed, good, int(iy), int(ix))
    return float(ix + dx), float(iy + dy), int(ix), int(iy)


def _weighted_moments(
    img: np.ndarray, good: np.ndarray, xc: float, yc: float, sigma_w: float
) -> tuple[float, float, float]:
    """Second moments (xx, yy, xy; px^2) from Gaussian-weighted moments, the weight removed.

    Only the ``good`` pixels enter.
    """
    y, x = np.nonzero(good)
    dx, dy = x - xc, y - yc
    w = np.exp(-0.5 * (dx * dx + dy * dy) / sigma_w**2) * img[y, x]
    total = float(w.sum())
    nan = float("nan")
    if total <= 0.0:
        return nan, nan, nan
    mxx, myy = float(np.sum(w * dx * dx)) / total, float(np.sum(w * dy * dy)) / total
    mxy = float(np.sum(w * dx * dy)) / total
    # For a Gaussian source of covariance C seen through a Gaussian weight W:
    # M^-1 = C^-1 + W^-1, so C = (M^-1 - W^-1)^-1 (2 x 2 inverses in closed form).
    det_m = mxx * myy - mxy * mxy
    if det_m <= 0:
        return nan, nan, nan
    ixx, iyy, ixy = myy / det_m - 1.0 / sigma_w**2, mxx / det_m - 1.0 / sigma_w**2, -mxy / det_m
    det_i = ixx * iyy - ixy * ixy
    if det_i <= 0 or ixx <= 0:
        return nan, nan, nan
    return iyy / det_i, ixx / det_i, -ixy / det_i


@dataclasses.dataclass(frozen=True)
class _FootprintCutout:
    """One footprint's cutout: slices, difference pixels, masks and detection-image values."""

    box: tuple[slice, slice]
    data: np.ndarray
    good: np.ndarray
    inside: np.ndarray
    detection: np.ndarray


def _weight(
    exposure: Exposure, usable: np.ndarray, box: tuple[slice, slice], inside: np.ndarray
) -> np.ndarray:
    """Inverse variance on a cutout, 0 outside ``inside`` and on unusable pixels."""
    fitted = inside & usable[box]
    return np.where(fitted, 1.0 / np.where(fitted, exposure.variance[box], 1.0), 0.0)


def _parts(cut: _FootprintCutout, det_mask: np.ndarray, both: bool) -> list[tuple[np.ndarray, int]]:
    """The sources of a footprint that is not a dipole, each with its sign (0: its extreme's).

    A one-signed footprint is one source. A footprint with both signs that is not a
    dipole is split back into the connected pieces of its positive (DETECTED) and
    negative (DETECTED_NEGATIVE) parts, one source each, as a deblender would: the
    merge only served to look for a dipole.
    """
    if not both:
        return [(cut.inside, 0)]
    out: list[tuple[np.ndarray, int]] = []
    for sign, plane in ((1, MaskPlane.DETECTED), (-1, MaskPlane.DETECTED_NEGATIVE)):
        pieces, n = ndimage.label(
            cut.inside & ((det_mask & int(plane)) != 0), structure=np.ones((3, 3), dtype=bool)
        )
        out.extend((pieces == k, sign) for k in range(1, n + 1))
    return out


def score_at(score: ScoreResult, iy: np.ndarray | int, ix: np.ndarray | int) -> np.ndarray:
    """The score at pixels ``(iy, ix)``, NaN where it is not defined.

    The score image holds 0 where its mask has an :data:`UNUSABLE` plane (near saturated
    cores it is grown by the score kernels' whole side, further than the difference's);
    a detection on the difference there has no score, not a score of 0.

    Parameters
    ----------
    score : ScoreResult
        The score.
    iy, ix : numpy.ndarray or int
        Row and column indices.

    Returns
    -------
    numpy.ndarray
        float64 values, the shape of the indices.
    """
    values = np.asarray(score.image[iy, ix], dtype=np.float64)
    undefined = (np.asarray(score.mask[iy, ix]) & int(UNUSABLE)) != 0
    return np.where(undefined, np.nan, values)


def _centre(
    cut: _FootprintCutout, part: np.ndarray, sign: int, model: PsfModel, weight: np.ndarray
) -> tuple[float, float, int, int]:
    """A source's position (cutout px) and its extreme's pixel: the sub-pixel extreme of
    the thresholded image (:func:`_peak`), or, where a pixel around the extreme is
    unusable, the PSF fitted to the usable pixels of ``part`` (:func:`fit_position`);
    the extreme where that fit fails."""
    cx, cy, ix, iy = _peak(cut.detection, part, cut.good, sign)
    around = cut.good[max(iy - 1, 0) : iy + 2, max(ix - 1, 0) : ix + 2]
    if around.all():
        return cx, cy, ix, iy
    fitted = fit_position(
        Cutout(sign * cut.data, np.where(part, weight, 0.0), model), (cx, cy), model.fwhm
    )
    return (cx, cy, ix, iy) if fitted is None else (*fitted, ix, iy)


def _measure_part(
    cut: _FootprintCutout,
    part: np.ndarray,
    sign: int,
    planes: np.ndarray,
    score: ScoreResult | None,
    fit: tuple[PsfModel, np.ndarray],
) -> dict[str, float]:
    """Sign, centroid, peaks, moments, area and footprint flags of one source.

    ``sign`` 0 takes the sign of the thresholded image's strongest extreme in ``part``
    (a one-signed footprint, a dipole); the centroid is :func:`_centre`'s, with the
    difference's PSF and inverse variance on the cutout (``fit``). The caller sets
    ``has_positive`` / ``has_negative``.
    """
    ys, xs = cut.box
    model, weight = fit
    fwhm = model.fwhm
    if sign == 0:
        values = np.where(part, cut.detection, 0.0)
        sign = 1 if values.flat[int(np.argmax(np.abs(values)))] >= 0 else -1
    cx, cy, ix, iy = _centre(cut, part, sign, model, weight)
    row: dict[str, float] = {
        "x": cx + xs.start,
        "y": cy + ys.start,
        "sign": sign,
        "peak_value": float(cut.detection[iy, ix]),
        "npix": int(part.sum()),
    }
    row["xx"], row["yy"], row["xy"] = _weighted_moments(
        sign * cut.data, cut.good & part, cx, cy, 2.0 * fwhm / FWHM_PER_SIGMA
    )
    if score is not None:
        row["score_peak"] = float(score_at(score, iy + ys.start, ix + xs.start))
    bits = int(np.bitwise_or.reduce(planes[cut.box][part])) if part.any() else 0
    py, px = np.nonzero(part)
    touches = bool(part.any()) and (
        ys.start + py.min() == 0
        or xs.start + px.min() == 0
        or ys.start + py.max() == planes.shape[0] - 1
        or xs.start + px.max() == planes.shape[1] - 1
    )
    for name, plane_bits in FLAG_PLANES.items():
        row[f"flag_{name}"] = bool(bits & plane_bits) or (name == "edge" and touches)
    return row


def _footprint_rows(
    difference: Exposure,
    science: Exposure,
    score: ScoreResult | None,
    detections: Detections,
    models: tuple[PsfModel, PsfModel],
    usable: tuple[np.ndarray, np.ndarray],
    planes: np.ndarray,
    config: MeasurementConfig,
    reporter: Reporter,
) -> list[dict[str, float]]:
    """One row per source of every footprint: dipoles fitted, mixed footprints split."""
    model, sci_model = models
    table, seg, shape = detections.table, detections.segmentation, difference.shape
    # Everything measured on a footprint reads its own pixels (the dipole fit evaluates
    # its PSFs on their bounding box), but the sub-pixel peak reads the extreme's
    # neighbours: the cutout is the footprint's box and one pixel around it.
    margin = 1
    found: list[dict[str, float]] = []
    # The footprint table's columns as lists: an astropy column's element is ~1 us.
    rows = zip(
        *(
            table[name].tolist()
            for name in (
                "label",
                "bbox_ymin",
                "bbox_ymax",
                "bbox_xmin",
                "bbox_xmax",
                "has_positive",
                "has_negative",
            )
        ),
        strict=True,
    )
    for i, (label, ymin, ymax, xmin, xmax, has_pos, has_neg) in enumerate(rows):
        if i % 50 == 0:  # a dipole fit takes up to ~10 ms
            reporter.update(0.8 * i / max(len(table), 1))
        y0 = max(ymin - margin, 0)
        y1 = min(ymax + margin + 1, shape[0])
        x0 = max(xmin - margin, 0)
        x1 = min(xmax + margin + 1, shape[1])
        box = (slice(y0, y1), slice(x0, x1))
        good = usable[0][box]
        cut = _FootprintCutout(
            box=box,
            data=difference.image[box].astype(np.float64),
            good=good,
            inside=seg[box] == label,
            detection=detections.image[box].astype(np.float64),
        )
        both = bool(has_pos) and bool(has_neg)
        weight = _weight(difference, usable[0], box, np.ones_like(good))
        if both:
            pos_peak = _peak(cut.detection, cut.inside, cut.good, 1)[:2]
            neg_peak = _peak(cut.detection, cut.inside, cut.good, -1)[:2]
            fit = fit_dipole(
                Cutout(cut.data, np.where(cut.inside, weight, 0.0), model),
                Cutout(science.image[box], _weight(science, usable[1], box, cut.inside), sci_model),
                pos_peak,
                neg_peak,
            )
            if is_dipole(
                fit,
                pos_peak,
                neg_peak,
                model.fwhm,
                flux_ratio=config.dipole_flux_ratio,
                max_separation=config.dipole_max_separation,
            ):
                row = _measure_part(cut, cut.inside, 0, planes, score, (model, weight))
                found.append(
                    {
                        **row,
                        # A dipole is where its two lobes are: their midpoint (LSST's too).
                        "x": 0.5 * (fit.pos_x + fit.neg_x) + x0,
                        "y": 0.5 * (fit.pos_y + fit.neg_y) + y0,
                        "pos_flux": fit.pos_flux,
                        "neg_flux": fit.neg_flux,
                        "pos_flux_err": fit.pos_flux_err,
                        "neg_flux_err": fit.neg_flux_err,
                        "pos_x": fit.pos_x + x0,
                        "pos_y": fit.pos_y + y0,
                        "neg_x": fit.neg_x + x0,
                        "neg_y": fit.neg_y + y0,
                        "dipole_separation": fit.separation,
                        "dipole_orientation": fit.orientation,
                        "label": label,
                        "is_dipole": True,
                        "has_positive": True,
                        "has_negative": True,
                    }
                )
                continue
        for part, sign in _parts(cut, detections.mask[box], both):
            row = _measure_part(cut, part, sign, planes, score, (model, weight))
            found.append(
                {
                    **row,
                    "label": label,
                    "has_positive": row["sign"] > 0,
                    "has_negative": row["sign"] < 0,
                }
            )
    return found


def _centre_bits(planes: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Mask bits in the 3 x 3 pixels at each position's nearest pixel (NO_DATA off the image)."""
    ix, iy = np.round(xs).astype(np.int64), np.round(ys).astype(np.int64)
    step = np.arange(-1, 2)
    rows, cols = iy[:, None] + step, ix[:, None] + step
    on_rows = (rows >= 0) & (rows < planes.shape[0])
    on_cols = (cols >= 0) & (cols < planes.shape[1])
    on = on_rows[:, :, None] & on_cols[:, None, :]
    values = planes[
        np.clip(rows, 0, planes.shape[0] - 1)[:, :, None],
        np.clip(cols, 0, planes.shape[1] - 1)[:, None, :],
    ]
    bits = np.bitwise_or.reduce(np.where(on, values, 0).reshape(len(xs), 9), axis=1)
    return np.where(on.any(axis=(1, 2)), bits, int(MaskPlane.NO_DATA))


def measure_sources(
    difference: Exposure,
    science: Exposure,
    template: Exposure,
    score: ScoreResult | None,
    detections: Detections,
    diff_psf: np.ndarray | PsfModel,
    sci_psf: np.ndarray | PsfModel,
    config: MeasurementConfig,
    reporter: Reporter,
    science_background: Callable[[tuple[slice, slice]], np.ndarray] | None = None,
    inputs: InputNoise | None = None,
) -> Table:
    """Measure every detected footprint (and sky source) on cutouts of the difference.

    Parameters
    ----------
    difference : Exposure
        The difference (with the DETECTED planes) on which sources are measured.
    science, template : Exposure
        The science image and the template on its grid (forced science flux, flags).
    score : ScoreResult or None
        The score image, for ``score_peak`` (and the thresholded image when detection
        searched it).
    detections : Detections
        Footprints and sky-source positions.
    diff_psf, sci_psf : numpy.ndarray or PsfModel
        PSFs of the difference and of the science image: images (the same over the
        image), or models (:class:`~diffviewer.engine.psf_field.PsfField` for one that
        varies).
    config : MeasurementConfig
        Aperture radii, dipole criteria, exposure id and bits.
    reporter : Reporter
        Progress and cancellation.
    science_background : callable or None
        The science's smooth sky background on a box of it
        (:meth:`diffviewer.engine.background.SkyBackground.image`), subtracted for its
        forced flux; None when the science is background-subtracted.
    inputs : InputNoise or None
        The inputs' variance planes and the filters to the difference: the PSF and
        aperture fluxes' errors then hold each source's own noise as the filters
        correlated it
        (:mod:`~diffviewer.engine.source_noise`); None: the variance plane's alone.

    Returns
    -------
    astropy.table.Table
        One row per source (sky sources last, ``sky_source`` true); every column
        carries its unit and description (:mod:`diffviewer.engine.columns`).
    """
    factory = make_id_factory(config.exposure_id, config.exposure_bits)
    model, sci_model = (p if isinstance(p, PsfModel) else PsfModel(p) for p in (diff_psf, sci_psf))
    usable = difference.usable_pixels()
    usable &= np.isfinite(difference.image)
    sci_usable = science.usable_pixels()
    planes = template_planes(template.mask)
    planes |= difference.mask
    planes |= science.mask
    found = _footprint_rows(
        difference,
        science,
        score,
        detections,
        (model, sci_model),
        (usable, sci_usable),
        planes,
        config,
        reporter,
    )

    n_fp, n_sky = len(found), len(detections.sky_x)
    n = n_fp + n_sky
    cols = empty_columns(n)
    for k, row in enumerate(found):
        for name, value in row.items():
            cols[name][k] = value
    cols["sky_source"][n_fp:] = True
    cols["x"][n_fp:], cols["y"][n_fp:] = detections.sky_x, detections.sky_y
    if score is not None and n_sky:
        iy, ix = detections.sky_y.astype(int), detections.sky_x.astype(int)
        cols["score_peak"][n_fp:] = score_at(score, iy, ix)
    reporter.update(0.85)

    xs, ys = cols["x"], cols["y"]
    for k in range(n):
        if k % 500 == 0:
            reporter.update(0.85 + 0.1 * k / max(n, 1))
        cols["psf_flux"][k], cols["psf_flux_err"][k], cols["psf_chi2"][k] = forced_psf_fit(
            difference.image, difference.variance, usable, model, xs[k], ys[k]
        )
        cols["sci_psf_flux"][k], cols["sci_psf_flux_err"][k] = forced_psf_flux(
            science.image,
            science.variance,
            sci_usable,
            sci_model,
            xs[k],
            ys[k],
            science_background,
        )
    if inputs is not None:
        cols["psf_flux_err"] *= error_factors(inputs, psf_weights(model, usable.shape), xs, ys)
    centre_bits = _centre_bits(planes, xs, ys)
    sky = cols["sky_source"]
    for name, bits in FLAG_PLANES.items():
        cols[f"flag_{name}_center"][:] = (centre_bits & bits) != 0
        cols[f"flag_{name}"][sky] = cols[f"flag_{name}_center"][sky]
    with np.errstate(divide="ignore", invalid="ignore"):
        cols["snr"] = cols["psf_flux"] / cols["psf_flux_err"]

    flagged = np.zeros(n, dtype=bool)
    for name in FLAGGED_ANYWHERE:
        flagged |= cols[f"flag_{name}"] | cols[f"flag_{name}_center"]
    for name in FLAGGED_CENTER:
        flagged |= cols[f"flag_{name}_center"]

    ra, dec = np.full(n, np.nan), np.full(n, np.nan)
    if difference.has_celestial_wcs and difference.wcs is not None and n:
        world = difference.wcs.pixel_to_world_values(xs, ys)
        ra, dec = np.asarray(world[0], dtype=np.float64), np.asarray(world[1], dtype=np.float64)

    values = {**cols, "id": factory.take(n), "ra": ra, "dec": dec, "flagged": flagged}
    described = dict(COLUMNS)
    for r in config.aperture_radii:
        described.update(aperture_columns(r))
        sums = aperture_sums(difference.image, difference.variance, usable, xs, ys, r)
        if inputs is not None:
            shares = aperture_weights(r)
            sums[1][:] *= error_factors(inputs, shares, xs, ys, shares)
        values.update(zip(aperture_columns(r), sums, strict=True))
    out = Table({name: values[name] for name in described})
    describe(out, described, image_unit(difference.header.get("BUNIT")))
    out.meta["diff_psf_fwhm"] = model.fwhm
    out.meta["psf_nodes"] = model.n_nodes
    out.meta["detection_image"] = detections.detection_image
    out.meta["exposure_id"] = config.exposure_id
    out.meta["exposure_bits"] = config.exposure_bits
    reporter.update(1.0)
    return out


@dataclasses.dataclass(frozen=True)
class SkySourceCheck:
    """The catalog's own check of its errors and its background: its sky sources' PSF
    fluxes over their errors (pulls), which at blank positions are noise alone.

    A pull scatter of 1 says the errors describe the noise (above 1 they are too small,
    below too large: S/N and thresholds are off by that factor); a mean pull within a
    few of its errors of 0 says the difference has no level left under a point source
    (:func:`~diffviewer.engine.subtract.sky_corrected`). As LSST's diaSource sky
    sources serve.

    Attributes
    ----------
    n : int
        Unflagged sky sources with a finite PSF flux and error.
    mean_pull, mean_pull_error : float
        Their mean pull and its standard error (NaN with fewer than 2).
    pull_std : float
        Their pulls' standard deviation (NaN with fewer than 2).
    pull_std_error : float
        Its standard error, ``pull_std / sqrt(2 (n - 1))`` for normal pulls (7 % of it
        with 100 sky sources; an aperture's scatter is known as well).
    aperture_pull_std : dict of str to float
        The same of each aperture flux (``ap_flux_3``, ...) over its error. The variance
        plane is renormalised at PSF scale (:mod:`renormalise`): where the noise is
        correlated an aperture of another size sees another scale, and its errors are off
        by this factor (reported, not applied: one correction at most).
    psf_chi2_median : float
        Their median ``psf_chi2``: what noise alone gives (1 on uncorrelated noise; on
        correlated noise, whose variance plane is scaled at PSF scale, another value),
        the baseline a source's is read against (NaN without one).
    """

    n: int
    mean_pull: float
    mean_pull_error: float
    pull_std: float
    aperture_pull_std: dict[str, float] = dataclasses.field(default_factory=dict)
    psf_chi2_median: float = float("nan")

    @property
    def pull_std_error(self) -> float:
        """Standard error of :attr:`pull_std` (NaN with fewer than 2 sky sources)."""
        return self.pull_std / float(np.sqrt(2 * (self.n - 1))) if self.n >= 2 else float("nan")

    def as_dict(self) -> dict[str, object]:
        """The record ``metadata.json`` holds (``detection.sky_sources``; NaN as None)."""
        values = (
            self.mean_pull,
            self.mean_pull_error,
            self.pull_std,
            self.pull_std_error,
            self.psf_chi2_median,
        )
        names = ("mean_pull", "mean_pull_error", "pull_std", "pull_std_error", "psf_chi2_median")
        return (
            {"n": self.n}
            | {k: _finite_or_none(v) for k, v in zip(names, values, strict=True)}
            | {
                "aperture_pull_std": {
                    k: _finite_or_none(v) for k, v in self.aperture_pull_std.items()
                }
            }
        )


def _finite_or_none(value: float) -> float | None:
    """A figure for ``metadata.json``: None when not finite."""
    return value if np.isfinite(value) else None


def _pull_std(flux: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, float]:
    """The finite pulls ``flux / err`` and their standard deviation (NaN with fewer
    than 2)."""
    flux, err = np.asarray(flux, dtype=np.float64), np.asarray(err, dtype=np.float64)
    ok = np.isfinite(flux) & np.isfinite(err) & (err > 0)
    pulls = flux[ok] / err[ok]
    return pulls, float(np.std(pulls, ddof=1)) if pulls.size >= 2 else float("nan")


def sky_source_check(table: Table) -> SkySourceCheck:
    """:class:`SkySourceCheck` of a catalog of :func:`measure_sources`.

    Parameters
    ----------
    table : astropy.table.Table
        The catalog (its ``sky_source``, ``flagged``, ``psf_flux``, ``psf_flux_err``,
        ``psf_chi2`` and aperture fluxes).

    Returns
    -------
    SkySourceCheck
    """
    blank = np.asarray(table["sky_source"], dtype=bool) & ~np.asarray(table["flagged"], bool)
    pulls, spread = _pull_std(table["psf_flux"][blank], table["psf_flux_err"][blank])
    apertures = {
        name: _pull_std(table[name][blank], table[f"{name}_err"][blank])[1]
        for name in table.colnames
        if name.startswith("ap_flux_") and f"{name}_err" in table.colnames
    }
    # a catalog written before the column (a saved run read back) has no baseline
    chi2 = np.asarray(table["psf_chi2"][blank] if "psf_chi2" in table.colnames else [], float)
    chi2 = chi2[np.isfinite(chi2)]
    baseline = float(np.median(chi2)) if chi2.size else float("nan")
    if pulls.size < 2:
        nan = float("nan")
        return SkySourceCheck(int(pulls.size), nan, nan, spread, apertures, baseline)
    return SkySourceCheck(
        int(pulls.size),
        float(np.mean(pulls)),
        spread / float(np.sqrt(pulls.size)),
        spread,
        apertures,
        baseline,
    )
