"""The kernel fit's noise terms: the two images' noise covariances, measured on sky.

The kernel fit minimises ``|target - K * source - bg|^2`` over each stamp, and the
source is noisy: the normal matrix ``A^T W A`` carries, on average, the source's noise
power through the kernel basis, and the right-hand side ``A^T W y`` the covariance of the
source's noise with the target's. Where the two images share noise (coadds built from
common frames: correlation 0.6 on the GOTO pair) the shared part of both pulls the kernel
toward the one that cancels that noise, a delta, rather than the one that matches the
PSFs, and the more so the larger the fit region; the source's own noise pulls the kernel
sum low (the attenuation bias of errors in variables). These terms are expectations over
the noise, the same at every stamp up to its weights, so they are measured once, on sky,
and subtracted from each stamp's equations (:func:`corrected_equations`):

* ``normal_ij -= sum_p w_p Q_ij``, ``Q_ij = sum_{u,v} B_i(u) B_j(v) C_ss(u - v)``,
* ``rhs_i -= sum_p w_p q_i``, ``q_i = sum_u B_i(u) C_st(u)``,
* ``target_power -= sum_p w_p C_tt(0)``,

with ``C_ss(d) = E[n_s(x) n_s(x + d)]`` and ``C_st(d) = E[n_s(x) n_t(x + d)]`` (the design
convolves the source, ``(B * s)(p) = sum_u B(u) s(p - u)``), and nothing on the background
column, which is noise-free. ``kernel.noise_correction = 'all'`` takes out the whole of
the source's noise so; ``'shared'`` (the default) only the noise the two images share:
``C_ss`` and ``C_tt`` are then the shared noise's own covariance, which, common to both
images, is their cross-covariance ``C_st`` made symmetric (:func:`shared_covariance`;
``C_st`` less the faint sources both images hold on their sky,
:mod:`kernel_common_signal`), and the fit keeps the attenuation every least-squares
kernel fit has. The whole correction
moved the kernel sum of the 256^2 DECam demo stacks (14 stamps, whose own kernel sums
scatter from 0.63 to 1.26, the faint ones 30-60 % noise in the sum's direction) from
0.999 to 1.026, and the stacks' known transient, 2 % of its host's flux, went below
detection; on the properimage pair it lowered the bright stars' residual to 0.75 of
HOTPANTS's (0.86 with the shared part alone).

``sum_p w_p`` runs over the pixels each stamp's fit kept. The weights include the star's
own Poisson term; the correction holds the sky's covariance alone at every pixel: the
sky's noise is there under the star too, with that pixel's weight, while the star's
Poisson noise adds at most 1 (``w_p var_p <= 1``) a pixel over the few tens of core
pixels where it dominates, against the fit region's hundreds to thousands of sky terms,
and only on stars bright enough that their signal dwarfs both.

Only the spatial fit, which makes the kernel, sums the corrected equations (its prior's
cross-validation included, :mod:`kernel_prior`). Each stamp's own fit, which only judges
that stamp against the others, keeps its equations as measured: a single faint star's
corrected equations are mostly not positive definite (289 of the 359 good stamps of the
GOTO pair with the whole correction), its noise as large as its signal in the kernel's
finer directions.

The covariances come from the pixels that are sky on both images (:func:`sky_covariance`;
at most :data:`MAX_SKY_PIXELS` of them, in bands of rows spread over a larger image),
each image less its smooth background, by FFTs of the masked images normalised by the
number of pixel pairs at each lag.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import scipy.fft as sfft

from diffviewer.engine import fftconv, tiles
from diffviewer.engine.background import SkyBackground
from diffviewer.engine.sky import InputSources
from diffviewer.exposure import Exposure, row_blocks


@dataclasses.dataclass(frozen=True)
class SkyCovariance:
    """The source's and target's noise covariances at lags up to ``max_lag``, from sky.

    Attributes
    ----------
    source : numpy.ndarray or None
        ``(2 L + 1, 2 L + 1)`` ``C_ss(d) = E[n_s(x) n_s(x + d)]``, element ``[L + dy, L + dx]``;
        None when not measured (only ``kernel.noise_correction = 'all'`` uses it).
    cross : numpy.ndarray
        ``(2 L + 1, 2 L + 1)`` ``C_st(d) = E[n_s(x) n_t(x + d)]``, the same layout.
    source_variance, target_variance : float
        ``C_ss(0)``, ``C_tt(0)``.
    n_pixels : int
        Sky pixels they were measured on.
    """

    source: np.ndarray | None
    cross: np.ndarray
    source_variance: float
    target_variance: float
    n_pixels: int

    @property
    def max_lag(self) -> int:
        """``L``, the largest lag (px) along either axis."""
        return self.cross.shape[0] // 2

    @property
    def correlation(self) -> float:
        """The zero-lag correlation of the two images' noise (NaN without sky)."""
        scale = np.sqrt(self.source_variance * self.target_variance)
        lag = self.max_lag
        return float(self.cross[lag, lag] / scale) if scale > 0 else float("nan")


