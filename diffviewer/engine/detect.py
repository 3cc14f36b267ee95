"""Detection of positive and negative DIA sources on the score or the difference.

As the LSST ``DetectAndMeasureTask`` does: threshold both polarities in units of
the noise. The score has unit noise by construction; the difference is filtered with
its PSF and divided by the filtered noise, ``(d (x) flip P) / sqrt(v (x) P^2)`` (LSST's
detection smooths with the PSF), so a point source's peak is its PSF S/N. The
threshold is in the noise the variance predicts: the difference's variance was
renormalised once, on sky, at PSF scale (:mod:`diffviewer.engine.renormalise`), and
no second correction is made here. The detection image's robust noise over all its
good pixels (``noise_std``) is reported, and a value far from 1 is a warning (star
residuals, or a score whose input variances are off). The pixels above the
threshold are grouped 8-connected, and across masked runs no wider than the PSF's core
(a bad column through a source leaves one footprint; the masked pixels join it but
belong to no piece). Then drop
footprints smaller than ``min_area``, split each into one piece per significant peak
(:mod:`diffviewer.engine.deblend`: a transient touching a neighbour's residual, or
another transient, is a source at its own peak, not part of the neighbour's), grow the
pieces (a pixel within reach of several goes to the nearest), set DETECTED /
DETECTED_NEGATIVE by the sign of its piece, and give a positive and a negative piece
that touch one footprint label (a dipole's two lobes become one source; each piece
pairs at most once, the longest contact first). Optional sky sources
are blank positions far from every footprint and mask (forced photometry there
shows the noise a PSF flux really has).
The bad-subtraction guard reports the fraction of good pixels covered by footprints,
and trips beyond ``max_detected_fraction`` of them and three point sources' footprints
(:func:`guard_limit`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterator

import numpy as np
from astropy.table import Table
from scipy import ndimage

from diffviewer.config import DetectionConfig
from diffviewer.engine.background import sampled_robust_std
from diffviewer.engine.deblend import labelled_pixels, point_response, split_footprints
from diffviewer.engine.photometry import PsfModel, centre_psf
from diffviewer.engine.progress import Reporter
from diffviewer.engine.sky import grown_along
from diffviewer.engine.zogy import ScoreResult, al_score
from diffviewer.exposure import (
    MASK_DTYPE,
    UNUSABLE,
    Exposure,
    MaskPlane,
    map_by_rows,
    planes_clear,
)

#: Radius (px) of blank sky kept free of footprints and masks around a sky source.
SKY_SOURCE_RADIUS = 8

#: Seed of the random placement of sky sources (the same image gives the same positions).
SKY_SOURCE_SEED = 12345

#: Least number of good pixels for the noise check: a smaller image (an alert cutout)
#: holds too few independent noise samples, and its source inflates their spread.
MIN_PIXELS_FOR_STDEV = 10_000

#: Least rise (sigma of the detection image) of a peak above its saddle to a higher peak
#: of the same footprint for it to be a source of its own (:mod:`deblend`). Between two
#: pixels about a PSF FWHM apart the filtered noise differs by ~1.2 sigma (correlation
#: ~0.25 for a Gaussian PSF), so noise alone rarely makes a 3-sigma rise (beyond what
#: a crest's pixel sampling makes, :mod:`deblend`), while a transient 3 sigma above the
#: residual it touches is worth its own row. A peak with less rise is still a source
#: when it stays above the threshold once the higher peaks are taken away as point
#: sources (two transients 7-11 px apart rise only 1-2 sigma), in a
#: footprint those point sources explain to within this many sigma (not a streak).
DEBLEND_PROMINENCE = 3.0

#: Point sources whose footprints the bad-subtraction guard allows whatever the image's
#: size (:func:`guard_limit`): a transient and a dipole's two lobes. A bad subtraction
#: leaves residuals at many sources; on an alert cutout one transient's footprint covers
#: 15-35 % of the good pixels, and the 5 % fraction alone called all 15 Rubin cutouts
#: with a detection bad.
GUARD_SOURCES = 3

#: The detection image's robust noise outside this range means the noise model is off.
NOISE_STD_RANGE = (0.8, 1.25)


@dataclasses.dataclass(frozen=True)
class Detections:
    """Footprints of the DIA sources and the mask with the DETECTED planes.

    Attributes
    ----------
    segmentation : numpy.ndarray
        int32 label map of the grown footprints, one per significant peak or pair of
        touching lobes of opposite sign (0 = none), read-only.
    image : numpy.ndarray
        The thresholded image (float32, sigma, 0 where not usable; read-only): the
        score, or the difference filtered by its PSF over its filtered noise
        (:func:`detection_image`). Measurement reads its sources' peaks there.
    table : astropy.table.Table
        One row per footprint: ``label``, ``x``, ``y`` (peak pixel on the detection
        image, 0-based), ``peak_value`` (signed, in sigma: the detection image there),
        ``has_positive``,
        ``has_negative`` (a part above / below the threshold), ``npix`` (footprint
        area, px) and ``bbox_xmin``, ``bbox_xmax``, ``bbox_ymin``, ``bbox_ymax``
        (inclusive, px).
    mask : numpy.ndarray
        The difference's mask with DETECTED (grown positive pieces) and
        DETECTED_NEGATIVE (grown negative pieces; the two never overlap) set, read-only.
    detected_fraction : float
        Fraction of the good pixels inside footprints.
    guard_tripped : bool
        Whether they cover more than the bad-subtraction guard allows (:func:`guard_limit`).
    sky_x, sky_y : numpy.ndarray
        Sky-source positions (0-based px), empty when none were asked for.
    detection_image : str
        ``'score'`` or ``'difference'``: where the threshold was applied.
    noise_std : float
        Robust standard deviation of the detection image over good pixels, in units
        of its predicted noise (1 when the noise model is right); reported, not applied.
    warnings : tuple of str
        What the user should know (guard tripped, noise model off, too few sky positions).
    """

    segmentation: np.ndarray
    image: np.ndarray
    table: Table
    mask: np.ndarray
    detected_fraction: float
    guard_tripped: bool
    sky_x: np.ndarray
    sky_y: np.ndarray
    detection_image: str
    noise_std: float
    warnings: tuple[str, ...]

    def __post_init__(self) -> None:
        for name in ("segmentation", "image", "mask", "sky_x", "sky_y"):
            getattr(self, name).flags.writeable = False


def guard_limit(n_good: int, psf: np.ndarray, config: DetectionConfig) -> int:
    """Most good pixels detections may cover before the bad-subtraction guard trips.

    ``config.max_detected_fraction`` of the good pixels, and at least the footprints of
    :data:`GUARD_SOURCES` point sources: each a disk of the PSF's noise-equivalent area
    (``1 / sum(P^2)``, the pixels a PSF flux averages over) grown by ``config.grow``.

    Parameters
    ----------
    n_good : int
        Good pixels of the detection image.
    psf : numpy.ndarray
        The difference's PSF.
    config : DetectionConfig
        The guard's fraction and the footprints' growth.

    Returns
    -------
    int
    """
    p = np.asarray(psf, dtype=np.float64)
    radius = math.sqrt(1.0 / (math.pi * float(np.sum((p / p.sum()) ** 2))))
    footprint = math.pi * (radius + config.grow) ** 2
    return max(math.floor(config.max_detected_fraction * n_good), round(GUARD_SOURCES * footprint))


def detection_image(
    difference: Exposure,
    score: ScoreResult | None,
    config: DetectionConfig,
    psf: np.ndarray | PsfModel,
    reporter: Reporter,
    filtered: ScoreResult | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """The image thresholded in sigma and its good-pixel map.

    Parameters
    ----------
    difference : Exposure
        The difference with its variance and mask.
    score : ScoreResult or None
        The score image, used when ``config.detect_on == 'score'``.
    config : DetectionConfig
        Detection settings.
    psf : numpy.ndarray or PsfModel
        The difference's PSF, or its model over the image (the catalog's): the difference
        is searched after filtering with it and dividing by the filtered noise
        (:func:`diffviewer.engine.zogy.al_score`), as LSST's detection smooths with the
        PSF, so a point source's peak is its PSF S/N, with the PSF the catalog fits.
    reporter : Reporter
        Progress and cancellation (of the filtering).
    filtered : ScoreResult, optional
        The difference already filtered by its PSF over its filtered noise
        (:func:`diffviewer.engine.zogy.al_score` of this difference; the renormalisation
        computes it), used instead of filtering again.

    Returns
    -------
    image : numpy.ndarray
        float32 image in units of its predicted noise (0 where not good): the score's
        or the filtered difference's own read-only array, not a copy (a score is 0
        wherever its mask has an unusable plane).
    good : numpy.ndarray
        Boolean map of usable pixels.
    name : str
        ``'score'`` or ``'difference'``.
    """
    if config.detect_on == "score" and score is not None:
        # The score's own mask says where it is valid: ZOGY's S_corr is computed from
        # the inputs and stays valid where the difference's convolution border is EDGE.
        return score.image, planes_clear(score.mask, int(UNUSABLE)), "score"
    if filtered is None:
        filtered = al_score(difference, psf, reporter)
    return filtered.image, planes_clear(filtered.mask, int(UNUSABLE)), "difference"


def _grow(pieces: np.ndarray, radius: int, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grow labelled pieces (1..n) isotropically by ``radius`` px (unchanged for 0).

    A new pixel takes the label of the nearest piece pixel (within the disk
    ``dx^2 + dy^2 <= radius^2 + radius``). Each piece is grown on its own padded
    bounding box, so the cost follows the detections, not the image size: the boxes
    come from the pieces' pixels (``at``, their flat indices, increasing), and the grown
    map's pixels are returned with it (no pass over the whole map for either).

    Returns
    -------
    grown : numpy.ndarray
        The grown pieces (``pieces`` itself when nothing grows).
    at : numpy.ndarray
        Flat indices of its labelled pixels, increasing.
    """
    if radius <= 0 or at.size == 0:
        return pieces, at
    reach = radius * radius + radius
    out = pieces.copy()
    ny, nx = pieces.shape
    rows, cols, _, starts = labelled_pixels(pieces, at)
    ends = np.append(starts, rows.size)
    boxes = zip(
        rows[starts].tolist(),
        (rows[ends[1:] - 1] + 1).tolist(),
        np.minimum.reduceat(cols, starts).tolist(),
        (np.maximum.reduceat(cols, starts) + 1).tolist(),
        strict=True,
    )
    added = [at]
    for top, bottom, left, right in boxes:
        # Distances on a box 2 radius wider, so every piece pixel within reach of a
        # written pixel (at most radius outside this piece's box) is seen.
        y0, x0 = max(top - 2 * radius, 0), max(left - 2 * radius, 0)
        y1, x1 = min(bottom + 2 * radius, ny), min(right + 2 * radius, nx)
        sub = pieces[y0:y1, x0:x1]
        iy, ix = ndimage.distance_transform_edt(
            sub == 0, return_distances=False, return_indices=True
        )
        # Written only within radius of this piece's box (there the nearest is known).
        wy0, wx0 = max(top - radius, y0), max(left - radius, x0)
        wy1, wx1 = min(bottom + radius, y1), min(right + radius, x1)
        win = (slice(wy0 - y0, wy1 - y0), slice(wx0 - x0, wx1 - x0))
        # Squared distances in integers: a float distance squared missed the disk's rim
        # (grow 1 gave 5 px, not 9).
        wy, wx = np.ogrid[wy0 - y0 : wy1 - y0, wx0 - x0 : wx1 - x0]
        d2 = (iy[win] - wy) ** 2 + (ix[win] - wx) ** 2
        target = out[wy0:wy1, wx0:wx1]
        near = (d2 <= reach) & (target == 0)
        target[near] = sub[iy[win][near], ix[win][near]]
        ry, rx = np.nonzero(near)
        added.append((ry + wy0) * nx + (rx + wx0))
    return out, np.sort(np.concatenate(added))


