"""Convolution with the spatially varying kernel, and the difference image.

The kernel at output pixel (x, y) is ``K(x, y) = sum_s P_s(x, y) K_s`` (Chebyshev terms
``P_s``), so the convolved image is exactly ``sum_s P_s(x, y) (K_s * I)(x, y)``: one real
FFT of the image, reused for every term, and one inverse FFT per term (scipy.fft,
single precision, all cores, sizes from ``next_fast_len``). Pixels beyond the image edge
count as zero; those outputs are flagged EDGE.

The variance is convolved with the squared kernel. ``K(x, y)^2`` is not linear in the
terms, so it is approximated by ``sum_s P_s(x, y) L_s``, the least-squares fit of the
squared kernel realised on a grid of positions over the image in the same Chebyshev
terms (exact when the kernel is spatially constant).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.fft as sfft
from numpy.polynomial import chebyshev
from scipy import ndimage
from scipy.signal import fftconvolve

from diffviewer.engine.kernel import KernelFit, KernelSolution, chebyshev_terms, term_powers
from diffviewer.engine.progress import Reporter, null_reporter
from diffviewer.exposure import MASK_DTYPE, Exposure, MaskPlane

#: Planes of the convolved image's mask that are grown by the kernel footprint.
_GROWN = int(MaskPlane.BAD | MaskPlane.SAT | MaskPlane.CR | MaskPlane.INTRP | MaskPlane.SUSPECT)

#: Input pixels replaced by the median before convolving (their values are meaningless).
_INVALID = int(MaskPlane.NO_DATA | MaskPlane.BAD)


@dataclasses.dataclass(frozen=True, eq=False)
class SubtractionProducts:
    """The matched image and the (not yet decorrelated) difference.

    Attributes
    ----------
    matched : Exposure
        The convolved image: the template matched to the science (or the science
        matched to the template when ``fit.convolved == 'science'``).
    difference : Exposure
        ``science - K * template - background`` (template convolved), or
        ``K * science - template - background`` (science convolved); variance
        propagated, masks carried.
    kernel_sum_map : numpy.ndarray
        Kernel sum on a coarse grid (see ``KernelSolution.kernel_sum_map``, step
        :attr:`kernel_sum_step`).
    kernel_sum_step : int
        Grid spacing (px) of :attr:`kernel_sum_map`.
    psf : numpy.ndarray
        PSF image of the difference (sum 1).
    background : numpy.ndarray
        The differential background that was subtracted (float32, read-only).
    """

    matched: Exposure
    difference: Exposure
    kernel_sum_map: np.ndarray
    kernel_sum_step: int
    psf: np.ndarray
    background: np.ndarray


def _fft_shape(shape: tuple[int, int], size: int) -> tuple[int, int]:
    """Padded FFT shape for a linear convolution with a ``size`` kernel."""
    return (
        sfft.next_fast_len(shape[0] + size - 1, real=True),
        sfft.next_fast_len(shape[1] + size - 1, real=True),
    )


def _kernel_spectrum(kernel: np.ndarray, fshape: tuple[int, int]) -> np.ndarray:
    """rfft2 of a centred odd kernel placed with its centre at the origin."""
    size = kernel.shape[-1]
    pad = np.zeros(fshape, dtype=np.float32)
    pad[:size, :size] = kernel
    pad = np.roll(pad, (-(size // 2), -(size // 2)), axis=(0, 1))
    return sfft.rfft2(pad, workers=-1)


def convolve_terms(
    image: np.ndarray, kernels: np.ndarray, order: int, reporter: Reporter | None = None
) -> np.ndarray:
    """``sum_s P_s(x, y) (K_s * image)``, the spatially varying convolution.

    Parameters
    ----------
    image : numpy.ndarray
        2-D image (zero beyond its edges).
    kernels : numpy.ndarray
        ``(n_terms(order), size, size)`` kernels of the Chebyshev terms over the image.
    order : int
        Chebyshev order of the terms.
    reporter : Reporter, optional
        Progress (over the terms) and cancellation.

    Returns
    -------
    numpy.ndarray
        float32 image of the same shape.
    """
    reporter = reporter or null_reporter()
    ny, nx = image.shape
    size = kernels.shape[-1]
    fshape = _fft_shape((ny, nx), size)
    spec = sfft.rfft2(np.asarray(image, dtype=np.float32), s=fshape, workers=-1)
    tx = chebyshev.chebvander(2.0 * np.arange(nx) / max(nx - 1, 1) - 1.0, order).astype(np.float32)
    ty = chebyshev.chebvander(2.0 * np.arange(ny) / max(ny - 1, 1) - 1.0, order).astype(np.float32)
    out = np.zeros((ny, nx), dtype=np.float32)
    for s, (px, py) in enumerate(term_powers(order)):
        conv = sfft.irfft2(spec * _kernel_spectrum(kernels[s], fshape), s=fshape, workers=-1)[
            :ny, :nx
        ]
        if order > 0:
            conv *= ty[:, py, None]
            conv *= tx[None, :, px]
        out += conv
        reporter.update((s + 1) / len(kernels))
    return out


def squared_kernel_terms(solution: KernelSolution, n_grid: int = 7) -> np.ndarray:
    """Kernels ``L_s`` with ``sum_s P_s(x, y) L_s ~ K(x, y)^2`` (least squares on a grid).

    Parameters
    ----------
    solution : KernelSolution
        The spatial kernel.
    n_grid : int
        Grid positions per axis.

    Returns
    -------
    numpy.ndarray
        ``(n_terms(spatial_order), size, size)``.
    """
    if solution.spatial_order == 0:
        return solution.spatial_kernels() ** 2
    ny, nx = solution.shape
    mx, my = np.meshgrid(np.linspace(0, nx - 1, n_grid), np.linspace(0, ny - 1, n_grid))
    gx, gy = mx.ravel(), my.ravel()
    sq = np.array([solution.evaluate(float(a), float(b)) ** 2 for a, b in zip(gx, gy, strict=True)])
    p = chebyshev_terms(gx, gy, solution.spatial_order, solution.shape)
    coef, *_ = np.linalg.lstsq(p, sq.reshape(len(gx), -1), rcond=None)
    return coef.reshape(-1, *sq.shape[1:])


def _filled(exposure: Exposure, array: np.ndarray) -> np.ndarray:
    """``array`` with NO_DATA/BAD pixels replaced by the median of the others (float32)."""
    invalid = (exposure.mask & _INVALID) != 0
    if not invalid.any():
        return array
    fill = np.median(array[~invalid]) if (~invalid).any() else 0.0
    return np.where(invalid, np.float32(fill), array)


def convolved_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Mask of an image convolved with a ``size`` kernel.

    BAD/SAT/CR/INTRP/SUSPECT are grown by the kernel footprint; EDGE is set where the
    kernel reaches beyond the image or onto NO_DATA; NO_DATA itself is kept.
    """
    half = size // 2
    out = mask & ~MASK_DTYPE(int(MaskPlane.DETECTED | MaskPlane.DETECTED_NEGATIVE))
    for plane in MaskPlane:
        bit = int(plane)
        if not bit & (_GROWN | int(MaskPlane.NO_DATA)):
            continue
        hit = (mask & bit) != 0
        if not hit.any():
            continue
        grown = ndimage.maximum_filter(hit.view(np.uint8), size=size, mode="constant") > 0
        target = int(MaskPlane.EDGE) if plane == MaskPlane.NO_DATA else bit
        out = out | np.where(grown, MASK_DTYPE(target), MASK_DTYPE(0))
    edge = np.ones(mask.shape, dtype=bool)
    edge[half : mask.shape[0] - half, half : mask.shape[1] - half] = False
    return (out | np.where(edge, MASK_DTYPE(int(MaskPlane.EDGE)), MASK_DTYPE(0))).astype(MASK_DTYPE)