def lag_sums(
    images: Sequence[np.ndarray], pairs: Sequence[tuple[int, int]], max_lag: int
) -> list[np.ndarray]:
    """``sum_x a(x) b(x + d)`` for every lag ``|dy|, |dx| <= max_lag``, for each pair
    ``(a, b) = (images[i], images[j])`` of ``pairs`` (zeros beyond the images).

    Tile by tile: each tile of ``a`` (at most :data:`~diffviewer.engine.tiles.MAX_TILE_FFT`
    px with its margin) is correlated with ``b`` over the tile and ``max_lag`` px around
    it on an FFT grid that leaves no lag to wrap, and the tiles' sums are added in float64.
    The lags are a kernel's side; FFTs of the whole image for them cost several times as
    much per pixel (4096^2 images, 40 px lags: 6 transforms of 4320^2 against 36 tiles of 8
    transforms of 768^2; :func:`sky_covariance` 2.2-2.7 -> 1.6-1.7 s of CPU). Of each
    inverse transform only the ``2 L + 1`` rows of the lags are transformed along x:
    ``irfft2``'s result there to float32 rounding, at about 55 % of its cost. Each tile's
    transform of ``a`` is conjugated in place once, and each pair's product is made in one
    buffer and transformed along y in place (no temporaries per pair).

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Images of one shape (float32).
    pairs : sequence of (int, int)
        Indices into ``images`` of each ``(a, b)``.
    max_lag : int
        ``L``.

    Returns
    -------
    list of numpy.ndarray
        For each pair, ``(2 L + 1, 2 L + 1)`` float64, element ``[L + dy, L + dx]``.
    """
    ny, nx = images[0].shape
    lag = max_lag
    padded = (tiles.tile_fft_length(ny, lag), tiles.tile_fft_length(nx, lag))
    sums = [np.zeros((2 * lag + 1, 2 * lag + 1)) for _ in pairs]
    window = np.zeros(padded, dtype=np.float32)
    spectrum = np.result_type(images[0].dtype, np.complex64)
    product = np.empty((padded[0], padded[1] // 2 + 1), dtype=spectrum)
    for t0, t1 in tiles.axis_tiles(0, ny, padded[0] - 2 * lag):
        for u0, u1 in tiles.axis_tiles(0, nx, padded[1] - 2 * lag):
            # b over the tile and ``lag`` px around it, its pixel (t0 - lag, u0 - lag) at
            # [0, 0]; a's tile at [0, 0]: element [lag + dy, lag + dx] of the circular
            # correlation is the lag (dy, dx), and no index reaches the grid's end.
            lo_r, hi_r = max(0, t0 - lag), min(ny, t1 + lag)
            lo_c, hi_c = max(0, u0 - lag), min(nx, u1 + lag)
            box = np.s_[lo_r - t0 + lag : hi_r - t0 + lag, lo_c - u0 + lag : hi_c - u0 + lag]
            tile, around = {}, {}
            for i in {i for i, _ in pairs}:
                tile[i] = sfft.rfft2(images[i][t0:t1, u0:u1], s=padded)
                np.conjugate(tile[i], out=tile[i])
            for j in {j for _, j in pairs}:
                window[:] = 0.0
                window[box] = images[j][lo_r:hi_r, lo_c:hi_c]
                around[j] = sfft.rfft2(window)
            for total, (i, j) in zip(sums, pairs, strict=True):
                product = np.multiply(tile[i], around[j], out=product)
                rows = sfft.ifft(product, axis=0, overwrite_x=True)
                rows = sfft.irfft(rows[: 2 * lag + 1], n=padded[1], axis=1)
                total += rows[:, : 2 * lag + 1]
    return sums


#: Most sky pixels the covariances are measured on. Each lag's covariance is then known
#: to about ``1 / sqrt(2e6) = 7e-4`` of the noise variance, 30 times finer than
#: :data:`MIN_SKY_PIXELS` asks; all the 5.3 million of a 4096^2 image's sky took 0.94 s
#: of its 1.9 s kernel fit (cProfile). Beyond it, bands of rows spread over the image
#: hold about this many (:func:`sky_bands`). GOTO's 1850^2 has 1.8 million.
MAX_SKY_PIXELS = 2_000_000

#: Rows of a band of :func:`sky_bands`: 16 bands over a 4096-row image, so even one in
#: three samples the whole height.
SKY_BAND_ROWS = 256


def sky_bands(sky: np.ndarray, max_pixels: int = MAX_SKY_PIXELS) -> list[slice]:
    """The bands of rows whose sky pixels the covariances are measured on.

    Every row when the sky has at most ``max_pixels`` pixels. Else the image is cut into
    bands of :data:`SKY_BAND_ROWS` rows and one band in ``k = ceil(n / max_pixels)`` is
    kept, the middle one of each ``k``: about ``max_pixels`` of the sky, spread over the
    whole height (at least one band, however few rows the image has).

    Parameters
    ----------
    sky : numpy.ndarray
        Boolean map of the sky pixels.
    max_pixels : int
        Most sky pixels wanted.

    Returns
    -------
    list of slice
        Disjoint, increasing bands of rows.
    """
    ny = sky.shape[0]
    n = int(np.count_nonzero(sky))
    if n <= max_pixels:
        return [slice(0, ny)]
    every = -(-n // max(max_pixels, 1))
    bands = [slice(s, min(s + SKY_BAND_ROWS, ny)) for s in range(0, ny, SKY_BAND_ROWS)]
    return bands[min(every // 2, len(bands) - 1) :: every]


def stacked_rows(bands: Sequence[slice], gap: int) -> list[slice]:
    """Where each band of rows lies in a stack of them with ``gap`` zero rows between."""
    out, start = [], 0
    for band in bands:
        out.append(slice(start, start + band.stop - band.start))
        start += band.stop - band.start + gap
    return out


def stacked(array: np.ndarray, bands: Sequence[slice], placed: Sequence[slice]) -> np.ndarray:
    """``array``'s ``bands`` of rows at ``placed`` (:func:`stacked_rows`), zeros between;
    ``array`` itself when its one band is all its rows."""
    if len(bands) == 1 and (bands[0].start, bands[0].stop) == (0, array.shape[0]):
        return array
    out = np.zeros((placed[-1].stop, *array.shape[1:]), dtype=array.dtype)
    for band, rows in zip(bands, placed, strict=True):
        out[rows] = array[band]
    return out


def sky_covariance(
    source: np.ndarray,
    target: np.ndarray,
    sky: np.ndarray,
    backgrounds: tuple[SkyBackground, SkyBackground],
    max_lag: int,
    *,
    source_lags: bool = True,
    max_pixels: int = MAX_SKY_PIXELS,
) -> SkyCovariance:
    """The two images' noise covariances over the pixels that are sky on both.

    Each image less its smooth background, and less its mean over the sky, is set to zero
    off the sky; at each lag the sum of products over the pairs of sky pixels is divided
    by the number of such pairs. Over more than ``max_pixels`` sky pixels, only those of
    the bands of :func:`sky_bands`, stacked with ``max_lag`` zero rows between them (no
    pair of pixels at a measured lag spans two bands).

    Parameters
    ----------
    source, target : numpy.ndarray
        The image convolved and the one it is matched to, on one grid.
    sky : numpy.ndarray
        Boolean map of sky pixels (usable on both, far from every source of either).
    backgrounds : (SkyBackground, SkyBackground)
        The source's and the target's smooth backgrounds.
    max_lag : int
        Largest lag (px) along either axis.
    source_lags : bool
        Whether to measure the source's covariance at every lag (``SkyCovariance.source``;
        its zero lag, the variance, is measured either way). Without it, 6 transforms a tile
        instead of 8: the shared noise's covariances are the cross-covariance's.
    max_pixels : int
        Most sky pixels measured (:data:`MAX_SKY_PIXELS`).

    Returns
    -------
    SkyCovariance
        ``n_pixels`` counts the sky pixels measured.
    """
    bands = sky_bands(sky, max_pixels)
    placed = stacked_rows(bands, max_lag)
    mask = stacked(sky, bands, placed)
    n = int(np.count_nonzero(mask))
    planes, powers = [mask.astype(np.float32)], []
    for image, bkg in zip((source, target), backgrounds, strict=True):
        plane, power = sky_plane(image, bkg, sky, n, bands, placed)
        planes.append(plane)
        powers.append(power)
    pairs = ((0, 0), (1, 2), (1, 1)) if source_lags else ((0, 0), (1, 2))
    sums = lag_sums(planes, pairs, max_lag)
    counts = np.maximum(sums[0], 1.0)
    auto = sums[2] / counts if source_lags else None
    return SkyCovariance(auto, sums[1] / counts, powers[0], powers[1], n)


def sky_plane(
    image: np.ndarray,
    background: SkyBackground,
    sky: np.ndarray,
    n: int,
    bands: Sequence[slice],
    placed: Sequence[slice],
) -> tuple[np.ndarray, float]:
    """An image's bands of rows, less its background and less its mean over their sky,
    zero off the sky, stacked (:func:`stacked_rows`; zeros between them).

    Made a block of rows at a time (:func:`~diffviewer.exposure.row_blocks`): no
    image-sized background or sky-bits temporary.

    Parameters
    ----------
    image : numpy.ndarray
        The image.
    background : SkyBackground
        Its smooth background.
    sky : numpy.ndarray
        Boolean map of the sky pixels.
    n : int
        Their number in the bands.
    bands, placed : sequence of slice
        The image's rows taken (:func:`sky_bands`) and where they go in the stack.

    Returns
    -------
    plane : numpy.ndarray
        float32, ``placed[-1].stop`` rows of ``image``'s width.
    power : float
        The plane's mean square over the sky (float64 sums).
    """
    plane = np.zeros((placed[-1].stop, image.shape[1]), dtype=np.float32)
    blocks = [
        (
            slice(band.start + b.start, band.start + b.stop),
            slice(rows.start + b.start, rows.start + b.stop),
        )
        for band, rows in zip(bands, placed, strict=True)
        for b in row_blocks((band.stop - band.start, image.shape[1]))
    ]
    # Sums row by row, then over the rows at once: the same to the bit however the rows
    # are cut into blocks (a total carried from block to block rounds differently).
    sums = []
    for src, dst in blocks:
        block = plane[dst]
        np.subtract(image[src], background.image((src, slice(None))), out=block)
        bits = block.view(np.uint32)
        bits &= sky_bits(sky[src])
        sums.append(block.sum(axis=1, dtype=np.float64))
    mean = np.float32(np.sum(np.concatenate(sums)) / max(n, 1))
    powers = []
    for src, dst in blocks:
        block = plane[dst]
        block -= mean
        bits = block.view(np.uint32)
        bits &= sky_bits(sky[src])
        # The power from the sky's values alone (the zeros add nothing), in float64.
        powers.append(np.einsum("ij,ij->i", block, block, dtype=np.float64))
    return plane, float(np.sum(np.concatenate(powers))) / max(n, 1)


def sky_bits(sky: np.ndarray) -> np.ndarray:
    """``uint32`` words, all ones on the sky and zeros off it: a float32 plane's bits AND
    these are its values on the sky and zeros elsewhere (its NaNs too), with no branch
    per pixel (an assignment through a scattered sky map costs 15 times as much)."""
    return np.negative(sky.view(np.uint8), dtype=np.int32).view(np.uint32)


@dataclasses.dataclass(frozen=True)
class NoiseTerms:
    """The expected noise in one unit of weight of a stamp's equations (see the module).

    Attributes
    ----------
    normal : numpy.ndarray
        ``(nb + 1, nb + 1)`` ``Q``; the background's row and column are zero.
    rhs : numpy.ndarray
        ``(nb + 1,)`` ``q``; the background's element is zero.
    target_power : float
        ``C_tt(0)``.
    """

    normal: np.ndarray
    rhs: np.ndarray
    target_power: float


def shared_covariance(cov: SkyCovariance) -> SkyCovariance:
    """The covariances of the noise the two images share: the cross-covariance made
    symmetric (``(C_st(d) + C_st(-d)) / 2``) for the source's and its zero lag for the
    target's; the cross-covariance itself."""
    lag = cov.max_lag
    auto = 0.5 * (cov.cross + cov.cross[::-1, ::-1])
    zero = float(cov.cross[lag, lag])
    return SkyCovariance(auto, cov.cross, zero, zero, cov.n_pixels)


def noise_terms(cov: SkyCovariance, basis: np.ndarray) -> NoiseTerms:
    """``Q``, ``q`` and ``C_tt(0)`` of the basis (see the module).

    Parameters
    ----------
    cov : SkyCovariance
        Measured to lags of at least the kernel's side less one (``Q`` reaches ``u - v``
        across the whole kernel), with the source's lags, or its shared part
        (:func:`shared_covariance`).
    basis : numpy.ndarray
        ``(nb, size, size)`` the basis images.

    Returns
    -------
    NoiseTerms
    """
    nb, size = basis.shape[0], basis.shape[-1]
    lag, half = cov.max_lag, size // 2
    if lag < size - 1:
        raise ValueError(f"covariance to lag {lag} px, the {size} px kernel needs {size - 1}")
    if cov.source is None:
        raise ValueError("the source's covariance was not measured at every lag (source_lags)")
    # (C_ss * B_j)(u) on the kernel's support: the full convolution's index is h + L + u
    smoothed = fftconv.convolve(basis, cov.source[None], mode="full")
    smoothed = smoothed[:, lag : lag + size, lag : lag + size]
    normal = np.zeros((nb + 1, nb + 1))
    normal[:nb, :nb] = basis.reshape(nb, -1) @ smoothed.reshape(nb, -1).T
    normal[:nb, :nb] = 0.5 * (normal[:nb, :nb] + normal[:nb, :nb].T)
    rhs = np.zeros(nb + 1)
    window = cov.cross[lag - half : lag + half + 1, lag - half : lag + half + 1]
    rhs[:nb] = basis.reshape(nb, -1) @ window.ravel()
    return NoiseTerms(normal, rhs, cov.target_variance)


def corrected_equations(
    normal: np.ndarray,
    rhs: np.ndarray,
    target_power: np.ndarray,
    weight_sum: np.ndarray,
    terms: NoiseTerms,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each stamp's equations less their expected noise: ``sum_p w_p`` times ``terms``.

    Parameters
    ----------
    normal, rhs, target_power : numpy.ndarray
        ``(n, nb + 1, nb + 1)``, ``(n, nb + 1)``, ``(n,)`` the stamps' equations.
    weight_sum : numpy.ndarray
        ``(n,)`` each stamp's summed weights over the pixels its fit kept.
    terms : NoiseTerms
        The noise in one unit of weight.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        The corrected ``normal``, ``rhs``, ``target_power``.
    """
    return (
        normal - weight_sum[:, None, None] * terms.normal[None],
        rhs - weight_sum[:, None] * terms.rhs[None],
        target_power - weight_sum * terms.target_power,
    )


#: Least distance (px) of a sky pixel from every source, in FWHM of the broader PSF
#: (:data:`renormalise.PSF_REACH`'s reach of a PSF from its source).
SKY_DISTANCE_FWHM = 2.0


def measure_sky_covariance(
    source: Exposure,
    target: Exposure,
    backgrounds: tuple[SkyBackground, SkyBackground],
    sources: InputSources,
    fwhm: float,
    max_lag: int,
    *,
    source_lags: bool = True,
) -> SkyCovariance:
    """:func:`sky_covariance` over the pixels usable on both images and at least
    :data:`SKY_DISTANCE_FWHM` FWHM from every source of either (``sources``, from
    :func:`sky.input_sources`), each image less its smooth background (``backgrounds``,
    the source's then the target's, from :func:`sky.sky_backgrounds`)."""
    sky = sources.sky(SKY_DISTANCE_FWHM * fwhm)
    return sky_covariance(
        source.image, target.image, sky, backgrounds, max_lag, source_lags=source_lags
    )


#: Least number of sky pixels for the noise terms to be measured: each lag's covariance
#: is then known to about ``1 / sqrt(2500) = 0.02`` of the noise variance. With fewer
#: (alert cutouts filled by their source) the equations are used as measured.
MIN_SKY_PIXELS = 2_500


@dataclasses.dataclass(frozen=True)
class SharedNoise:
    """What the kernel fit knew of the two images' noise, and whether it allowed for it.

    Attributes
    ----------
    correlation : float
        Zero-lag correlation of the source's and the target's noise on sky, the faint
        sources both hold there taken out (:mod:`kernel_common_signal`).
    common_signal : float
        The share of the sky's zero-lag cross-covariance those sources made.
    source_noise, target_noise : float
        Their noise sigma on sky (image units).
    n_sky_pixels : int
        Sky pixels they were measured on.
    terms : str
        The noise taken out: 'shared' or 'all' (``kernel.noise_correction``).
    trace_ratio : float
        The expected noise's trace over the trace of the good stamps' equations as
        measured (kernel block): the size of the correction.
    applied : bool
        Whether the spatial fit used the stamps' equations less their expected noise.
    reason : str
        Why not, when not.
    """

    correlation: float
    common_signal: float
    source_noise: float
    target_noise: float
    n_sky_pixels: int
    terms: str
    trace_ratio: float
    applied: bool
    reason: str

    def as_dict(self) -> dict[str, object]:
        """For ``metadata.json`` (non-finite figures as None)."""
        return {
            k: (None if isinstance(v, float) and not np.isfinite(v) else v)
            for k, v in dataclasses.asdict(self).items()
        }