def _pair_lobes(pieces: np.ndarray, n_pos: int, at: np.ndarray) -> np.ndarray:
    """Footprint labels: a positive and a negative piece that touch share one.

    ``pieces`` holds the grown pieces, 1..``n_pos`` positive and the rest negative, at
    the flat indices ``at`` (increasing; the map is read there alone, not scanned). A
    positive and a negative piece that touch (8-connected) share a label, so that
    measurement can test them as a dipole; each piece has at most one partner, the pairs
    with the longest contact first. Labels are 1..n without gaps (0: no footprint).
    """
    flat = pieces.reshape(-1)
    values = flat[at]
    n_all = int(values.max()) if values.size else 0
    ny, nx = pieces.shape
    positive = at[values <= n_pos]
    rows, cols = np.divmod(positive, nx)
    codes = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            on = (rows + dy >= 0) & (rows + dy < ny) & (cols + dx >= 0) & (cols + dx < nx)
            other = np.where(on, flat[np.where(on, positive + dy * nx + dx, 0)], 0)
            touch = other > n_pos
            codes.append(flat[positive[touch]].astype(np.int64) * (n_all + 1) + other[touch])
    pairs, contact = np.unique(np.concatenate(codes), return_counts=True)
    partner = np.arange(n_all + 1)
    taken = np.zeros(n_all + 1, dtype=bool)
    for code in pairs[np.argsort(-contact, kind="stable")].tolist():
        p, q = divmod(code, n_all + 1)
        if not taken[p] and not taken[q]:
            taken[p] = taken[q] = True
            partner[q] = p
    # Every piece holds a pixel: the labels are the pieces without a partner above.
    own = partner == np.arange(n_all + 1)
    number = np.cumsum(own) - 1  # piece 0 (no footprint) is its own and numbered 0
    labels = np.zeros(pieces.shape, dtype=np.int32)
    labels.reshape(-1)[at] = number[partner][values]
    return labels


