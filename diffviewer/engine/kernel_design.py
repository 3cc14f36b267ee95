"""Kernel stamps and their designs: the stamps cut around the candidates, and each
source stamp convolved with every basis function, by FFT, a batch of stamps at a time.

A stamp's design is the matrix of its linear model ``target ~ sum_k c_k (B_k * source) +
background`` over the fit region: a column for each basis function ``B_k``
(:mod:`kernel_basis`) and a column of ones. The stamps' own fits (:mod:`kernel_stamps`)
make and use it a chunk of stamps at a time (:func:`design_chunks`); the model of a stamp
whose kernel is already known is made without it (:func:`kernel_model`). The same
convolutions give the kernel between two PSF images (:func:`psf_kernel_coefficients`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import scipy.fft as sfft

from diffviewer.engine.moments import box_extremum, cutouts
from diffviewer.engine.psf import PsfEstimate
from diffviewer.engine.psf_stars import measurable
from diffviewer.engine.tiles import kernel_spectrum
from diffviewer.exposure import UNUSABLE, Exposure

#: Bytes of complex spectra (stamps times kernels), and of design (:func:`design_chunks`),
#: held in memory at once: a 53 px kernel with 28 basis functions on 91 px stamps is
#: 0.9 MB of spectra a stamp, and a batch of 192 stamps made the kernel fit the peak of a
#: 1024^2 run's memory (+360 MB); at 32 MB the batches, beside the 78 MB design of the
#: wing's 61 px fit region, still did (1024^2 run 363 MB; 296 MB at 8 MB, in the same time).
#: The design itself is made and used a chunk of stamps at a time
#: (:func:`kernel_stamps.fit_stamps`): whole, it was 460 MB for the 1000 stamps of a
#: 2048 x 4096 run (a 63 px fit region), the peak of that run (1041 MB).
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
        ``(n,)`` stamp inside the image, its star measurable
        (:func:`~diffviewer.engine.psf_stars.measurable`: an unusable pixel only a pixel
        defect outside its core).
    usable : numpy.ndarray
        ``(n, npix)`` target pixels a fit may use: neither unusable on the target nor
        within the kernel's reach of a pixel unusable on the source.
    fit_half : int
        Half-width (px) of the fit region.
    """

    source: np.ndarray
    target: np.ndarray
    var_target: np.ndarray
    var_source: np.ndarray
    ok: np.ndarray
    usable: np.ndarray
    fit_half: int


