"""Kernel stamps: each star's stamps, its own kernel fit with clipping, and stamp rejection.

Each stamp is fitted by weighted least squares (weights 1 / (var_target + K^2 *
var_source), with K the stamp's own kernel from a first pass) with a constant background
and a roughness prior (:func:`stamp_prior`). Where the residual
after a fit, filtered by the PSF, stands out above :data:`CLIP_SIGMA` outside the star's
core, something else is there (a source present on one image only, a variable neighbour,
a cosmic ray): those pixels, grown by one FWHM, are masked and the stamp is refitted, up
to :data:`CLIP_ROUNDS` times. Without it, a
3000-count transient 9 px from each of 40 bright stars moved those stamps' backgrounds by
6 counts (sky noise 32) and the spatial background by 1 while every stamp passed the cuts
(its own background centres its residual on zero); with it, by 0.1 and 0.

Stamps are then rejected, iterated, by: residual mean and standard deviation (of the
residual normalised by the propagated noise, over unmasked pixels), kernel sum, background
and chi^2 outliers against the other stamps (:func:`outliers`: each deviation from an
iteratively clipped weighted fit, constant for the kernel sum, a plane for the
background, in units of its own error), or a failed fit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from diffviewer.config import KernelConfig
from diffviewer.engine.field_terms import chebyshev_terms
from diffviewer.engine.kernel_basis import roughness_penalty
from diffviewer.engine.progress import Reporter
from diffviewer.engine.psf import PsfEstimate, cutouts
from diffviewer.engine.tiles import kernel_spectrum
from diffviewer.exposure import UNUSABLE, Exposure
from diffviewer.stats import FWHM_PER_SIGMA

#: Bytes of complex spectra (stamps times kernels), and of design (:func:`design_chunks`),
#: held in memory at once: a 53 px kernel with 28 basis functions on 91 px stamps is
#: 0.9 MB of spectra a stamp, and a batch of 192 stamps made the kernel fit the peak of a
#: 1024^2 run's memory (+360 MB); at 32 MB the batches, beside the 78 MB design of the
#: wing's 61 px fit region, still did (1024^2 run 363 MB; 296 MB at 8 MB, in the same time).
#: The design itself is made and used a chunk of stamps at a time (:func:`fit_stamps`):
#: whole, it was 460 MB for the 1000 stamps of a 2048 x 4096 run (a 63 px fit region),
#: the peak of that run (1041 MB).
STAMP_BATCH_BYTES = 8e6


def stamp_batch(stamp_side: int, n_kernels: int) -> int:
    """How many stamps to convolve at once with ``n_kernels`` kernels.

    Parameters
    ----------
    stamp_side : int
        Stamp side (px).
    n_kernels : int
        Kernels each stamp is convolved with.

    Returns
    -------
    int
        Stamps whose spectra products fit in :data:`STAMP_BATCH_BYTES` (at least one).
    """
    n_fft = sfft.next_fast_len(stamp_side, real=True)
    per_stamp = n_kernels * n_fft * (n_fft // 2 + 1) * np.dtype(np.complex64).itemsize
    return max(1, int(STAMP_BATCH_BYTES // per_stamp))


def basis_spectra(stamps: Stamps, basis: np.ndarray) -> np.ndarray:
    """The basis functions' spectra on the stamps' FFT grid (:func:`convolve_spectra`),
    computed once for all the stamps' designs (recomputed for each batch of stamps, they
    were 0.4 s of the 4.0 s kernel fit of a 2048 x 4096 pair, by cProfile).

    Parameters
    ----------
    stamps : Stamps
        The stamps.
    basis : numpy.ndarray
        ``(nb, size, size)`` the basis images.

    Returns
    -------
    numpy.ndarray
        ``(nb, n_fft, n_fft // 2 + 1)`` complex64.
    """
    n_fft = sfft.next_fast_len(stamps.source.shape[-1], real=True)
    return kernel_spectrum(basis, (n_fft, n_fft))


def stamp_design(stamps: Stamps, idx: np.ndarray, spectra: np.ndarray) -> np.ndarray:
    """The design of the stamps ``idx``: each source stamp convolved with every basis
    function over the fit region, and the constant (background).

    Parameters
    ----------
    stamps : Stamps
        The stamps.
    idx : numpy.ndarray
        Which.
    spectra : numpy.ndarray
        ``(nb, n_fft, n_fft // 2 + 1)`` the basis functions' spectra (:func:`basis_spectra`).

    Returns
    -------
    numpy.ndarray
        ``(len(idx), npix, nb + 1)`` float32.
    """
    n, nb = len(idx), spectra.shape[0]
    npix = stamps.target.shape[1]
    design = np.empty((n, npix, nb + 1), dtype=np.float32)
    design[:, :, nb] = 1.0
    batch = stamp_batch(stamps.source.shape[-1], nb)
    for start in range(0, n, batch):
        conv = convolve_spectra(stamps.source[idx[start : start + batch]], spectra, stamps.fit_half)
        design[start : start + batch, :, :nb] = conv.reshape(conv.shape[0], nb, npix).transpose(
            0, 2, 1
        )
    return design


def design_chunks(
    stamps: Stamps, idx: np.ndarray, basis: np.ndarray
) -> Iterator[tuple[slice, np.ndarray]]:
    """The design of the stamps ``idx`` (:func:`stamp_design`), a chunk of stamps at a time.

    A chunk holds at most :data:`STAMP_BATCH_BYTES` of design (the design of all the
    stamps at once was the peak of a run's memory: see there).

    Yields
    ------
    (slice, numpy.ndarray)
        Positions in ``idx`` and the design of those stamps, ``(m, npix, nb + 1)``.
    """
    per_stamp = stamps.target.shape[1] * (basis.shape[0] + 1) * np.dtype(np.float32).itemsize
    step = max(1, int(STAMP_BATCH_BYTES // per_stamp))
    spectra = basis_spectra(stamps, basis)
    for start in range(0, len(idx), step):
        chunk = slice(start, min(start + step, len(idx)))
        yield chunk, stamp_design(stamps, idx[chunk], spectra)


def stamp_model(design: np.ndarray, coef: np.ndarray, terms: int) -> np.ndarray:
    """Each stamp's model from its first ``terms`` design columns and their coefficients.

    Parameters
    ----------
    design : numpy.ndarray
        ``(n, npix, nb + 1)`` the stamps' design (:func:`stamp_design`).
    coef : numpy.ndarray
        ``(n, >= terms)`` their coefficients.
    terms : int
        Columns used: ``nb + 1`` for the whole model, ``nb`` without the background.

    Returns
    -------
    numpy.ndarray
        ``(n, npix)`` float32.
    """
    c = coef[:, :terms].astype(np.float32)
    return np.asarray(np.einsum("npk,nk->np", design[:, :, :terms], c))


def kernel_model(
    stamps: Stamps, idx: np.ndarray, coef: np.ndarray, basis: np.ndarray
) -> np.ndarray:
    """Each stamp's model without its design: the source stamp convolved with the stamp's
    kernel, plus its background (the same model as :func:`stamp_model`'s, to float32
    rounding, at one convolution a stamp instead of one a basis function).

    Parameters
    ----------
    stamps : Stamps
        The stamps.
    idx : numpy.ndarray
        Which.
    coef : numpy.ndarray
        ``(len(idx), nb + 1)`` their kernels' coefficients and backgrounds.
    basis : numpy.ndarray
        ``(nb, size, size)`` the basis images.

    Returns
    -------
    numpy.ndarray
        ``(len(idx), npix)`` float32.
    """
    nb = basis.shape[0]
    kern = np.tensordot(coef[:, :nb], basis, axes=1)
    conv = convolve_pairs(stamps.source[idx], kern, stamps.fit_half).reshape(len(idx), -1)
    return conv + coef[:, nb, None].astype(np.float32)


#: Matched-filter S/N of the residual beyond which the pixels around it (outside a star's
#: core) are masked.
CLIP_SIGMA = 5.0

#: Radius of a star's core, never clipped, in FWHM of the broader PSF: a kernel that does
#: not yet fit the core is a fit to improve, not another source.
CORE_FWHM = 1.5

#: Rounds of pixel clipping and refitting.
CLIP_ROUNDS = 2


def _central_inverse(spec: np.ndarray, n_fft: int, m: int, out_half: int) -> np.ndarray:
    """The inverse of ``rfft2`` spectra over the last two axes, only the central
    ``2 * out_half + 1`` rows and columns of an ``m`` x ``m`` stamp: the inverse along the
    rows first, then along the columns of the kept rows alone (a third of them).
    ``spec`` is overwritten."""
    c = m // 2
    keep = slice(c - out_half, c + out_half + 1)
    rows = sfft.ifft(spec, axis=-2, workers=-1, overwrite_x=True)[..., keep, :]
    return sfft.irfft(rows, n=n_fft, axis=-1, workers=-1)[..., keep]


def convolve_stamps(stamps: np.ndarray, kernels: np.ndarray, out_half: int) -> np.ndarray:
    """Convolve each stamp with each kernel and keep the central ``2 * out_half + 1`` pixels.

    The FFTs are zero-padded to a fast length (85 px stamps to 90: half the time).

    Parameters
    ----------
    stamps : numpy.ndarray
        ``(n, m, m)`` with ``m >= 2 * out_half + size`` (so the kept region never wraps).
    kernels : numpy.ndarray
        ``(k, size, size)`` odd-sized kernels.
    out_half : int
        Half-width of the region kept.

    Returns
    -------
    numpy.ndarray
        ``(n, k, 2 * out_half + 1, 2 * out_half + 1)`` float32.
    """
    n_fft = sfft.next_fast_len(stamps.shape[1], real=True)
    return convolve_spectra(stamps, kernel_spectrum(kernels, (n_fft, n_fft)), out_half)


def convolve_spectra(stamps: np.ndarray, spectra: np.ndarray, out_half: int) -> np.ndarray:
    """:func:`convolve_stamps` with the kernels' spectra (``(k, n_fft, n_fft // 2 + 1)``,
    :func:`tiles.kernel_spectrum` on the stamps' fast FFT grid) given."""
    m = stamps.shape[1]
    n_fft = sfft.next_fast_len(m, real=True)
    fs = sfft.rfft2(
        stamps.astype(np.float32, copy=False), s=(n_fft, n_fft), axes=(1, 2), workers=-1
    )
    return np.ascontiguousarray(_central_inverse(fs[:, None] * spectra[None], n_fft, m, out_half))


def convolve_pairs(stamps: np.ndarray, kernels: np.ndarray, out_half: int) -> np.ndarray:
    """As :func:`convolve_stamps`, but stamp ``i`` with kernel ``i`` only (``kernels`` is
    ``(n, size, size)``; the result ``(n, 2 * out_half + 1, 2 * out_half + 1)`` float32)."""
    n, m = stamps.shape[0], stamps.shape[1]
    n_fft = sfft.next_fast_len(m, real=True)
    out = np.empty((n, 2 * out_half + 1, 2 * out_half + 1), dtype=np.float32)
    batch = stamp_batch(m, 1)
    for start in range(0, n, batch):
        sl = slice(start, start + batch)
        spec = sfft.rfft2(stamps[sl].astype(np.float32), s=(n_fft, n_fft), axes=(1, 2), workers=-1)
        spec *= kernel_spectrum(kernels[sl], (n_fft, n_fft))
        out[sl] = _central_inverse(spec, n_fft, m, out_half)
    return out


@dataclasses.dataclass(frozen=True)
class Stamps:
    """Each candidate's stamps.

    Attributes
    ----------
    source : numpy.ndarray
        ``(n, m, m)`` source stamps, the fit region and the kernel's reach around it.
    target : numpy.ndarray
        ``(n, npix)`` target pixels over the fit region.
    var_target : numpy.ndarray
        ``(n, npix)`` their variance.
    var_source : numpy.ndarray
        ``(n, m, m)`` source variance stamps (for ``K^2 * var``).
    ok : numpy.ndarray
        ``(n,)`` stamp inside the image and unmasked.
    fit_half : int
        Half-width (px) of the fit region.
    """

    source: np.ndarray
    target: np.ndarray
    var_target: np.ndarray
    var_source: np.ndarray
    ok: np.ndarray
    fit_half: int


def build_stamps(
    source: Exposure,
    target: Exposure,
    x: np.ndarray,
    y: np.ndarray,
    size: int,
    fit_half: int,
) -> Stamps:
    """Cut the stamps around the candidates (the design is made when fitted:
    :func:`design_chunks`).

    Parameters
    ----------
    source, target : Exposure
        The image convolved and the one it is matched to.
    x, y : numpy.ndarray
        Candidate positions (px).
    size : int
        Kernel side (px): the source stamps reach ``size // 2`` beyond the fit region.
    fit_half : int
        Half-width (px) of the fit region.

    Returns
    -------
    Stamps
    """
    src_half = fit_half + size // 2
    xi, yi = np.rint(x).astype(np.intp), np.rint(y).astype(np.intp)
    n = len(xi)
    npix = (2 * fit_half + 1) ** 2
    # one stamp stack at a time, the masks reduced to ``ok`` before the pixels are cut
    ok = ~np.any((cutouts(source.mask, xi, yi, src_half)[0] & int(UNUSABLE)) != 0, axis=(1, 2))
    ok &= ~np.any((cutouts(target.mask, xi, yi, fit_half)[0] & int(UNUSABLE)) != 0, axis=(1, 2))
    ss, in_s = cutouts(source.image, xi, yi, src_half)
    tt, _ = cutouts(target.image, xi, yi, fit_half)
    vt, _ = cutouts(target.variance, xi, yi, fit_half)
    vs, _ = cutouts(source.variance, xi, yi, src_half)
    return Stamps(
        ss.astype(np.float32, copy=False),
        tt.reshape(n, npix).astype(np.float32, copy=False),
        np.clip(vt.reshape(n, npix), 1e-30, None).astype(np.float32, copy=False),
        vs.astype(np.float32, copy=False),
        ok & in_s,
        fit_half,
    )


def pair_batches(stamps: Stamps, n: int) -> Iterator[slice]:
    """Slices of ``n`` stamps, each as many as :func:`convolve_pairs` transforms at once:
    work on a stamp at a time (a kernel image, a model) is done a batch at a time, never
    for all the stamps at once (at 1000 stamps of 117 px, a copy of their source variance
    stamps alone is 55 MB)."""
    step = stamp_batch(stamps.source.shape[-1], 1)
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


def source_variance(
    stamps: Stamps, idx: np.ndarray, coef: np.ndarray, basis: np.ndarray
) -> np.ndarray:
    """``K_i^2 * var_source`` over each stamp's fit region, with each stamp's kernel ``coef``."""
    out = np.empty((len(idx), stamps.target.shape[1]), dtype=np.float32)
    for sl in pair_batches(stamps, len(idx)):
        kern = np.tensordot(coef[sl, : basis.shape[0]], basis, axes=1) ** 2  # (n, size, size)
        conv = convolve_pairs(stamps.var_source[idx[sl]], kern, stamps.fit_half)
        out[sl] = np.clip(conv.reshape(len(conv), -1), 0, None)
    return out


def stamp_equations(
    design: np.ndarray, target: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each stamp's weighted least-squares normal equations (masked pixels have weight 0).

    Parameters
    ----------
    design : numpy.ndarray
        ``(n, npix, nb + 1)`` the stamps' design (:func:`stamp_design`).
    target, weights : numpy.ndarray
        ``(n, npix)`` their target pixels and weights.

    Returns
    -------
    normal : (n, nb + 1, nb + 1) normal matrices ``A^T W A``
    rhs : (n, nb + 1) right-hand sides ``A^T W y``
    target_power : (n,) ``y^T W y``, the chi^2 of a zero model (for held-out chi^2s)
    """
    aw = design * weights[:, :, None]
    normal = np.matmul(aw.transpose(0, 2, 1), design).astype(np.float64)
    rhs = np.einsum("npk,np->nk", aw, target).astype(np.float64)
    t = target.astype(np.float64)
    return normal, rhs, np.einsum("np,np,np->n", weights, t, t)


#: Strength of the roughness prior in a stamp's own fit, as a fraction of that stamp's
#: information (``tr(M_i) / tr(R)``). Those fits only judge the stamps (rejection), so
#: the prior is a stabiliser that shrinks every stamp alike and the cuts compare like with
#: like; the spatial fit, which makes the kernel, adds its own prior once, its strength
#: chosen from the data (:mod:`kernel_prior`), to the stamps' equations without this one.
STAMP_PRIOR = 1e-3


def stamp_prior(normal: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    """Each stamp's prior, :data:`STAMP_PRIOR` of its own information times ``R``.

    Parameters
    ----------
    normal : numpy.ndarray
        ``(n, nb + 1, nb + 1)`` the stamps' normal matrices.
    penalty : numpy.ndarray
        ``(nb + 1, nb + 1)`` :func:`kernel_basis.roughness_penalty`.

    Returns
    -------
    numpy.ndarray
        ``(n, nb + 1, nb + 1)``.
    """
    nb = penalty.shape[0] - 1
    info = np.trace(normal[:, :nb, :nb], axis1=1, axis2=2) / np.trace(penalty)
    return STAMP_PRIOR * info[:, None, None] * penalty[None]


def solve_with_prior(
    normal: np.ndarray, rhs: np.ndarray, prior: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each stamp's coefficients with its prior (``prior[i]``, :func:`stamp_prior`) added
    once to its normal matrix.

    Returns
    -------
    coef : (n, nb + 1) solutions (NaN where singular)
    ok : (n,) bool
    """
    coef = np.full(rhs.shape, np.nan)
    ok = np.zeros(len(rhs), dtype=bool)
    if len(rhs):
        posterior = normal + prior
        try:
            coef = np.linalg.solve(posterior, rhs[..., None])[..., 0]
            ok = np.all(np.isfinite(coef), axis=1)
        except np.linalg.LinAlgError:
            for i in range(len(rhs)):
                try:
                    coef[i] = np.linalg.solve(posterior[i], rhs[i])
                    ok[i] = np.all(np.isfinite(coef[i]))
                except np.linalg.LinAlgError:
                    ok[i] = False
    return coef, ok


def model_variance(target: np.ndarray, variance: np.ndarray, model: np.ndarray) -> np.ndarray:
    """Each stamp's variance with its sources' Poisson term taken from the fitted model.

    A variance plane estimated from the image itself is ``sky + max(image - level, 0) /
    gain``: each pixel's own noise is in it, and inverse-variance weights then favour the
    pixels that fluctuated low, biasing every fitted flux (and the kernel sum) low. Over a
    stamp the plane is regressed on the target, ``variance = v0 + c * target`` on the
    pixels above the stamp's lowest variance (the source term; exact for such planes, a
    linear variance-counts relation for others), and evaluated on the model instead, never
    below that lowest variance (ip_diffim's ``iterateSingleKernel`` remakes the variance
    after a first fit for the same reason). A stamp without such pixels keeps its plane.

    Parameters
    ----------
    target, variance, model : numpy.ndarray
        ``(n, npix)`` each stamp's target pixels, their variance plane and the model of
        the target from a first fit.

    Returns
    -------
    numpy.ndarray
        ``(n, npix)`` float32.
    """
    floor = variance.min(axis=1, keepdims=True)
    active = variance > floor * (1.0 + 1e-6)
    n = active.sum(axis=1)
    t = np.where(active, target, 0.0).astype(np.float64)
    v = np.where(active, variance, 0.0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        tm, vm = t.sum(axis=1) / n, v.sum(axis=1) / n
        dt = np.where(active, target - tm[:, None], 0.0)
        slope = (dt * (variance - vm[:, None])).sum(axis=1) / (dt**2).sum(axis=1)
    fitted = (n >= 10) & np.isfinite(slope) & (slope > 0)
    intercept = vm - slope * tm
    out = np.maximum(intercept[:, None] + slope[:, None] * model, floor)
    return np.where(fitted[:, None], out, variance).astype(np.float32)


def normalised_residuals(
    target: np.ndarray, model: np.ndarray, var_total: np.ndarray
) -> np.ndarray:
    """``(target - model) / sqrt(variance)`` of each stamp, ``(n, npix)``."""
    return np.asarray((target - model) / np.sqrt(var_total))


def residual_stats(
    resid: np.ndarray, used: np.ndarray, n_params: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """chi^2/dof, mean and std of each stamp's normalised residual over ``used`` pixels.

    Parameters
    ----------
    resid : numpy.ndarray
        ``(n, npix)`` :func:`normalised_residuals`.
    used : numpy.ndarray
        ``(n, npix)`` bool, the pixels counted.
    n_params : int
        Parameters of each stamp's model (for the degrees of freedom).
    """
    r = resid.astype(np.float64)
    n = np.maximum(used.sum(axis=1), 1)
    dof = np.maximum(n - n_params, 1)
    mean = np.where(used, r, 0.0).sum(axis=1) / n
    var = np.where(used, (r - mean[:, None]) ** 2, 0.0).sum(axis=1) / n
    return np.where(used, r**2, 0.0).sum(axis=1) / dof, mean, np.sqrt(var)


def kernel_residual_stats(
    stamps: Stamps,
    idx: np.ndarray,
    coef: np.ndarray,
    basis: np.ndarray,
    var_total: np.ndarray,
    used: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`residual_stats` of the stamps ``idx`` against kernels ``coef`` given from
    outside their own fits (the spatial model's), by :func:`kernel_model`, a batch of
    stamps at a time (:func:`pair_batches`)."""
    out = np.empty((3, len(idx)))
    for sl in pair_batches(stamps, len(idx)):
        model = kernel_model(stamps, idx[sl], coef[sl], basis)
        resid = normalised_residuals(stamps.target[idx[sl]], model, var_total[sl])
        out[:, sl] = residual_stats(resid, used[sl], coef.shape[1])
    return out[0], out[1], out[2]


def star_power(
    star: np.ndarray, var_total: np.ndarray, used: np.ndarray, n_params: int
) -> tuple[np.ndarray, np.ndarray]:
    """Degrees of freedom of each stamp's fit over ``used`` pixels, and its star's power:
    the fitted kernel model ``star`` (without the background) squared over the variance,
    summed over those pixels (the star's squared S/N)."""
    power = np.where(used, star.astype(np.float64) ** 2 / var_total, 0.0).sum(axis=1)
    return np.maximum(used.sum(axis=1) - n_params, 1), power


def clip_mask(resid: np.ndarray, fit_half: int, core_radius: float, fwhm: float) -> np.ndarray:
    """Pixels to keep (``(n, npix)`` bool): all but other sources outside the star's core.

    The normalised residual is filtered by a Gaussian of the PSF's width and divided by the
    filtered noise's sigma (a matched filter: a faint transient stands out there, not pixel
    by pixel); pixels beyond ``core_radius`` where it exceeds :data:`CLIP_SIGMA`, grown by
    one FWHM, are masked.
    """
    side = 2 * fit_half + 1
    sigma = max(fwhm / FWHM_PER_SIGMA, 0.5)
    filtered = ndimage.gaussian_filter(
        resid.reshape(-1, side, side), (0, sigma, sigma), mode="constant"
    )
    # unit white noise filtered by a unit-sum Gaussian has sigma 1 / (2 sqrt(pi) sigma)
    z = filtered * (2.0 * np.sqrt(np.pi) * sigma)
    r = np.arange(side) - fit_half
    rr = np.hypot(r[:, None], r[None, :])
    outside = rr > core_radius
    grow = int(np.ceil(fwhm))
    disk = np.hypot(*np.mgrid[-grow : grow + 1, -grow : grow + 1]) <= fwhm
    bad = (np.abs(z) > CLIP_SIGMA) & outside[None]
    # Grown only on the stamps that have something to grow (most have nothing).
    hit = np.flatnonzero(bad.any(axis=(1, 2)))
    bad[hit] = ndimage.binary_dilation(bad[hit], structure=disk[None])
    return ~(bad & outside[None]).reshape(resid.shape)


def inverse(matrices: np.ndarray) -> np.ndarray:
    """Batched inverse; singular matrices give NaN."""
    try:
        return np.asarray(np.linalg.inv(matrices))
    except np.linalg.LinAlgError:
        out = np.full(matrices.shape, np.nan)
        for i, m in enumerate(matrices):
            try:
                out[i] = np.linalg.inv(m)
            except np.linalg.LinAlgError:
                continue
        return out


def intrinsic_scatter(resid: np.ndarray, errors: np.ndarray) -> float:
    """The maximum-likelihood scatter ``s`` (>= 0) of deviations whose variances are their
    formal errors squared plus ``s^2`` (Gaussian); 0 when the errors alone explain them.

    The likelihood's root in ``s^2`` weights each value by ``1 / (e^2 + s^2)^2``, so the
    precise values (bright stars) set ``s`` and the loose ones, which hardly see it, do
    not dilute it.

    Parameters
    ----------
    resid, errors : numpy.ndarray
        ``(n,)`` deviations from the model and their formal errors (finite, positive).

    Returns
    -------
    float
        ``s``, in the units of the values.
    """

    def slope(s2: float) -> float:
        total = errors**2 + s2
        return float(np.sum((resid**2 - total) / total**2))

    if slope(0.0) <= 0.0:
        return 0.0
    # slope(max resid^2) < 0: every term's numerator is then <= 0, one of them < 0
    lo, hi = 0.0, float(np.max(resid**2))
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if slope(mid) > 0.0 else (lo, mid)
    return float(np.sqrt(hi))


def outliers(
    values: np.ndarray,
    errors: np.ndarray,
    terms: np.ndarray,
    nsigma: float,
    high_only: bool = False,
) -> np.ndarray:
    """Values further than ``nsigma`` from an iteratively clipped fit, in units of their errors.

    The fit is weighted least squares on ``terms`` (a column of ones: the mean; Chebyshev
    terms in x, y: a smooth function of position). Each deviation is divided by its own
    error (faint stars have loose kernels) with the sample's intrinsic scatter added in
    quadrature (:func:`intrinsic_scatter`, over the values kept: colour terms, PSF
    mismatch), so a sample with extra scatter is not mostly rejected, and a bright star,
    whose formal error is far below that scatter, is judged by the scatter.

    Parameters
    ----------
    values, errors : numpy.ndarray
        ``(n,)`` per-stamp values and their formal errors.
    terms : numpy.ndarray
        ``(n, t)`` the fit's design.
    nsigma : float
        The cut.
    high_only : bool
        Cut only the values above the fit.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` bool (non-finite values are outliers).
    """
    n = len(values)
    if n < max(3, 2 * terms.shape[1] + 1):
        return np.zeros(n, dtype=bool)
    err = np.where(np.isfinite(errors) & (errors > 0), errors, np.inf)
    ok = np.isfinite(values)
    v = np.where(ok, values, 0.0)
    model = np.full(n, float(np.median(v[ok]))) if ok.any() else np.zeros(n)
    keep = ok & np.isfinite(err)
    total = err
    for _ in range(5):
        if keep.sum() > 2:
            s = intrinsic_scatter((v - model)[keep], err[keep])
            total = np.sqrt(err**2 + s**2)
        # values without a finite error (degenerate fits) cannot weigh in the fit
        new = ok & np.isfinite(err) & (np.abs(v - model) <= nsigma * total)
        if new.sum() < max(2, terms.shape[1]):
            break
        w = 1.0 / total[new]
        coef, *_ = np.linalg.lstsq(terms[new] * w[:, None], v[new] * w, rcond=None)
        model = terms @ coef
        if np.array_equal(new, keep):
            break
        keep = new
    deviation = v - model if high_only else np.abs(v - model)
    return ~ok | (deviation > nsigma * total)


def residual_power_outliers(
    chi2: np.ndarray, dof: np.ndarray, power: np.ndarray, nsigma: float
) -> np.ndarray:
    """Stamps whose residual keeps more of their star's power than the others'.

    What a contaminant (a transient, a variable, a blend) does to a stamp's kernel is its
    flux relative to the star's, so the figure is the residual's sum of squares as a
    fraction of the star's power (its squared S/N). Over clean stamps it follows
    ``a dof / power + b``: the noise (``a`` near 1 when the variance planes are right)
    plus the fraction ``b`` of PSF mismatch every model leaves. A plain cut on chi^2
    would reject the brightest stars for that mismatch, which grows with the flux
    squared, and pass a transient on a faint star. The cut is :func:`outliers`' on that
    fit (high side only), each stamp's error the noise of its chi^2
    (``median chi^2 sqrt(2 dof)``) over its power.

    Parameters
    ----------
    chi2, dof, power : numpy.ndarray
        ``(n,)`` chi^2 per degree of freedom, degrees of freedom and the star's power
        (:func:`residual_stats`, :func:`star_power`).
    nsigma : float
        The cut.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` bool.
    """
    level = float(np.median(chi2)) if len(chi2) else 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = chi2 * dof / power
        error = level * np.sqrt(2.0 * dof) / power
        terms = np.column_stack([dof / power, np.ones(len(chi2))])
    return outliers(fraction, error, terms, nsigma, high_only=True)


@dataclasses.dataclass(frozen=True)
class StampFits:
    """Each stamp's own kernel, its quality figures and its status.

    Every array has one row per candidate (NaN, or False, for stamps never fitted).

    Attributes
    ----------
    coef : numpy.ndarray
        ``(n, nb + 1)`` kernel coefficients and background.
    normal, rhs : numpy.ndarray
        ``(n, nb + 1, nb + 1)`` and ``(n, nb + 1)``: the normal equations (masked pixels
        out, without the prior), which the spatial fit sums.
    target_power : numpy.ndarray
        ``(n,)`` each stamp's ``y^T W y`` over the same weights (held-out chi^2s).
    weight_sum : numpy.ndarray
        ``(n,)`` each stamp's summed weights over the same pixels (the scale of its
        equations' expected noise, :mod:`kernel_noise`).
    var_total : numpy.ndarray
        ``(n, npix)`` the propagated variance of the difference.
    used : numpy.ndarray
        ``(n, npix)`` pixels kept by the clipping.
    chi2, resid_mean, resid_std, kernel_sum, kernel_sum_err, background_err : numpy.ndarray
        ``(n,)``.
    status, reason : numpy.ndarray
        ``(n,)`` object: GOOD/BAD/CONTROL, and why BAD.
    """

    coef: np.ndarray
    normal: np.ndarray
    rhs: np.ndarray
    target_power: np.ndarray
    weight_sum: np.ndarray
    var_total: np.ndarray
    used: np.ndarray
    chi2: np.ndarray
    resid_mean: np.ndarray
    resid_std: np.ndarray
    kernel_sum: np.ndarray
    kernel_sum_err: np.ndarray
    background_err: np.ndarray
    status: np.ndarray
    reason: np.ndarray


@dataclasses.dataclass(frozen=True)
class _ChunkFit:
    """The own fits of a chunk of stamps (:func:`fit_chunk`); one row per stamp."""

    coef: np.ndarray
    ok: np.ndarray
    normal: np.ndarray
    rhs: np.ndarray
    target_power: np.ndarray
    weight_sum: np.ndarray
    var_total: np.ndarray
    used: np.ndarray
    chi2: np.ndarray
    resid_mean: np.ndarray
    resid_std: np.ndarray
    dof: np.ndarray
    power: np.ndarray


def fit_chunk(
    stamps: Stamps,
    idx: np.ndarray,
    design: np.ndarray,
    basis: np.ndarray,
    fwhm: float,
) -> _ChunkFit:
    """Fit the stamps ``idx`` (with their design) each with its own kernel, with clipping.

    Each stamp's fit depends on that stamp alone, so the stamps are fitted a chunk at a
    time and only a chunk's design is ever held (:data:`STAMP_BATCH_BYTES`).

    Parameters
    ----------
    stamps : Stamps
        The stamps.
    idx : numpy.ndarray
        Which.
    design : numpy.ndarray
        ``(len(idx), npix, nb + 1)`` their design (:func:`stamp_design`).
    basis : numpy.ndarray
        The basis images.
    fwhm : float
        FWHM (px) of the broader PSF (:func:`clip_mask`, :data:`CORE_FWHM`).

    Returns
    -------
    _ChunkFit
    """
    nb = basis.shape[0]
    penalty = roughness_penalty(basis)
    target, var_target = stamps.target[idx], stamps.var_target[idx]
    m = stamps.var_source.shape[-1]
    c, h = m // 2, stamps.fit_half
    vs0 = stamps.var_source[idx, c - h : c + h + 1, c - h : c + h + 1]
    w0 = 1.0 / (var_target + vs0.reshape(len(idx), -1))
    nrm, rh, _ = stamp_equations(design, target, w0)
    coef, ok0 = solve_with_prior(nrm, rh, stamp_prior(nrm, penalty))
    coef[~ok0] = 0.0
    coef[~ok0, 0] = 1.0
    var_src = source_variance(stamps, idx, coef, basis)
    var_total = var_target + var_src
    model = stamp_model(design, coef, nb + 1)
    var_fit = model_variance(target, var_target, model) + var_src
    keep = np.ones(target.shape, dtype=bool)
    yy, wsum, okf = np.zeros(len(idx)), np.zeros(len(idx)), np.zeros(len(idx), dtype=bool)
    refit: np.ndarray | slice = slice(None)
    for _ in range(CLIP_ROUNDS + 1):
        # only the stamps whose mask changed are refitted: the others' equations, fit and
        # model are those of the last round (each stamp's fit is its own)
        weights = np.where(keep[refit], 1.0 / var_fit[refit], 0.0).astype(np.float32)
        nrm[refit], rh[refit], yy[refit] = stamp_equations(design[refit], target[refit], weights)
        wsum[refit] = weights.sum(axis=1, dtype=np.float64)
        coef[refit], okf[refit] = solve_with_prior(
            nrm[refit], rh[refit], stamp_prior(nrm[refit], penalty)
        )
        model[refit] = stamp_model(design[refit], np.nan_to_num(coef[refit]), nb + 1)
        new = clip_mask(
            normalised_residuals(target, model, var_total),
            stamps.fit_half,
            CORE_FWHM * fwhm,
            fwhm,
        )
        refit = np.nonzero(np.any(new != keep, axis=1))[0]
        if len(refit) == 0:
            break
        keep = new
    c2, mu, sd = residual_stats(normalised_residuals(target, model, var_total), keep, nb + 1)
    star = stamp_model(design, np.nan_to_num(coef), nb)
    dof, power = star_power(star, var_total, keep, nb + 1)
    return _ChunkFit(coef, okf, nrm, rh, yy, wsum, var_total, keep, c2, mu, sd, dof, power)


def fit_stamps(
    stamps: Stamps,
    x: np.ndarray,
    y: np.ndarray,
    control: np.ndarray,
    basis: np.ndarray,
    fwhm: float,
    shape: tuple[int, int],
    config: KernelConfig,
    reporter: Reporter,
) -> StampFits:
    """Fit each stamp's own kernel (with clipping) and reject the outliers.

    Parameters
    ----------
    stamps : Stamps
        The stamps.
    x, y : numpy.ndarray
        Candidate positions (science px).
    control : numpy.ndarray
        Control stars (never fitted).
    basis : numpy.ndarray
        The basis images.
    fwhm : float
        FWHM (px) of the broader PSF: sets the clipping's filter, growth and the star's
        core (:data:`CORE_FWHM`), never clipped.
    shape : (int, int)
        Image shape (scales positions for the background outliers' plane).
    config : KernelConfig
        Rejection limits.
    reporter : Reporter
        Progress and cancellation.

    Returns
    -------
    StampFits
    """
    n, nb = len(x), basis.shape[0]
    npix = stamps.target.shape[1]
    status = np.where(control, "CONTROL", "GOOD").astype(object)
    reason = np.full(n, "", dtype=object)
    ok = stamps.ok
    reason[~ok] = "edge or masked in the fit stamp"
    status[~ok & ~control] = "BAD"
    fitted = np.nonzero(ok & ~control)[0]
    chi2, rmean, rstd, ksum, ksum_err, bg_err, dof, power = (np.full(n, np.nan) for _ in range(8))
    coef_all = np.full((n, nb + 1), np.nan)
    normal = np.zeros((n, nb + 1, nb + 1))
    rhs = np.zeros((n, nb + 1))
    target_power, weight_sum = np.zeros(n), np.zeros(n)
    var_total = np.zeros((n, npix), dtype=np.float32)
    used = np.ones((n, npix), dtype=bool)
    fit_ok = np.zeros(n, dtype=bool)
    for chunk, design in design_chunks(stamps, fitted, basis):
        f = fit_chunk(stamps, fitted[chunk], design, basis, fwhm)
        i = fitted[chunk]
        coef_all[i], fit_ok[i], normal[i], rhs[i] = f.coef, f.ok, f.normal, f.rhs
        target_power[i], weight_sum[i] = f.target_power, f.weight_sum
        var_total[i], used[i] = f.var_total, f.used
        chi2[i], rmean[i], rstd[i] = f.chi2, f.resid_mean, f.resid_std
        dof[i], power[i] = f.dof, f.power
        reporter.update(0.05 + 0.6 * chunk.stop / len(fitted))
    if len(fitted):
        sums = np.append(basis.sum(axis=(1, 2)), 0.0)
        ksum[fitted] = coef_all[fitted] @ sums
        nrm = normal[fitted]
        with np.errstate(all="ignore"):
            cov = inverse(nrm + stamp_prior(nrm, roughness_penalty(basis)))
            ksum_err[fitted] = np.sqrt(np.clip(np.einsum("k,nkl,l->n", sums, cov, sums), 0, None))
            bg_err[fitted] = np.sqrt(np.clip(cov[:, nb, nb], 0, None))
        bad_fit = fitted[~fit_ok[fitted]]
        status[bad_fit], reason[bad_fit] = "BAD", "fit failed"
        _reject(
            status,
            reason,
            rmean,
            rstd,
            ksum,
            ksum_err,
            coef_all[:, nb],
            bg_err,
            (chi2, dof, power),
            x,
            y,
            shape,
            config,
        )
    return StampFits(
        coef_all,
        normal,
        rhs,
        target_power,
        weight_sum,
        var_total,
        used,
        chi2,
        rmean,
        rstd,
        ksum,
        ksum_err,
        bg_err,
        status,
        reason,
    )


def _reject(
    status: np.ndarray,
    reason: np.ndarray,
    rmean: np.ndarray,
    rstd: np.ndarray,
    ksum: np.ndarray,
    ksum_err: np.ndarray,
    bg: np.ndarray,
    bg_err: np.ndarray,
    residual: tuple[np.ndarray, np.ndarray, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    shape: tuple[int, int],
    config: KernelConfig,
) -> None:
    """Mark BAD (in place, on this function's own arrays) the stamps failing a cut, iterated.

    ``residual`` is each stamp's chi^2 per degree of freedom, degrees of freedom and
    star power (:func:`residual_power_outliers`)."""
    chi2, dof, power = residual
    plane = chebyshev_terms(x, y, 1, shape)
    for _ in range(config.max_iterations):
        good = np.nonzero(status == "GOOD")[0]
        new = np.zeros(len(status), dtype=bool)
        nsig = config.max_stamp_outlier_sigma
        for mask_, why in (
            (np.abs(rmean[good]) > config.max_residual_mean, "residual mean"),
            (rstd[good] > config.max_residual_std, "residual std"),
            (
                outliers(
                    ksum[good], ksum_err[good], np.ones((len(good), 1)), config.max_kernel_sum_sigma
                ),
                "kernel sum outlier",
            ),
            (outliers(bg[good], bg_err[good], plane[good], nsig), "background outlier"),
            (
                residual_power_outliers(chi2[good], dof[good], power[good], nsig),
                "residual power outlier",
            ),
        ):
            hit = good[mask_ & ~new[good]]
            reason[hit] = why
            new[hit] = True
        if not new.any():
            break
        status[new] = "BAD"


def psf_kernel_coefficients(
    src_psf: PsfEstimate, tgt_psf: PsfEstimate, basis: np.ndarray
) -> np.ndarray:
    """Least-squares basis coefficients of the kernel mapping the source PSF onto the target PSF."""
    size = basis.shape[-1]
    fit_half = tgt_psf.image.shape[0] // 2
    half = fit_half + size // 2
    m = 2 * half + 1
    emb = np.zeros((m, m))
    ps = src_psf.image
    h = ps.shape[0] // 2
    k = min(h, half)
    emb[half - k : half + k + 1, half - k : half + k + 1] = ps[h - k : h + k + 1, h - k : h + k + 1]
    conv = convolve_stamps(emb[None], basis, fit_half)[0].reshape(basis.shape[0], -1).T
    coef, *_ = np.linalg.lstsq(conv.astype(np.float64), tgt_psf.image.ravel(), rcond=None)
    return np.asarray(coef)