def _template_planes(mask: np.ndarray) -> np.ndarray:
    """A template's mask as seen on the difference: SAT becomes SAT_TEMPLATE."""
    sat = (mask & int(MaskPlane.SAT)) != 0
    out = mask & ~MASK_DTYPE(int(MaskPlane.SAT | MaskPlane.DETECTED | MaskPlane.DETECTED_NEGATIVE))
    return (out | np.where(sat, MASK_DTYPE(int(MaskPlane.SAT_TEMPLATE)), MASK_DTYPE(0))).astype(
        MASK_DTYPE
    )


def difference_psf(fit: KernelFit) -> np.ndarray:
    """PSF of the difference: the science PSF, or the kernel (image centre) times it when
    the science is convolved (sum 1)."""
    sci = np.asarray(fit.science_psf.image, dtype=np.float64)
    if fit.convolved == "template":
        return sci / sci.sum()
    ny, nx = fit.solution.shape
    k = fit.solution.evaluate((nx - 1) / 2.0, (ny - 1) / 2.0)
    out = fftconvolve(sci, k, mode="full")
    return out / out.sum()


def subtract_images(
    science: Exposure, template: Exposure, fit: KernelFit, reporter: Reporter
) -> SubtractionProducts:
    """Convolve one image with the kernel and subtract.

    Parameters
    ----------
    science, template : Exposure
        The pair on one pixel grid.
    fit : KernelFit
        The kernel; ``fit.convolved`` says which image it applies to.
    reporter : Reporter
        Progress and cancellation.

    Returns
    -------
    SubtractionProducts
        The difference is always science side minus template side.
    """
    sol = fit.solution
    source, target = fit.source_target(science, template)
    kernels = sol.spatial_kernels()
    matched_image = convolve_terms(_filled(source, source.image), kernels, sol.spatial_order)
    reporter.update(0.45)
    matched_var = convolve_terms(
        _filled(source, source.variance), squared_kernel_terms(sol), sol.spatial_order
    )
    matched_var = np.clip(matched_var, 0.0, None)
    reporter.update(0.85)
    matched_mask = convolved_mask(source.mask, sol.size)
    matched = source.replace(
        image=matched_image,
        variance=matched_var,
        mask=matched_mask,
        psf=None,
        source=f"{source.source} convolved with the matching kernel",
    )
    background = sol.background_image()
    if fit.convolved == "template":
        diff = science.image - matched_image - background
        mask = science.mask | _template_planes(matched_mask)
    else:
        diff = matched_image - template.image - background
        mask = matched_mask | _template_planes(template.mask)
    variance = target.variance + matched_var
    psf = difference_psf(fit)
    difference = science.replace(
        image=diff, variance=variance, mask=mask.astype(MASK_DTYPE), psf=psf, source="difference"
    )
    step = max(16, min(science.shape) // 16)
    ksum = sol.kernel_sum_map(step=step)
    ksum.flags.writeable = False
    background.flags.writeable = False
    psf.flags.writeable = False
    reporter.update(1.0)
    return SubtractionProducts(matched, difference, ksum, step, psf, background)