def build_stamps(
    source: Exposure,
    target: Exposure,
    x: np.ndarray,
    y: np.ndarray,
    size: int,
    fit_half: int,
    core_radius: float,
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
    core_radius : float
        Radius (px) of a star's core, which must be whole on both images. A pixel defect
        on the source beyond it leaves the target's pixels within the kernel's reach of
        it out of the fit: on a synthetic pair whose convolved science held cosmic rays
        on 0.3 % of its pixels, 28 stamps were fitted so, where asking the kernel's whole
        reach about the core to be clean kept 11 (36 without the cosmic rays), their
        kernel sums as close to the truth.

    Returns
    -------
    Stamps
    """
    reach = size // 2
    src_half = fit_half + reach
    xi, yi = np.rint(x).astype(np.intp), np.rint(y).astype(np.intp)
    n = len(xi)
    npix = (2 * fit_half + 1) ** 2
    # one mask stack at a time, each reduced before the next is cut
    masks = cutouts(target.mask, xi, yi, fit_half)[0]
    ok = measurable(masks, core_radius)
    usable = ((masks & int(UNUSABLE)) == 0).reshape(n, npix)
    masks = cutouts(source.mask, xi, yi, src_half)[0]
    ok &= measurable(masks, core_radius)
    spoilt = (masks & int(UNUSABLE)) != 0
    del masks
    hit = np.flatnonzero(ok & spoilt.any(axis=(1, 2)))
    if len(hit):
        fit = slice(reach, reach + 2 * fit_half + 1)
        grown = box_extremum(spoilt[hit], reach, largest=True)[:, fit, fit]
        usable[hit] &= ~grown.reshape(len(hit), npix)
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
        usable,
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


def _central_inverse(spec: np.ndarray, n_fft: int, m: int, out_half: int) -> np.ndarray:
    """The inverse of ``rfft2`` spectra over the last two axes, only the central
    ``2 * out_half + 1`` rows and columns of an ``m`` x ``m`` stamp: the inverse along the
    rows first, then along the columns of the kept rows alone (a third of them).
    ``spec`` is overwritten."""
    c = m // 2
    keep = slice(c - out_half, c + out_half + 1)
    rows = sfft.ifft(spec, axis=-2, overwrite_x=True)[..., keep, :]
    return sfft.irfft(rows, n=n_fft, axis=-1)[..., keep]


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
    spectra = kernel_spectrum(kernels, (n_fft, n_fft))
    return np.ascontiguousarray(convolve_spectra(stamps, spectra, out_half))


def convolve_spectra(stamps: np.ndarray, spectra: np.ndarray, out_half: int) -> np.ndarray:
    """:func:`convolve_stamps` with the kernels' spectra (``(k, n_fft, n_fft // 2 + 1)``,
    :func:`tiles.kernel_spectrum` on the stamps' fast FFT grid) given, its result a
    strided view of the inverse transforms' central rows: the caller copies it once, into
    the layout it needs (:func:`stamp_design`)."""
    m = stamps.shape[1]
    n_fft = sfft.next_fast_len(m, real=True)
    fs = sfft.rfft2(stamps.astype(np.float32, copy=False), s=(n_fft, n_fft), axes=(1, 2))
    return _central_inverse(fs[:, None] * spectra[None], n_fft, m, out_half)


def convolve_pairs(stamps: np.ndarray, kernels: np.ndarray, out_half: int) -> np.ndarray:
    """As :func:`convolve_stamps`, but stamp ``i`` with kernel ``i`` only (``kernels`` is
    ``(n, size, size)``; the result ``(n, 2 * out_half + 1, 2 * out_half + 1)`` float32)."""
    n, m = stamps.shape[0], stamps.shape[1]
    n_fft = sfft.next_fast_len(m, real=True)
    out = np.empty((n, 2 * out_half + 1, 2 * out_half + 1), dtype=np.float32)
    batch = stamp_batch(m, 1)
    for start in range(0, n, batch):
        sl = slice(start, start + batch)
        spec = sfft.rfft2(stamps[sl].astype(np.float32), s=(n_fft, n_fft), axes=(1, 2))
        spec *= kernel_spectrum(kernels[sl], (n_fft, n_fft))
        out[sl] = _central_inverse(spec, n_fft, m, out_half)
    return out


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
    side = 2 * stamps.fit_half + 1
    design = np.empty((n, side * side, nb + 1), dtype=np.float32)
    design[:, :, nb] = 1.0
    # The convolutions copied once, from the inverse transforms straight into the design's
    # pixel-major layout (a contiguous copy, then a transposed one, were 0.3 s of the 2.1 s
    # of designs of the 2048 x 4096 pair, by cProfile). This FFT path is then 1.1-1.6 ms a
    # 117 px stamp with 28 basis functions (40-57 us a pair); 1-D passes shared across the
    # separable Gaussians times polynomials (float64 Toeplitz products, a scratch prototype
    # without the wing or the orthonormalising map) took 2.4 ms in the same process.
    pixels = design.reshape(n, side, side, nb + 1)
    batch = stamp_batch(stamps.source.shape[-1], nb)
    for start in range(0, n, batch):
        sl = slice(start, start + batch)
        conv = convolve_spectra(stamps.source[idx[sl]], spectra, stamps.fit_half)
        pixels[sl, :, :, :nb] = conv.transpose(0, 2, 3, 1)
    return design


def design_chunks(stamps: Stamps, n: int, basis: np.ndarray) -> list[slice]:
    """Chunks of ``n`` stamps whose design (:func:`stamp_design`) is made and used at once.

    A chunk holds at most :data:`STAMP_BATCH_BYTES` of design (the design of all the
    stamps at once was the peak of a run's memory: see there).

    Returns
    -------
    list of slice
        Consecutive positions in ``0:n``.
    """
    per_stamp = stamps.target.shape[1] * (basis.shape[0] + 1) * np.dtype(np.float32).itemsize
    step = max(1, int(STAMP_BATCH_BYTES // per_stamp))
    return [slice(start, min(start + step, n)) for start in range(0, n, step)]


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