def _threshold(
    image: np.ndarray,
    good: np.ndarray,
    level: float,
    min_area: int,
    sign: int = 1,
    gap: int = 0,
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The 8-connected groups of pixels of ``sign * image`` above ``level`` (``image``
    below ``-level`` for ``sign`` -1) of at least ``min_area`` px, joined across masked
    gaps of at most ``gap`` px (:func:`_bridges`).

    Returns
    -------
    labels : numpy.ndarray
        Integer map of the kept groups, bridging pixels included (0 elsewhere; the
        numbers may have gaps).
    pixels : numpy.ndarray
        Flat indices of the kept groups' pixels above ``level``, increasing (for
        :func:`~diffviewer.engine.deblend.split_footprints`, which would otherwise scan
        the map for them again: 0.01 s at GOTO's 1850^2).
    bridges : tuple of numpy.ndarray
        Flat indices of the kept groups' bridging pixels (increasing) and the values of
        ``sign * image`` taken there.
    """
    above = good & ((image > level) if sign > 0 else (image < -level))
    # Counted and cleared on the pixels above alone (not image-sized int32 passes).
    at = np.flatnonzero(above)
    across, values = _bridges(above, good, gap, image, sign)
    above.reshape(-1)[across] = True
    labels, n = ndimage.label(above, structure=np.ones((3, 3), dtype=bool))
    del above
    if n == 0:
        return labels, np.zeros(0, dtype=np.intp), (across, values)
    flat = labels.reshape(-1)
    groups = flat[at]
    small = np.bincount(groups, minlength=n + 1) < min_area
    flat[at[small[groups]]] = 0  # in place: no second int32 plane
    dropped = small[flat[across]]
    flat[across[dropped]] = 0
    return labels, at[~small[groups]], (across[~dropped], values[~dropped])


def _bridges(
    above: np.ndarray, good: np.ndarray, gap: int, image: np.ndarray, sign: int
) -> tuple[np.ndarray, np.ndarray]:
    """Masked pixels in a run of at most ``gap`` along a row or column between two
    pixels ``above``, and the higher of those two's ``sign * image`` for each.

    A masked column through a source cuts its pixels above the threshold in two; joined
    across the run, they are one footprint, and the deblender sees neither a dip there
    nor a peak on each side (the run takes the higher end's value: a source centred on
    the column peaks in it). Only the masked pixels are visited.

    Returns
    -------
    at : numpy.ndarray
        Their flat indices, increasing.
    values : numpy.ndarray
        float64 values for them (the highest over a row's and a column's run).
    """
    ny, nx = good.shape
    at = np.flatnonzero(~good) if gap > 0 else np.zeros(0, dtype=np.intp)
    best = np.full(at.size, -np.inf)
    flat_above, flat_good, flat_image = above.reshape(-1), good.reshape(-1), image.reshape(-1)
    rows, cols = np.divmod(at, nx)
    for step, where, size in ((1, cols, nx), (nx, rows, ny)):
        ends: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for way in (-1, 1):
            dist = np.zeros(at.size, dtype=np.int64)  # to the run's first unmasked pixel
            hit = np.zeros(at.size, dtype=bool)
            value = np.zeros(at.size)
            for d in range(1, gap + 1):
                k = where + way * d
                q = np.where((k >= 0) & (k < size), at + way * d * step, -1)
                new = (dist == 0) & ((q < 0) | flat_good[q])
                ok = new & (q >= 0)
                hit[ok] = flat_above[q[ok]]
                value[ok] = sign * flat_image[q[ok]]
                dist[new] = d
            ends.append((hit, dist, value))
        (hit_a, dist_a, value_a), (hit_b, dist_b, value_b) = ends
        joins = hit_a & hit_b & (dist_a + dist_b - 1 <= gap)
        best[joins] = np.maximum(best[joins], np.maximum(value_a, value_b)[joins])
    joined = best > -np.inf
    return at[joined], best[joined]


def _unbridged(pieces: np.ndarray, bridges: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, int]:
    """Pieces without their bridging pixels (:func:`_bridges`), numbered 1..n again.

    ``at``: flat indices of the pieces' other pixels. A piece that held only bridging
    pixels (a peak the deblender found on the values taken there) is gone.
    """
    flat = pieces.reshape(-1)
    flat[bridges] = 0
    if bridges.size == 0:
        return pieces, int(flat[at].max()) if at.size else 0
    kept, number = np.unique(flat[at], return_inverse=True)
    flat[at] = number.astype(np.int32) + 1
    return pieces, int(kept.size)


def _signed_pieces(
    image: np.ndarray,
    good: np.ndarray,
    level: float,
    min_area: int,
    response: np.ndarray,
    gap: int,
    sign: int,
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """The footprints of one sign (:func:`_threshold`, joined across masked gaps of at most
    ``gap`` px) split into one piece per significant peak
    (:func:`~diffviewer.engine.deblend.split_footprints`), their bridging pixels then left
    out of both (:func:`_unbridged`).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, int, numpy.ndarray)
        The footprints' pixels (boolean), the pieces (1..n), n, and the flat indices of
        the pieces' pixels (increasing).
    """
    labels, at, bridges = _threshold(image, good, level, min_area, sign=sign, gap=gap)
    pieces, _ = split_footprints(
        image,
        labels,
        DEBLEND_PROMINENCE,
        response,
        level,
        sign=sign,
        pixels=np.union1d(at, bridges[0]),
        fill=bridges,
    )
    pieces, n = _unbridged(pieces, bridges[0], at)
    labels.reshape(-1)[bridges[0]] = 0
    return labels > 0, pieces, n, at


def _core_width(psf: np.ndarray) -> int:
    """Width (px) of a PSF's core: its central row's pixels at half its maximum or more."""
    half = psf.shape[0] // 2
    row = psf[half]
    return int(np.count_nonzero(row >= row.max() / 2))


def _sky_positions(avoid: np.ndarray, n: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` seeded positions ``radius`` px from ``avoid`` and 2 ``radius`` apart."""
    size = 2 * radius + 1
    # Within ``radius`` px (square) of a pixel to avoid or of the image's edge: scipy's
    # maximum_filter with cval 1, by the separable passes of grown_along (at 4096^2 a
    # third of the time).
    blocked = grown_along(grown_along(avoid, size, 0), size, 1)
    if radius > 0:
        blocked[:radius] = blocked[-radius:] = True
        blocked[:, :radius] = blocked[:, -radius:] = True
    free = ~blocked
    del blocked
    n_free = int(np.count_nonzero(free))
    if n_free == 0 or n == 0:
        return np.zeros(0), np.zeros(0)
    rng = np.random.default_rng(SKY_SOURCE_SEED)
    # The tries as ranks among the free pixels (``rng.choice`` of the free pixels' flat
    # indices draws the same ranks, but those indices took 8 bytes a pixel: the largest
    # part of detection's peak memory).
    tries = _nth_set(free, rng.choice(n_free, size=min(n_free, 20 * n), replace=False))
    xs: list[int] = []
    ys: list[int] = []
    min_sep2 = (2 * radius) ** 2
    for y, x in tries:
        if xs and np.min((np.asarray(xs) - x) ** 2 + (np.asarray(ys) - y) ** 2) < min_sep2:
            continue
        xs.append(x)
        ys.append(y)
        if len(xs) == n:
            break
    return np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)


