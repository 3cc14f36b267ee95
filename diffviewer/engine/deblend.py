"""Deblending of thresholded footprints: one piece per significant peak.

A footprint above the threshold on the detection image (the score, or the difference
filtered with its PSF; both in units of their noise) can hold several sources: a
transient next to the subtraction residual of a neighbour, two transients. As
SExtractor's multi-threshold deblending and LSST's peak finding do, the footprint is
split at its peaks, but only at the peaks that the noise cannot have made. A peak is
significant when either

- it rises at least ``prominence`` sigma above the highest saddle that joins it to a
  higher peak of the same footprint (its topographic prominence within the footprint;
  the highest peak always counts), beyond what sampling a crest alone makes it rise
  (the point response half a pixel off its peak, short of 1, times the peak's height:
  2.7 % at FWHM 3.5 px, so that a streak's crest at S/N 100, crossing pixel rows, rose
  3 sigma again and again), or
- what is left of it once the higher significant peaks are taken away as point
  sources (each the detection image's response to a point source, :func:`point_response`,
  scaled to what was left of that peak) is itself above the detection threshold: a
  source the threshold detects on its own. Two point sources a couple of FWHM apart
  join at a saddle only 1-2 sigma below the fainter (issue 12's pair: an S/N 20
  transient 7 px from another rose 1.7 sigma), while the noise on a point source's
  wing leaves about 1 sigma once the source is taken away. This second test holds
  only in a footprint that is a blend of point sources: once its kept peaks are taken
  away so, nothing rises ``prominence`` above what they explain. Along a streak or over
  an extended source the image barely drops between noise peaks and each is left above
  the threshold (a 100 px streak at S/N 10 became 13-16 sources), but the ridge between
  them stays unexplained (5-10 sigma at S/N 10); such a footprint splits by prominence
  alone.

Each pixel belongs to the peak whose basin it lies in (following its highest neighbour
uphill, a watershed), and the basin of a peak that is not significant to the
significant peak it merges into first.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from diffviewer.engine.fftconv import convolve

#: 8-connectivity: the neighbours of a pixel, as offsets in (dy, dx).
_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def point_response(psf: np.ndarray) -> np.ndarray:
    """The detection image of a point source, peak 1: the PSF's autocorrelation.

    A point source ``f P`` filtered by ``flip(P)`` is ``f (P (x) flip(P))``, the same
    shape for the PSF-filtered difference and for a score made by filtering with its
    PSF; over the filtered noise it peaks at the source's S/N.

    Parameters
    ----------
    psf : numpy.ndarray
        The PSF of the image that was filtered (small, odd sides).

    Returns
    -------
    numpy.ndarray
        Odd square array (twice the PSF's side less one), centred, maximum 1.
    """
    auto = convolve(psf, psf[::-1, ::-1])
    return auto / auto.max()


def _pieces(
    values: np.ndarray, inside: np.ndarray, prominence: float, response: np.ndarray, level: float
) -> np.ndarray:
    """Pieces 1..k (0 outside) of one footprint's cutout, by significant peak.

    Pixels are visited from the highest down; a union-find keeps the connected groups
    seen so far and the highest peak of each. When a pixel joins groups, every group
    but the one with the highest peak ends there: its peak's prominence is the peak
    minus this pixel (the saddle). Then, from the highest peak down, a peak is kept
    when its prominence or what is left of it once the kept peaks are taken away as
    point sources (``response`` scaled to what was left of each) is significant.
    """
    ny, nx = values.shape
    width = nx + 2
    padded = np.full((ny + 2, width), -np.inf)
    padded[1:-1, 1:-1] = np.where(inside, values, -np.inf)
    flat = padded.ravel()
    visit = np.flatnonzero(np.isfinite(flat))
    visit = visit[np.argsort(-flat[visit], kind="stable")]
    offsets = [dy * width + dx for dy, dx in _NEIGHBOURS]
    height = flat.tolist()
    basin = [-1] * flat.size
    parent = list(range(flat.size))
    top = list(range(flat.size))  # the highest peak of a group, read at its root
    peaks: list[int] = []
    rank: dict[int, int] = {}  # peak -> its place in ``peaks``
    ends: dict[int, tuple[float, int]] = {}  # peak -> (prominence, the peak it merged into)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for p in visit.tolist():
        best, groups = -1, set()
        for o in offsets:
            q = p + o
            if basin[q] >= 0:
                if best < 0 or height[q] > height[best]:
                    best = q
                groups.add(root(q))
        if best < 0:  # a new peak
            basin[p] = p
            rank[p] = len(peaks)
            peaks.append(p)
            continue
        basin[p] = basin[best]
        # Of peaks of one height, the first found wins: it comes first in ``peaks``, so
        # that a merged peak's owner is known when :func:`_owners` reaches it.
        winner = max(groups, key=lambda g: (height[top[g]], -rank[top[g]]))
        for g in groups - {winner}:
            ends[top[g]] = (height[top[g]] - height[p], top[winner])
            parent[g] = winner
        parent[p] = winner

    owner = _owners(peaks, ends, height, width, prominence, response, level, values, inside)
    kept = [peak for peak in peaks if owner[peak] == peak]
    number = {peak: k + 1 for k, peak in enumerate(kept)}
    out = np.zeros(flat.size, dtype=np.int32)
    for p in visit.tolist():
        out[p] = number[owner[basin[p]]]
    return out.reshape(ny + 2, width)[1:-1, 1:-1]


def _owners(
    peaks: list[int],
    ends: dict[int, tuple[float, int]],
    height: list[float],
    width: int,
    prominence: float,
    response: np.ndarray,
    level: float,
    values: np.ndarray,
    inside: np.ndarray,
) -> dict[int, int]:
    """The kept peak that each peak's basin joins (a kept peak's is itself).

    ``peaks`` are flat indices on the cutout padded by one pixel (``width`` its row
    length), highest first; ``ends`` gives each merged peak's prominence and the peak it
    merged into. A peak is kept for its prominence (beyond the rise its sampling makes),
    or for what is left of it once the kept peaks are taken away as point sources
    (``response`` scaled to what was left of each) reaching ``level``. The second test
    stands only when the footprint is a blend of point sources: once every kept peak is
    taken away so, nothing of ``values`` over ``inside`` rises ``prominence`` above them
    (a streak or an extended source keeps its ridge between the peaks taken away, and
    splits by prominence alone).
    """
    half = response.shape[0] // 2
    # What a crest's sampling alone makes it rise: the response half a pixel off its
    # peak short of 1 (for a Gaussian its value a pixel off, to the power 1/4), per
    # unit of the peak's height; a response that falls to 0 or below a pixel off (a PSF
    # measured on noise, which swings from row to row) can make a crest rise its all.
    off = min(response[half, half + 1], response[half + 1, half])
    ripple = 1.0 - max(float(off), 0.0) ** 0.25
    bar = {peak: prominence + ripple * height[peak] for peak in peaks}

    def choose(least: float) -> tuple[dict[int, int], dict[tuple[int, int], float]]:
        # Peaks in the order they appeared (highest first): a merged peak's owner is known.
        owner: dict[int, int] = {}
        left: dict[tuple[int, int], float] = {}  # a kept peak's (y, x) -> what was left
        for peak in peaks:
            y, x = divmod(peak, width)
            own = height[peak] - sum(
                amp * float(response[half + y - ky, half + x - kx])
                for (ky, kx), amp in left.items()
                if abs(y - ky) <= half and abs(x - kx) <= half
            )
            if peak in ends and ends[peak][0] < bar[peak] and own < least:
                owner[peak] = owner[ends[peak][1]]
            else:
                owner[peak] = peak
                left[(y, x)] = own
        return owner, left

    owner, left = choose(level)
    by_rise = sum(1 for peak in peaks if peak not in ends or ends[peak][0] >= bar[peak])
    if len(left) > by_rise and _unexplained(values, inside, left, response) >= prominence:
        owner, _ = choose(np.inf)
    return owner


def _unexplained(
    values: np.ndarray,
    inside: np.ndarray,
    sources: dict[tuple[int, int], float],
    response: np.ndarray,
) -> float:
    """Largest part of ``values`` over ``inside`` that the point sources do not explain.

    ``sources`` maps positions (y, x), 1-based on the cutout (as on its one-pixel
    padding), to peak amplitudes of ``response`` (odd square, centred, peak 1). A peak
    pixel is up to 0.7 px from its source, which leaves up to 0.14 of a source's peak
    unexplained by a response centred there (14 sigma at S/N 100, beside an 8 px
    neighbour of S/N 10): each source is taken as the most its response reaches within
    a pixel of it.
    """
    half = response.shape[0] // 2
    ny, nx = values.shape
    reach = ndimage.maximum_filter(response, size=3, mode="constant")
    model = np.zeros((ny + 2 * half, nx + 2 * half))
    for (y, x), amp in sources.items():
        model[y - 1 : y - 1 + 2 * half + 1, x - 1 : x - 1 + 2 * half + 1] += amp * reach
    residual = values - model[half : half + ny, half : half + nx]
    return float(residual[inside].max())


def labelled_pixels(
    labels: np.ndarray, at: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The labelled pixels of a label map, grouped by label.

    One pass over the map (none when ``at`` is given), then work on its labelled pixels
    alone: the per-label loops of detection read them instead of cutting each label's
    box out of the map (:func:`scipy.ndimage.find_objects` is a pass of its own).

    Parameters
    ----------
    labels : numpy.ndarray
        2-D integer label map (0: no label).
    at : numpy.ndarray, optional
        Flat indices of its labelled pixels, increasing, when known.

    Returns
    -------
    rows, cols : numpy.ndarray
        The labelled pixels, by increasing label and in row-major order within a label.
    present : numpy.ndarray
        The labels that hold a pixel, increasing.
    starts : numpy.ndarray
        Index in ``rows`` of each present label's first pixel.
    """
    if at is None:
        at = np.flatnonzero(labels.reshape(-1) != 0)
    lab = labels.reshape(-1)[at]
    order = np.argsort(lab, kind="stable")
    at, lab = at[order], lab[order]
    rows, cols = np.divmod(at, labels.shape[1])
    starts = np.flatnonzero(np.concatenate([[True], lab[1:] != lab[:-1]])) if lab.size else order
    return rows, cols, lab[starts], starts


