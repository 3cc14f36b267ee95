"""Combine template pieces already on the science grid into one template (the seed's getTemplate).

Where pieces overlap, their images are averaged with one inverse-variance weight per
piece (the inverse of its median variance, :func:`_weight`), using
only the pieces whose pixel is usable there (no plane of :data:`UNUSABLE`) when any
is; the mask is the OR of the contributing pieces' masks, and NO_DATA remains only
where no piece has data. The variance of the average depends on whether two pieces
are independent measurements (two exposures: the variance drops) or the same pixels
cut twice (the patches of one coadd: it does not). That is measured on each overlap:
the RMS of the difference of the two pieces in units of its predicted per-pixel noise
is ~1 for independent pieces and far below 1 for shared pixels
(:data:`SHARED_PIXELS_RMS`); shared pieces are combined as fully correlated, and so are
two pieces whose overlap is too small to judge when shared overlaps link them. PSFs
are averaged with the weight each piece carries in the combination.

Pieces with different zero points are first brought onto one flux scale, the first
zero point given (:func:`flux_scales`), then onto one sky level: each overlap's median
difference over sky pixels gives one offset per piece, by least squares over the
overlaps, the first piece of each connected group held fixed (:func:`sky_offsets`).
Each piece's zero point, scale and offset are returned with the combination
(:class:`PieceScale`). Pieces are added one at a time, each within the box that holds
its data, so that memory does not grow with their number.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Collection, Sequence

import numpy as np
from scipy import ndimage

from diffviewer.errors import NoWorkFound
from diffviewer.exposure import (
    MASK_DTYPE,
    UNUSABLE,
    Exposure,
    MaskPlane,
    planes_clear,
    zero_point_scales,
)
from diffviewer.fits_header import common_header
from diffviewer.stats import robust_std

#: Below this normalised RMS of their difference, two overlapping pieces hold the same
#: pixels (independent ones give ~1; the same pixels warped by transforms 0.05 px apart
#: give ~0.05 on a sky-dominated image).
SHARED_PIXELS_RMS = 0.3
#: Fewest overlapping pixels for that measurement.
MIN_OVERLAP = 100
#: A pixel is sky on a piece within this many of its per-pixel sigmas of the piece's
#: median over the overlap.
SKY_CLIP = 3.0
#: An offset this many times its error or more is said in a note.
OFFSET_SIGNIFICANCE = 3.0
#: Standard error of a median against that of a mean, for Gaussian noise (sqrt(pi / 2)).
MEDIAN_ERROR = 1.2533

#: FWHM of a Gaussian over its sigma.
FWHM_PER_SIGMA = 2.3548

_NO_DATA = int(MaskPlane.NO_DATA)


@dataclasses.dataclass(frozen=True)
class PieceScale:
    """How one piece was put on the combination's flux scale.

    Attributes
    ----------
    zero_point : float or None
        The piece's own zero point (AB mag of one image unit), None when it has none.
    scale : float
        The factor its pixels were multiplied by (its variance by the square).
    sky_offset : float
        What was then subtracted from its pixels (on the combination's zero point);
        0 for a piece held fixed or without a measured overlap.
    sky_offset_error : float
        That offset's standard error (0 where the offset is 0).
    """

    zero_point: float | None
    scale: float
    sky_offset: float = 0.0
    sky_offset_error: float = 0.0


@dataclasses.dataclass(frozen=True)
class Combination:
    """The combined template and how each piece entered it.

    Attributes
    ----------
    exposure : Exposure
        The combined template, on the reference zero point.
    notes : tuple of str
        What the user should know.
    pieces : tuple of PieceScale
        One per piece, in order.
    """

    exposure: Exposure
    notes: tuple[str, ...]
    pieces: tuple[PieceScale, ...]


def _named(indices: Sequence[int], pieces: Sequence[Exposure]) -> str:
    """'template piece 2 (b.fits)' or 'template pieces 1 (a.fits) and 3 (c.fits)'."""
    names = [f"{i + 1} ({pieces[i].source})" for i in indices]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"template piece{'s' if len(names) > 1 else ''} {listed}"


def flux_scales(
    pieces: Sequence[Exposure], used: Sequence[bool] | None = None
) -> tuple[float | None, np.ndarray, tuple[str, ...]]:
    """The reference zero point and the factor that puts each piece on it.

    Piece ``i`` is multiplied by ``10 ** (0.4 (zp_ref - zp_i))``; the reference is the
    first zero point given among the pieces used, so the combination's does not depend
    on which piece lacks one. A piece without a zero point is taken as on the
    reference scale, and said.

    Parameters
    ----------
    pieces : sequence of Exposure
        The pieces.
    used : sequence of bool, optional
        Which pieces enter the combination (all when None).

    Returns
    -------
    (float or None, numpy.ndarray, tuple of str)
        The reference zero point (mag; None when no piece used has one), the scales and
        a note when only some pieces used have a zero point.
    """
    used = [True] * len(pieces) if used is None else list(used)
    reference, scales = zero_point_scales([p.zero_point for p in pieces], used)
    if reference is None:
        return None, scales, ()
    first = next(i for i, p in enumerate(pieces) if used[i] and p.zero_point is not None)
    missing = [i for i, p in enumerate(pieces) if used[i] and p.zero_point is None]
    notes: tuple[str, ...] = ()
    if missing:
        notes = (
            f"{_named(missing, pieces)}: no zero point, where the other pieces have one; "
            f"taken as on the scale of zero point {reference:g} mag (template piece "
            f"{first + 1}'s); give every piece its zero "
            "point (MAGZP)",
        )
    return reference, scales, notes


Box = tuple[slice, slice]
#: The overlap of two pieces ``(i, j)``, each cropped to it and on the combination's
#: flux scale (and sky level, once known); None where they do not overlap.
PairCrops = Callable[[int, int], "tuple[Exposure, Exposure] | None"]


def _data_box(piece: Exposure) -> Box | None:
    """The smallest box holding all of a piece's pixels with data, or None."""
    has_data = planes_clear(piece.mask, _NO_DATA)
    rows, cols = np.flatnonzero(has_data.any(axis=1)), np.flatnonzero(has_data.any(axis=0))
    if rows.size == 0:
        return None
    return np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _intersection(a: Box | None, b: Box | None) -> Box | None:
    """Where two boxes meet, or None."""
    if a is None or b is None:
        return None
    (ay, ax), (by, bx) = a, b
    y0, y1 = max(ay.start, by.start), min(ay.stop, by.stop)
    x0, x1 = max(ax.start, bx.start), min(ax.stop, bx.stop)
    return np.s_[y0:y1, x0:x1] if y0 < y1 and x0 < x1 else None


def _calibrated(piece: Exposure, box: Box, scale: float, offset: float) -> Exposure:
    """A piece cropped to ``box``, times ``scale`` (its variance by the square), less
    ``offset``."""
    image = np.asarray(piece.image[box], dtype=np.float64) * scale - offset
    return piece.replace(
        image=image.astype(np.float32),
        variance=(np.asarray(piece.variance[box], dtype=np.float64) * scale**2).astype(np.float32),
        mask=piece.mask[box],
        wcs=None,
    )


def _pair_crops(
    pieces: Sequence[Exposure],
    boxes: Sequence[Box | None],
    scales: np.ndarray,
    offsets: np.ndarray,
    fwhm: Sequence[float] | None = None,
    same: Collection[tuple[int, int]] = (),
) -> PairCrops:
    """The :data:`PairCrops` of ``pieces`` with these scales and offsets (the overlap's
    copies only: the pieces are not copied whole); with ``fwhm`` (px, NaN: unknown), the
    narrower of two pieces whose PSFs differ is smoothed to the broader's
    (:func:`_matched`), unless the pair is among ``same``, the pairs that hold the same
    pixels (:func:`shared_pairs`): one PSF there, whatever each whole piece's (smoothing
    one copy of identical pixels made their median differ by 0.16 +- 0.05 counts)."""

    def crops(i: int, j: int) -> tuple[Exposure, Exposure] | None:
        box = _intersection(boxes[i], boxes[j])
        if box is None:
            return None
        a = _calibrated(pieces[i], box, float(scales[i]), float(offsets[i]))
        b = _calibrated(pieces[j], box, float(scales[j]), float(offsets[j]))
        if fwhm is None or not (np.isfinite(fwhm[i]) and np.isfinite(fwhm[j])):
            return a, b
        if (i, j) in same:
            return a, b
        if fwhm[i] < fwhm[j]:
            return _matched(a, b.good_pixels(), fwhm[i], fwhm[j]), b
        return a, _matched(b, a.good_pixels(), fwhm[j], fwhm[i])

    return crops


def _matched(piece: Exposure, other_good: np.ndarray, narrow: float, broad: float) -> Exposure:
    """A (cropped) piece of PSF FWHM ``narrow`` (px) smoothed by the Gaussian that
    broadens it to ``broad``, over the pixels good on it and on ``other_good``
    (normalised convolution): its faint light then spreads as the broader piece's does,
    whose median sky is higher by the light of sources too faint to pick out."""
    if broad <= narrow:
        return piece
    sigma = np.sqrt(broad**2 - narrow**2) / FWHM_PER_SIGMA
    good = (piece.good_pixels() & other_good).astype(np.float64)
    image = np.where(good > 0, piece.image, 0.0)
    weight = ndimage.gaussian_filter(good, sigma, mode="constant")
    smooth = ndimage.gaussian_filter(image, sigma, mode="constant") / np.maximum(weight, 1e-12)
    return piece.replace(image=np.where(good > 0, smooth, piece.image).astype(np.float32))


def _contributes(piece: Exposure, box: Box, usable_anywhere: np.ndarray) -> np.ndarray:
    """Where in ``box`` a piece enters the combination: its usable pixels where any
    piece has one, else its pixels with data; with a finite positive variance."""
    mask, variance = piece.mask[box], piece.variance[box]
    use = np.where(usable_anywhere[box], (mask & int(UNUSABLE)) == 0, (mask & _NO_DATA) == 0)
    return use & np.isfinite(variance) & (variance > 0)


def _weight(piece: Exposure, box: Box, used: np.ndarray, scale: float) -> float:
    """A piece's weight: the inverse of its median variance (on the combination's flux
    scale) over the pixels it contributes, its sky's, as a coadd weights its inputs; 0
    when it contributes none. A weight per pixel from a variance plane that holds the
    sources' Poisson noise would weight each star's core towards the piece with the
    broader PSF and break the sum of its flux."""
    if not used.any():
        return 0.0
    return 1.0 / (float(np.median(piece.variance[box][used])) * scale**2)


def shared_pixels(
    a: Exposure, b: Exposure, factor_a: float = 1.0, factor_b: float = 1.0
) -> tuple[bool, float]:
    """Whether two pieces hold the same pixels where both are usable.

    Parameters
    ----------
    a, b : Exposure
        Two pieces on one grid and flux scale.
    factor_a, factor_b : float
        Their covariance factors: a warped piece's variance plane is its per-pixel
        variance times it (:func:`diffviewer.engine.warp.at_psf_scale`), and pixels
        are compared with their per-pixel noise.

    Returns
    -------
    (bool, float)
        The verdict and the robust RMS of ``(a - b) / sqrt(var_a / factor_a + var_b /
        factor_b)`` over the overlap (NaN with fewer than :data:`MIN_OVERLAP` pixels:
        taken as independent).
    """
    both = a.good_pixels() & b.good_pixels()
    if both.sum() < MIN_OVERLAP:
        return False, float("nan")
    va = a.variance[both].astype(np.float64) / factor_a
    vb = b.variance[both].astype(np.float64) / factor_b
    z = (a.image[both].astype(np.float64) - b.image[both]) / np.sqrt(va + vb)
    rms = robust_std(z)
    return bool(rms < SHARED_PIXELS_RMS), rms


def _first_linked(n: int, links: Sequence[tuple[int, int]]) -> list[int]:
    """For each of ``n`` pieces, the first piece of its group: those linked by a chain of
    ``links`` (pairs of piece indices)."""
    first = list(range(n))

    def root(k: int) -> int:
        while first[k] != k:
            k = first[k]
        return k

    for i, j in links:
        a, b = root(i), root(j)
        first[max(a, b)] = min(a, b)
    return [root(k) for k in range(n)]


def shared_pairs(
    n: int, crops: PairCrops, covariance_factors: Sequence[float]
) -> tuple[list[tuple[int, int]], list[str]]:
    """The pairs of pieces that hold the same pixels where they overlap.

    A pair is judged on its overlap (:func:`shared_pixels`); one whose overlap is too
    small to judge (a corner where diagonal tiles meet) shares the pixels when a chain of
    pairs judged the same pixels links the two, as the tiles of one coadd are linked.

    Parameters
    ----------
    n : int
        Number of pieces.
    crops : PairCrops
        Each pair's overlap, on one flux scale and sky level.
    covariance_factors : sequence of float
        The pieces' covariance factors.

    Returns
    -------
    (list of (int, int), list of str)
        The pairs ``(i, j)``, ``i < j``, and a note for each pair judged so.
    """
    judged: dict[tuple[int, int], bool] = {}
    notes = []
    for i, j in itertools.combinations(range(n), 2):
        overlap = crops(i, j)
        if overlap is None:
            continue
        shared, rms = shared_pixels(*overlap, covariance_factors[i], covariance_factors[j])
        if np.isfinite(rms):
            judged[i, j] = shared
        if shared:
            notes.append(
                f"template pieces {i + 1} and {j + 1} hold the same pixels where they overlap "
                f"(their difference is {rms:.2f} of its noise): averaged there without "
                "reducing the variance"
            )
    group = _first_linked(n, [pair for pair, shared in judged.items() if shared])
    pairs = [
        (i, j)
        for i, j in itertools.combinations(range(n), 2)
        if judged.get((i, j), group[i] == group[j])
    ]
    return pairs, notes


def _overlap_offset(
    a: Exposure, b: Exposure, factor_a: float, factor_b: float
) -> tuple[float, float] | None:
    """The median of ``a - b`` over the sky pixels both hold and its standard error, or
    None with fewer than :data:`MIN_OVERLAP` of them.

    A pixel is sky on a piece within :data:`SKY_CLIP` per-pixel sigmas (the variance
    plane over the covariance factor) of the piece's median over the overlap; the error
    counts ``max(factor_a, factor_b)`` correlated pixels as one.
    """
    both = a.good_pixels() & b.good_pixels()
    if both.sum() < MIN_OVERLAP:
        return None
    va, vb = a.image[both].astype(np.float64), b.image[both].astype(np.float64)
    sa = np.sqrt(a.variance[both] / factor_a)
    sb = np.sqrt(b.variance[both] / factor_b)
    sky = (np.abs(va - np.median(va)) < SKY_CLIP * sa) & (
        np.abs(vb - np.median(vb)) < SKY_CLIP * sb
    )
    if sky.sum() < MIN_OVERLAP:
        return None
    difference = va[sky] - vb[sky]
    spread = robust_std(difference) * np.sqrt(max(factor_a, factor_b) / sky.sum())
    return float(np.median(difference)), float(MEDIAN_ERROR * spread)


def sky_offsets(
    n: int, crops: PairCrops, covariance_factors: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """One sky offset per piece, from the median differences over their overlaps.

    Each overlap of :data:`MIN_OVERLAP` sky pixels or more gives ``o_i - o_j`` and its
    error (:func:`_overlap_offset`); the offsets are their weighted least-squares
    solution with the first piece of each group of overlapping pieces held at 0.

    Parameters
    ----------
    n : int
        Number of pieces.
    crops : PairCrops
        Each pair's overlap, on one flux scale.
    covariance_factors : sequence of float
        The pieces' covariance factors (:func:`shared_pixels`).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The offsets (to subtract from each piece) and their standard errors; 0 for a
        piece held fixed or without an overlap measured.
    """
    rows, values, errors, links = [], [], [], []
    for i, j in itertools.combinations(range(n), 2):
        overlap = crops(i, j)
        measured = (
            None
            if overlap is None
            else _overlap_offset(*overlap, covariance_factors[i], covariance_factors[j])
        )
        if measured is None:
            continue
        row = np.zeros(n)
        row[i], row[j] = 1.0, -1.0
        rows.append(row)
        values.append(measured[0])
        errors.append(max(measured[1], 1e-12))
        links.append((i, j))
    group = _first_linked(n, links)
    offsets, sigmas = np.zeros(n), np.zeros(n)
    free = [k for k in range(n) if group[k] != k]
    if not free:
        return offsets, sigmas
    weight = 1.0 / np.array(errors)
    design = np.array(rows)[:, free] * weight[:, None]
    solution = np.linalg.lstsq(design, np.array(values) * weight, rcond=None)[0]
    offsets[free] = solution
    sigmas[free] = np.sqrt(np.diag(np.linalg.pinv(design.T @ design)))
    return offsets, sigmas


def _combined_saturation(
    pieces: Sequence[Exposure], scales: np.ndarray, offsets: np.ndarray
) -> tuple[str, float] | None:
    """The combination's saturation level: the lowest of the pieces' on its flux scale
    and sky (each piece's level times its scale, less its sky offset), where it came from
    that piece's; None unless every piece has one (the pieces used: those with data)."""
    known = [p.saturation for p in pieces if p.saturation is not None]
    if len(known) < len(pieces):
        return None
    level, label = min(
        (level * float(scale) - float(offset), label)
        for (label, level), scale, offset in zip(known, scales, offsets, strict=True)
    )
    return label, level


def combine_pieces(
    pieces: Sequence[Exposure],
    covariance_factors: Sequence[float] | None = None,
    fwhm: Sequence[float] | None = None,
    why_unused: Sequence[str] | None = None,
) -> Combination:
    """One template on the science grid from pieces on that grid.

    Parameters
    ----------
    pieces : sequence of Exposure
        The warped pieces (same shape, NO_DATA where a piece has no data).
    covariance_factors : sequence of float, optional
        Each piece's covariance factor (:func:`shared_pixels`); 1 (not resampled) when
        not given.
    fwhm : sequence of float, optional
        Each piece's PSF FWHM (px; NaN: not measured): the sky offsets are measured with
        the narrower of two pieces smoothed to the broader's PSF.
    why_unused : sequence of str, optional
        Each piece's cause, should it have no data on the grid (how it was placed),
        added to the note that names it unused; empty: none given.

    Returns
    -------
    Combination
        The combination (the first piece's WCS; the header cards the pieces used agree
        on, and one ``PIECEn`` card naming each piece,
        :func:`~diffviewer.fits_header.common_header`; the reference zero point of
        :func:`flux_scales`), notes and each piece's zero point, scale and sky offset.

    Raises
    ------
    NoWorkFound
        When no piece has data anywhere.
    """
    present = [bool(planes_clear(p.mask, _NO_DATA).any()) for p in pieces]
    zero_point, scales, scale_notes = flux_scales(pieces, present)
    record = tuple(PieceScale(p.zero_point, float(s)) for p, s in zip(pieces, scales, strict=True))
    if len(pieces) == 1:
        return Combination(pieces[0], (), record)
    why = list(why_unused) if why_unused is not None else [""] * len(pieces)
    notes = [
        f"template piece {i + 1} ({p.source}) has no data on the science image: not used"
        + (f" ({why[i]})" if why[i] else "")
        for i, p in enumerate(pieces)
        if not present[i]
    ]
    notes.extend(scale_notes)
    n = len(pieces)
    factors = [1.0] * n if covariance_factors is None else list(covariance_factors)
    boxes = [_data_box(p) for p in pieces]
    # Which pieces hold the same pixels (judged on the spread of their difference, which
    # a sky offset between them does not change), then their offsets, unsmoothed there.
    pairs, shared_notes = shared_pairs(n, _pair_crops(pieces, boxes, scales, np.zeros(n)), factors)
    offsets, offset_errors = sky_offsets(
        n, _pair_crops(pieces, boxes, scales, np.zeros(n), fwhm, set(pairs)), factors
    )
    record = tuple(
        dataclasses.replace(r, sky_offset=float(o), sky_offset_error=float(e))
        for r, o, e in zip(record, offsets, offset_errors, strict=True)
    )
    significant = np.abs(offsets) >= OFFSET_SIGNIFICANCE * offset_errors
    if np.any(significant & (offsets != 0.0)):
        listed = ", ".join(
            # (the same pixels give an offset exactly: its error is a rounding's)
            f"piece {k + 1} {offsets[k]:+.3g} +- "
            f"{offset_errors[k] if offset_errors[k] > 1e-6 * abs(offsets[k]) else 0.0:.2g}"
            for k in range(n)
            if offsets[k] != 0.0
        )
        notes.append(
            "the template pieces' sky levels differ where they overlap: the median "
            f"differences over sky pixels give offsets subtracted from them ({listed}; in "
            "the template's units, the first piece of each overlapping group held fixed)"
        )
    notes.extend(shared_notes)
    # Accumulated piece by piece, each within its box (no stack of N full planes):
    # the weighted sum, the weights' sum and Var(sum w_i x_i) = sum_ij w_i w_j rho_ij
    # s_i s_j with rho_ij = 1 for shared pixels.
    shape = pieces[0].shape
    usable_anywhere = np.zeros(shape, dtype=bool)
    for piece, box in zip(pieces, boxes, strict=True):
        if box is not None:
            usable_anywhere[box] |= planes_clear(piece.mask[box], int(UNUSABLE))
    total, weighted, spread = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    mask = np.zeros(shape, dtype=MASK_DTYPE)
    weights, share = np.zeros(n), np.zeros(n)
    for k, (piece, box, scale, offset) in enumerate(
        zip(pieces, boxes, scales, offsets, strict=True)
    ):
        if box is None:
            continue
        used = _contributes(piece, box, usable_anywhere)
        weights[k] = _weight(piece, box, used, float(scale))
        share[k] = weights[k] * np.count_nonzero(used)
        total[box][used] += weights[k]
        weighted[box][used] += weights[k] * (
            scale * piece.image[box][used].astype(np.float64) - offset
        )
        spread[box][used] += (weights[k] * scale) ** 2 * piece.variance[box][used]
        mask[box][used] |= piece.mask[box][used].astype(MASK_DTYPE)
    for i, j in pairs:
        box = _intersection(boxes[i], boxes[j])
        if box is None:
            continue
        both = _contributes(pieces[i], box, usable_anywhere) & _contributes(
            pieces[j], box, usable_anywhere
        )
        product = pieces[i].variance[box][both].astype(np.float64) * pieces[j].variance[box][both]
        spread[box][both] += (
            2.0 * weights[i] * weights[j] * scales[i] * scales[j] * np.sqrt(product)
        )
    covered = total > 0
    if not covered.any():
        raise NoWorkFound("no template piece has data on the science image")
    safe = np.where(covered, total, 1.0)
    image = np.where(covered, weighted / safe, 0.0)
    variance = np.where(covered, spread / safe**2, np.median(1.0 / total[covered]))
    del weighted, spread
    mask[~covered] |= MASK_DTYPE(_NO_DATA)
    psfs = [p.psf for p, s in zip(pieces, share, strict=True) if s > 0 and p.psf is not None]
    psf = None
    if len(psfs) == np.count_nonzero(share) and len({p.shape for p in psfs}) == 1:
        stacked = np.einsum("i,ijk->jk", share[share > 0], np.stack(psfs))
        psf = stacked / stacked.sum()
    elif psfs:
        notes.append(
            "the template pieces' PSF images are missing on some or differ in size: the "
            "combined template's PSF is measured on it instead"
        )
    first = pieces[0]
    combined = first.replace(
        header=common_header(
            [p.header for p, s in zip(pieces, share, strict=True) if s > 0],
            [p.source for p in pieces],
        ),
        image=image,
        variance=variance,
        mask=mask,
        psf=psf,
        source=" + ".join(p.source for p in pieces),
        zero_point=zero_point,
        variance_estimated=any(p.variance_estimated for p in pieces),
        saturation=_combined_saturation(
            [p for p, used in zip(pieces, present, strict=True) if used],
            scales[present],
            offsets[present],
        ),
    )
    return Combination(combined, tuple(notes), record)