def _nth_set(hit: np.ndarray, ranks: np.ndarray) -> Iterator[tuple[int, int]]:
    """Row and column of the ``ranks``-th set pixels of a boolean map, in C order.

    One pixel at a time: a column is looked for in its row only when asked for (sky
    sources stop after ``n`` of their ``20 n`` tries; GOTO: 0.01 s less).
    """
    per_row = np.count_nonzero(hit, axis=1)
    ends = np.cumsum(per_row)
    rows = np.searchsorted(ends, ranks, side="right")
    within = ranks - (ends[rows] - per_row[rows])
    for r, w in zip(rows.tolist(), within.tolist(), strict=True):
        yield r, int(np.flatnonzero(hit[r])[w])


def _footprint_table(
    image: np.ndarray,
    labels: np.ndarray,
    pos: np.ndarray,
    neg: np.ndarray,
    at: np.ndarray | None = None,
) -> Table:
    """One row per footprint: signed peak, polarity, area and bounding box.

    Computed over the labelled pixels at once (:func:`labelled_pixels`), not footprint
    by footprint on cutouts (GOTO, 479 footprints: 0.023 -> 0.006 s). ``labels`` holds
    1..n without gaps. The peak is the first pixel in row-major order of the largest
    ``|image|`` over the footprint's thresholded pixels (the top-left corner of its box
    when it has none, as an ``argmax`` over the box finds). ``at``: the flat indices of
    the labelled pixels, increasing, when known.
    """
    rows, cols, present, starts = labelled_pixels(labels, at)
    n = present.size
    ends = np.append(starts, rows.size)
    sizes = np.diff(ends)
    group = np.repeat(np.arange(n), sizes)
    p, q = pos[rows, cols], neg[rows, cols]
    values = np.where(p | q, np.abs(image[rows, cols]), -np.inf)
    ymin = rows[starts] if n else rows
    xmin = np.minimum.reduceat(cols, starts) if n else cols
    top = np.maximum.reduceat(values, starts) if n else values
    # Each footprint's first pixel at its largest value (thresholded pixels are finite).
    hit = np.flatnonzero(values == top[group])
    first = hit[np.unique(group[hit], return_index=True)[1]]
    found = top > -np.inf
    peak_y, peak_x = np.where(found, rows[first], ymin), np.where(found, cols[first], xmin)
    cols_out: dict[str, np.ndarray] = {
        "label": np.arange(1, n + 1, dtype=np.int32),
        "x": peak_x.astype(np.int32),
        "y": peak_y.astype(np.int32),
        "peak_value": image[peak_y, peak_x].astype(np.float32),
        "has_positive": np.logical_or.reduceat(p, starts) if n else p,
        "has_negative": np.logical_or.reduceat(q, starts) if n else q,
        "npix": sizes.astype(np.int32),
        "bbox_xmin": xmin.astype(np.int32),
        "bbox_xmax": (np.maximum.reduceat(cols, starts) if n else cols).astype(np.int32),
        "bbox_ymin": ymin.astype(np.int32),
        "bbox_ymax": rows[ends[1:] - 1].astype(np.int32),
    }
    table = Table(cols_out)
    for name in ("x", "y", "npix", "bbox_xmin", "bbox_xmax", "bbox_ymin", "bbox_ymax"):
        table[name].unit = "pix2" if name == "npix" else "pix"
    return table


