"""The saturation level of an image whose header does not give one (its flat top), and
the fill value of its pixels without data (a floor far below the rest).

A detector or its converter clips every saturated pixel to one value (a raw uint16 frame
to 65535 or a little below, after bias and overscan handling: the pyDIA frames of this
project's data clip at 65300 ADU and carry no ``SATURATE`` card). The cores of the
brightest stars then form a plateau: the image's maximum is held by several pixels,
where a continuous distribution of star peaks repeats its maximum exactly with
vanishing probability. :func:`flat_top_level` recognises that plateau; the reader
flags pixels at or above it as ``SAT`` and says so.

A coadd (or a flat-fielded, sky-subtracted, rescaled frame) keeps no exact flat top:
each input frame clips at its own level once its sky, flat field and scale are applied,
and the average of those clipped cores differs from star to star by a few per cent (the
GOTO science coadd of this project's data: its 11 brightest cores, of fluxes that differ
by a factor of 4.5, all peak between 62,400 and 65,100 counts; the next stars peak at
57,800, 57,500 and 50,700). The saturated stars' peaks then pile up just below the
image's maximum, where unclipped stars, whose peaks grow with their fluxes, leave large
gaps, and their clipped cores are broad: above half its peak a clipped core holds up to
several times the light the unclipped stars hold there (GOTO: up to 7 times, and 5 of
the 11 twice or more). :func:`star_plateau_level` recognises that pile-up of broad
cores.

The mirror of a flat top: an integer image whose pixels without data hold 0 (a frame's
unread half, an amplifier read as 0, a mosaic's uncovered corner: NaN cannot be written
as an integer), over a sky of hundreds of counts. Its minimum then forms a plateau far
below every other pixel; :func:`floor_fill_level` recognises it, and the reader flags
those pixels ``NO_DATA``. A fill at the sky's own level (0 in a sky-subtracted image)
cannot be told from data this way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph

from diffviewer.stats import robust_std

#: Fewest pixels sharing the maximum for it to count as a clip level. A saturated star
#: core covers several pixels; noisy star peaks (integer or float) rarely share their
#: maximum with even one other pixel, let alone three.
MIN_PLATEAU_PIXELS = 4

#: Largest fraction of the usable pixels that may sit on the plateau. Saturated cores
#: are a small part of any image; a larger share means quantised or constant data (a
#: mask, a flat field, a synthetic test image), whose maximum is no clip level.
MAX_PLATEAU_FRACTION = 0.01

#: Pixels the plateau may hold whatever the image's size (:func:`plateau_cap`): one
#: clipped core, a disk of radius 5.6 px (pyDIA's largest are 14-66 px). On a cutout
#: centred on a saturated star (32-64 px: 1 % is 10-40 px) the core alone is 1.4-5 % of
#: the pixels; quantised or constant data are still rejected there by their height
#: (:data:`MIN_PLATEAU_SIGMAS`) or their zero spread.
MAX_CORE_PIXELS = 100

#: Least height of the plateau above the median, in robust standard deviations of the
#: image. A clip level is far above the sky (pyDIA: 65300 ADU against a sky of a few
#: thousand with sigma ~50, over 1000 sigma); low, quantised data whose maximum merely
#: repeats stays well below this.
MIN_PLATEAU_SIGMAS = 50.0

#: Fewest clipped cores among the sources whose peaks lie within :data:`PLATEAU_WIDTH`
#: of the maximum for those peaks to count as a smeared clip level. Star counts grow as
#: a power of the flux, N(>F) ~ F^-a with a = 0.75-1.5: the brightest star expects
#: 0.08-0.17 others within 10 % of its peak, and three others (Poisson) has a chance
#: below 0.001.
MIN_PLATEAU_STARS = 4

#: Width of a coadd's smeared clip level, as a share of the maximum's height above the
#: median: the input frames' clip levels after sky subtraction (a sky of 1-5 % of the
#: converter's range), flat field (a few per cent) and scaling differ by a few per cent.
PLATEAU_WIDTH = 0.1

#: Least light above half its peak, in units of the unclipped stars' (the median over the
#: :data:`REFERENCE_STARS` brightest sources peaking at :data:`REFERENCE_BAND` of the
#: maximum's height), for a core near the maximum to count as clipped. Stars of one PSF
#: hold the same light above half their peak whatever their flux (within 20-30 % from
#: the pixel phase); a star of twice the flux cannot peak as high unless clipped. This
#: keeps a field whose brightest stars merely have similar fluxes from being called
#: saturated (``make_pair``'s fields put 4-11 sources within 10 % of their maximum, none
#: of them clipped).
CLIPPED_CORE_RATIO = 2.0

#: Heights (shares of the maximum's height above the median) at which the reference
#: stars peak: far enough below the top to be unclipped, bright enough to be measured.
REFERENCE_BAND = (0.1, 0.5)

#: Most reference stars measured (the brightest in :data:`REFERENCE_BAND`).
REFERENCE_STARS = 50

#: Pixels of the band near the maximum this close (px) belong to one source: a clipped
#: core's top may split where its profile dips (GOTO's double PSF splits 3 of 15).
SAME_SOURCE_PX = 2

#: Half side (px) of the cutout in which a core's light above half its peak is summed.
CORE_HALF = 40

#: Pixels sampled for the median and the robust sigma (a regular subsample: the two
#: statistics need no more, and a 4096^2 image is read in milliseconds).
SAMPLE_PIXELS = 100_000


def _usable_values(image: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """``image[usable]``; a flat view of the image, not a copy, when every pixel is usable."""
    return image.ravel() if usable.all() else image[usable]


def plateau_cap(n_usable: int) -> float:
    """Most usable pixels a clip level's plateau may hold.

    Parameters
    ----------
    n_usable : int
        Usable pixels of the image.

    Returns
    -------
    float
        :data:`MAX_PLATEAU_FRACTION` of them, and at least :data:`MAX_CORE_PIXELS`.
    """
    return max(MAX_PLATEAU_FRACTION * n_usable, MAX_CORE_PIXELS)


def _extreme(
    image: np.ndarray, usable: np.ndarray, largest: bool
) -> tuple[np.ndarray, float, int] | None:
    """The usable values, their maximum (``largest``) or minimum, and how many hold it;
    None when no pixel is usable."""
    values = _usable_values(image, usable)
    if values.size == 0:
        return None
    level = float(values.max() if largest else values.min())
    return values, level, int(np.count_nonzero(values == level))


def flat_top_level(image: np.ndarray, usable: np.ndarray) -> float | None:
    """The value at which an image is clipped, when its maximum forms a plateau.

    Parameters
    ----------
    image : numpy.ndarray
        Pixel values (image units).
    usable : numpy.ndarray
        Boolean, True on pixels with data (finite, not blank fill).

    Returns
    -------
    float or None
        The plateau value (image units): at least :data:`MIN_PLATEAU_PIXELS` usable pixels
        hold exactly the maximum, they are at most :func:`plateau_cap` of the usable
        pixels, and the maximum lies :data:`MIN_PLATEAU_SIGMAS` robust standard
        deviations or more above the median. None otherwise.
    """
    found = _extreme(image, usable, largest=True)
    if found is None:
        return None
    values, top, n_top = found
    if n_top < MIN_PLATEAU_PIXELS or n_top > plateau_cap(values.size):
        return None
    return top if _sky_far_below(values, top) is not None else None


#: Least depth of a floor plateau below the median of the other pixels, in their robust
#: standard deviations: noise reaches 10 sigma below the sky once in 10^23 pixels, and a
#: plateau needs :data:`MIN_PLATEAU_PIXELS` pixels sharing the one value.
MIN_FILL_SIGMAS = 10.0


def floor_fill_level(image: np.ndarray, usable: np.ndarray) -> tuple[float, float] | None:
    """The value an image holds where it has no data, when its minimum forms a plateau.

    Parameters
    ----------
    image, usable : numpy.ndarray
        Pixel values (image units), and True on the pixels with data (as for
        :func:`flat_top_level`).

    Returns
    -------
    (float, float) or None
        The plateau value and its depth below the median of the other usable pixels,
        in their robust standard deviations: at least :data:`MIN_PLATEAU_PIXELS` usable
        pixels, not all, hold exactly the minimum, and it lies :data:`MIN_FILL_SIGMAS` or
        more below the others. None otherwise.
    """
    found = _extreme(image, usable, largest=False)
    if found is None:
        return None
    values, floor, n_floor = found
    if n_floor < MIN_PLATEAU_PIXELS or n_floor == values.size:
        return None
    sample = _subsample(values)
    sample = sample[sample != floor]
    if sample.size == 0:
        return None
    sky = float(np.median(sample))
    sigma = robust_std(sample, sky)
    depth = (sky - floor) / sigma if sigma > 0 else 0.0
    return (floor, depth) if depth >= MIN_FILL_SIGMAS else None


def _subsample(values: np.ndarray) -> np.ndarray:
    """A regular subsample of :data:`SAMPLE_PIXELS` of ``values``, in double precision (a
    float32 image's median and spread as a float64 one's)."""
    return values[:: max(1, values.size // SAMPLE_PIXELS)].astype(np.float64)


def _sky_far_below(values: np.ndarray, top: float) -> float | None:
    """The median of ``values`` when ``top`` lies :data:`MIN_PLATEAU_SIGMAS` robust standard
    deviations or more above it (a regular subsample of :data:`SAMPLE_PIXELS`), else None."""
    sample = _subsample(values)
    sky = float(np.median(sample))
    sigma = robust_std(sample, sky)
    return sky if sigma > 0 and top - sky >= MIN_PLATEAU_SIGMAS * sigma else None


def _light_above_half_peak(image: np.ndarray, y: int, x: int, peak: float, sky: float) -> float:
    """Light above the sky in the connected pixels above half a source's height, per height.

    Parameters
    ----------
    image : numpy.ndarray
        Pixel values (image units).
    y, x : int
        The source's peak pixel.
    peak, sky : float
        Its peak value and the image's median (image units).

    Returns
    -------
    float
        The sum of ``image - sky`` over the pixels connected to the peak that lie above
        ``sky + (peak - sky) / 2`` (within :data:`CORE_HALF` px), over ``peak - sky``
        (px): the same for every unclipped star of one PSF.
    """
    y0, x0 = max(y - CORE_HALF, 0), max(x - CORE_HALF, 0)
    cut = image[y0 : y + CORE_HALF + 1, x0 : x + CORE_HALF + 1].astype(np.float64)
    labels, _ = ndimage.label(cut >= sky + (peak - sky) / 2)
    core = labels == labels[y - y0, x - x0]
    return float(np.sum(cut[core] - sky) / (peak - sky))


def _islands(flat: np.ndarray, width: int, reach: int) -> np.ndarray:
    """Island of each pixel: pixels within Manhattan distance ``reach`` of one another join.

    Parameters
    ----------
    flat : numpy.ndarray
        Ascending flat indices of the pixels in an image ``width`` pixels wide.
    width : int
        The image's width (px).
    reach : int
        1: islands of edge-connected pixels (``ndimage.label``'s); ``2 g + 1``: those of
        the pixels grown by ``g`` (``ndimage.binary_dilation`` with ``iterations=g``).

    Returns
    -------
    numpy.ndarray
        Island number of each pixel, 0, 1, ... in the order of each island's first pixel
        (row by row: ``ndimage.label``'s order).
    """
    cols = flat % width
    links_from, links_to = [], []
    for dy in range(reach + 1):
        for dx in range(-(reach - dy), reach - dy + 1):
            if dy == 0 and dx <= 0:
                continue
            target = flat + dy * width + dx
            at = np.minimum(np.searchsorted(flat, target), flat.size - 1)
            hit = (flat[at] == target) & (cols + dx >= 0) & (cols + dx < width)
            links_from.append(np.flatnonzero(hit))
            links_to.append(at[hit])
    src, dst = np.concatenate(links_from), np.concatenate(links_to)
    graph = sparse.coo_matrix((np.ones(src.size), (src, dst)), shape=(flat.size, flat.size))
    labels = csgraph.connected_components(graph, directed=False)[1]
    _, first = np.unique(labels, return_index=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[labels[np.sort(first)]] = np.arange(first.size)
    return rank[labels]


def _sources(
    flat: np.ndarray, values: np.ndarray, width: int, reach: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Peak value and flat index of each island of pixels (:func:`_islands`).

    Parameters
    ----------
    flat : numpy.ndarray
        Ascending flat indices of the pixels.
    values : numpy.ndarray
        Their values (image units).
    width, reach : int
        As :func:`_islands`.

    Returns
    -------
    peaks, rows, cols : numpy.ndarray
        Each island's largest value and its pixel (the first in row order among equal
        ones), in the islands' order.
    """
    if flat.size == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    labels = _islands(flat, width, reach)
    order = np.lexsort((flat, -values, labels))
    top = order[np.flatnonzero(np.diff(labels[order], prepend=-1))]
    rows, cols = np.divmod(flat[top], width)
    return values[top].astype(np.float64), rows, cols


def star_plateau_level(image: np.ndarray, usable: np.ndarray) -> float | None:
    """The saturation level of a coadd: broad cores of several stars piled up below the maximum.

    Parameters
    ----------
    image : numpy.ndarray
        Pixel values (image units).
    usable : numpy.ndarray
        Boolean, True on pixels with data (finite, not blank fill).

    Returns
    -------
    float or None
        :func:`pieces_plateau_level` of the one image.
    """
    return pieces_plateau_level([image], [usable])


def _near_top_sources(
    image: np.ndarray, usable: np.ndarray, low: float, near_level: float
) -> tuple[int, list[tuple[float, int, int]], list[tuple[float, int, int]]]:
    """The sources of one image near the maximum, and those above the reference band's foot.

    Parameters
    ----------
    image, usable : numpy.ndarray
        As :func:`pieces_plateau_level`'s, one of them.
    low, near_level : float
        The reference band's foot and the plateau band's foot (image units).

    Returns
    -------
    n_near : int
        Usable pixels at or above ``near_level``.
    near, reference : list of (float, int, int)
        Peak, row and column of the islands of those pixels (within ``2 SAME_SOURCE_PX +
        1`` px of one another), and of the edge-connected islands above ``low``.
    """
    # Compared and summed in double precision whatever the image's (a float32 image's
    # values against float64 levels, as a float64 image's).
    flat = np.flatnonzero(usable & (image >= np.float64(low)))
    width = image.shape[1]
    bright = image.ravel()[flat].astype(np.float64)
    near = bright >= near_level
    sources = _sources(flat[near], bright[near], width, 2 * SAME_SOURCE_PX + 1)
    references = _sources(flat, bright, width, 1)
    return (
        int(np.count_nonzero(near)),
        list(zip(*(a.tolist() for a in sources), strict=True)),
        list(zip(*(a.tolist() for a in references), strict=True)),
    )


def pieces_plateau_level(
    images: Sequence[np.ndarray], usables: Sequence[np.ndarray]
) -> float | None:
    """The one saturation level of a coadd given whole or in pieces: broad cores of several
    stars piled up below the maximum, counted over all the pieces.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Pixel values (image units) of the coadd, or of its pieces (one clip level: a
        piece may hold too few saturated stars to show it alone).
    usables : sequence of numpy.ndarray
        Boolean, True on each image's pixels with data (finite, not blank fill).

    Returns
    -------
    float or None
        The lowest peak among the separate sources (islands of usable pixels within
        ``2 SAME_SOURCE_PX + 1`` px of one another) that reach within
        :data:`PLATEAU_WIDTH` of the maximum's height above the median, when
        :data:`MIN_PLATEAU_STARS` of them or more are clipped cores (they hold
        :data:`CLIPPED_CORE_RATIO` times the unclipped stars' light above half their
        peak), the band holds at most :func:`plateau_cap` of the usable pixels
        and the maximum lies :data:`MIN_PLATEAU_SIGMAS` robust standard deviations or more
        above the median. The maximum, median and counts are the pieces' together. None
        otherwise.

    Notes
    -----
    Only the pixels above the reference band's foot (a thousandth of a field's pixels)
    are looked at after the median: their islands are found on their flat indices
    (:func:`_islands`), not by labelling image-sized maps. A core held by two overlapping
    pieces is counted once (:func:`_distinct_count`).
    """
    values = [_usable_values(image, usable) for image, usable in zip(images, usables, strict=True)]
    n_usable = sum(v.size for v in values)
    if n_usable == 0:
        return None
    top = max(float(v.max()) for v in values if v.size)
    sky = _sky_far_below(np.concatenate([_subsample(v) for v in values]), top)
    if sky is None:
        return None
    height = top - sky
    low, high = (sky + f * height for f in REFERENCE_BAND)
    found = [
        _near_top_sources(image, usable, low, top - PLATEAU_WIDTH * height)
        for image, usable in zip(images, usables, strict=True)
    ]
    if sum(n for n, _, _ in found) > plateau_cap(n_usable):
        return None
    near = [(k, source) for k, (_, sources, _) in enumerate(found) for source in sources]
    if len(near) < MIN_PLATEAU_STARS:
        return None
    references = sorted(
        (
            (k, source)
            for k, (_, _, sources) in enumerate(found)
            for source in sources
            if source[0] < high
        ),
        key=lambda item: -item[1][0],
    )[:REFERENCE_STARS]
    if not references:
        return None
    psf_light = np.median(
        [
            _light_above_half_peak(images[k], row, col, peak, sky)
            for k, (peak, row, col) in references
        ]
    )
    light = np.array(
        [_light_above_half_peak(images[k], row, col, peak, sky) for k, (peak, row, col) in near]
    )
    clipped = np.flatnonzero(light >= CLIPPED_CORE_RATIO * psf_light)
    if _distinct_count([near[k][1][0] for k in clipped]) < MIN_PLATEAU_STARS:
        return None
    # The clip level is smeared over the band: every peak in it may be a clipped core.
    return float(min(peak for _, (peak, _, _) in near))


#: Peaks closer than this (relative) are one core seen twice: held by two overlapping
#: pieces of one coadd, it peaks at one value in both, to the rounding of a flux scale
#: (float32: 1e-7), where a coadd's clipped cores differ by tens of counts in 60,000.
SAME_PEAK = 1e-5


def _distinct_count(values: Sequence[float]) -> int:
    """How many of ``values`` differ from the next larger by more than :data:`SAME_PEAK`
    of it (sorted: a core counted in two pieces is one)."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    if ordered.size == 0:
        return 0
    gaps = np.diff(ordered) > SAME_PEAK * np.abs(ordered[1:])
    return 1 + int(np.count_nonzero(gaps))