def _peak_counts(
    image: np.ndarray, groups: np.ndarray, pixels: tuple[np.ndarray, ...], sign: int
) -> np.ndarray:
    """Number of local maxima of ``sign * image`` in each group (:func:`labelled_pixels`).

    A local maximum is a pixel at least as high as each of its 8 neighbours in its group.
    """
    rows, cols, present, starts = pixels
    values = sign * image[rows, cols]
    own = np.repeat(present, np.diff(np.append(starts, rows.size)))
    peak = np.ones(rows.size, dtype=bool)
    ny, nx = groups.shape
    for dy, dx in _NEIGHBOURS:
        r, c = rows + dy, cols + dx
        on = (r >= 0) & (r < ny) & (c >= 0) & (c < nx)
        r, c = np.where(on, r, 0), np.where(on, c, 0)
        beside = on & (groups[r, c] == own)
        peak &= ~beside | (values >= sign * image[r, c])
    return np.add.reduceat(peak.astype(np.int64), starts) if starts.size else starts


def split_footprints(
    image: np.ndarray,
    groups: np.ndarray,
    prominence: float,
    response: np.ndarray,
    level: float,
    *,
    sign: int = 1,
    pixels: np.ndarray | None = None,
    fill: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, int]:
    """Label the thresholded pixels by footprint, one label per significant peak.

    Parameters
    ----------
    image : numpy.ndarray
        The detection image (sigma).
    groups : numpy.ndarray
        Integer map of the kept footprints (8-connected groups of thresholded pixels;
        0 elsewhere; the numbers may have gaps).
    prominence : float
        Least rise (sigma) of a peak above its saddle to a higher peak of the same
        footprint for it to become a source of its own.
    response : numpy.ndarray
        The detection image of a point source, peak 1 (:func:`point_response`; odd
        square, centred).
    level : float
        The detection threshold (sigma): a peak with less rise is still a source of its
        own when what is left of it once the higher kept peaks are taken away as point
        sources is at least this, in a footprint those point sources explain.
    sign : int
        1 to split the footprints of ``image``, -1 those of ``-image`` (negated box by
        box: a whole negated plane was the largest part of detection's peak memory).
    pixels : numpy.ndarray, optional
        Flat indices of the footprints' pixels, increasing, when known (else found).
    fill : tuple of numpy.ndarray, optional
        Flat indices of footprint pixels where ``image`` is not read (masked pixels that
        join a footprint's parts) and the values of ``sign * image`` taken there.

    Returns
    -------
    labels : numpy.ndarray
        int32 map, 0 outside the footprints, 1..n inside: a footprint with a single
        significant peak keeps one label.
    n : int
        Number of labels.
    """
    found = labelled_pixels(groups, pixels)
    rows, cols, present, starts = found
    # Most footprints hold one peak and keep one label: counted over the thresholded
    # pixels at once, not by a maximum filter on each box (GOTO: 393 footprints,
    # 0.07 -> 0.03 s with the labelling below).
    counts = _peak_counts(image, groups, found, sign)
    ends = np.append(starts, rows.size)
    first = np.zeros(present.size, dtype=np.int64)  # each footprint's first label
    out = np.zeros(groups.shape, dtype=np.int32)
    n = 0
    for g, k in enumerate(present.tolist()):
        first[g] = n + 1
        if counts[g] < 2:
            n += 1
            continue
        sl = slice(starts[g], ends[g + 1])
        box = (
            slice(int(rows[sl].min()), int(rows[sl].max()) + 1),
            slice(int(cols[sl].min()), int(cols[sl].max()) + 1),
        )
        inside = groups[box] == k
        part = (sign * image[box]).astype(np.float64)
        if fill is not None:
            fy, fx = np.divmod(fill[0], groups.shape[1])
            on = (fy >= box[0].start) & (fy < box[0].stop)
            on &= (fx >= box[1].start) & (fx < box[1].stop)
            part[fy[on] - box[0].start, fx[on] - box[1].start] = fill[1][on]
        pieces = _pieces(part, inside, prominence, response, level)
        out[box][inside] = pieces[inside] + n
        n += int(pieces.max())
    single = np.repeat(counts < 2, np.diff(ends))
    out[rows[single], cols[single]] = np.repeat(first, np.diff(ends))[single]
    return out, n