def detect_sources(
    difference: Exposure,
    score: ScoreResult | None,
    config: DetectionConfig,
    reporter: Reporter,
    *,
    psf: np.ndarray | PsfModel,
    refuse: str | None = None,
    filtered: ScoreResult | None = None,
) -> Detections:
    """Detect positive and negative sources and merge touching footprints.

    Parameters
    ----------
    difference : Exposure
        The difference (its mask's DETECTED planes are replaced).
    score : ScoreResult or None
        The score, searched when ``config.detect_on == 'score'``; otherwise (or when
        None) the difference filtered with its PSF, over its filtered noise.
    config : DetectionConfig
        Threshold (sigma), minimum area, grow radius, sky sources, guard limit.
    reporter : Reporter
        Progress and cancellation.
    psf : numpy.ndarray or PsfModel
        PSF of the difference (small, odd sides), or its model over the image, for
        searching the difference (:func:`detection_image`).
    refuse : str, optional
        Why no threshold in sigma means anything (the images share their noise): then
        nothing is detected and this is a warning; sky sources are still placed.
    filtered : ScoreResult, optional
        The difference filtered by its PSF (:func:`detection_image`), when already made.

    Returns
    -------
    Detections
    """
    # The filtering checks for cancellation but does not report (its fractions would run
    # the step's progress back).
    image, good, name = detection_image(
        difference, score, config, psf, Reporter(token=reporter.token), filtered
    )
    n_good = int(good.sum())
    noise = sampled_robust_std(image, good) if n_good else float("nan")
    reporter.update(0.1)
    # A refused search thresholds at infinity: no footprint, the rest as usual.
    level = np.inf if refuse is not None else config.threshold
    # Each image-sized intermediate is dropped once used: this step held the run's peak
    # memory (ten int32 planes at once on GOTO).
    # The detection image of a point source: the score's PSF's, or the difference's.
    point = score.psf if name == "score" and score is not None else centre_psf(psf)
    response = point_response(point)
    # Masked gaps narrower than a source's core join its parts (a bad column through a
    # transient): one footprint, its masked pixels in none.
    gap = _core_width(point)
    footprints = functools.partial(_signed_pieces, image, good, level, config.min_area, response)
    pos, pos_pieces, n_pos, at_pos = footprints(gap, 1)
    neg, neg_pieces, _, at_neg = footprints(gap, -1)
    reporter.update(0.3)
    # Grown together: a pixel within reach of pieces of both signs goes to the nearest.
    neg_pieces[neg_pieces > 0] += n_pos
    np.copyto(neg_pieces, pos_pieces, where=neg_pieces == 0)
    del pos_pieces
    # The pieces' pixels are the thresholded ones (of either sign), and growing gives
    # the footprints' pixels: what follows reads and writes them alone (GOTO: seven
    # image-sized passes fewer).
    grown, at = _grow(neg_pieces, config.grow, np.sort(np.concatenate([at_pos, at_neg])))
    del neg_pieces, at_pos, at_neg
    labels = _pair_lobes(grown, n_pos, at)
    det, det_neg = int(MaskPlane.DETECTED), int(MaskPlane.DETECTED_NEGATIVE)
    mask = (difference.mask & ~MASK_DTYPE(det | det_neg)).astype(MASK_DTYPE, copy=False)
    negative = grown.reshape(-1)[at] > n_pos
    del grown
    mask.reshape(-1)[at[~negative]] |= MASK_DTYPE(det)
    mask.reshape(-1)[at[negative]] |= MASK_DTYPE(det_neg)
    reporter.update(0.5)
    table = _footprint_table(image, labels, pos, neg, at)
    del pos, neg
    covered = int(np.count_nonzero(good.reshape(-1)[at]))
    fraction = covered / n_good if n_good else 0.0
    del at
    notes: list[str] = [f"no detection: {refuse}"] if refuse is not None else []
    limit = guard_limit(n_good, centre_psf(psf), config)
    tripped = covered > limit
    if tripped:
        notes.append(
            f"bad-subtraction guard: detections cover {fraction:.1%} of the good "
            f"pixels ({covered} px), more than detection.max_detected_fraction = "
            f"{config.max_detected_fraction:.1%} and the footprints of {GUARD_SOURCES} point "
            f"sources ({limit} px allowed); check the kernel fit and the residuals"
        )
    lo, hi = NOISE_STD_RANGE
    noisy = np.isfinite(noise) and not lo <= noise <= hi and n_good >= MIN_PIXELS_FOR_STDEV
    if noisy and refuse is None:
        notes.append(
            f"the {name} image has a robust noise of {noise:.2f} sigma over its good pixels "
            "where its variance predicts 1: its thresholds are off by that factor "
            "(residuals of a bad subtraction, or variance maps that do not describe the noise)"
        )
    sky_x, sky_y = np.zeros(0), np.zeros(0)
    if config.sky_sources > 0:
        avoid = map_by_rows(
            labels.shape,
            lambda rows: (
                (labels[rows] > 0) | ~good[rows] | ((difference.mask[rows] & int(UNUSABLE)) != 0)
            ),
        )
        sky_x, sky_y = _sky_positions(avoid, config.sky_sources, SKY_SOURCE_RADIUS)
        if sky_x.size < config.sky_sources:
            notes.append(
                f"only {sky_x.size} of detection.sky_sources = {config.sky_sources} "
                f"blank-sky positions fit {SKY_SOURCE_RADIUS} px away from footprints "
                "and masks"
            )
    reporter.update(1.0)
    return Detections(
        segmentation=labels,
        image=image,
        table=table,
        mask=mask,
        detected_fraction=fraction,
        guard_tripped=tripped,
        sky_x=sky_x,
        sky_y=sky_y,
        detection_image=name,
        noise_std=noise,
        warnings=tuple(notes),
    )
