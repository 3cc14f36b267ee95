"""FFT convolution and Fourier resampling of small arrays, through ``scipy.fft`` alone.

``scipy.signal`` imports ``scipy.stats`` (0.5-0.7 s of every run's start-up on the
development machine under load); these two functions compute what
``scipy.signal.fftconvolve`` and ``scipy.signal.resample`` (real input, no window)
compute, with the same FFT lengths and the same operations, so the results are the
same to the last bit (``tests/engine/test_fftconv.py``).
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft


def _centred(full: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The centre ``shape`` of ``full`` (the lower start where the margin is odd)."""
    start = [(n - m) // 2 for n, m in zip(full.shape, shape, strict=True)]
    return full[tuple(slice(s, s + m) for s, m in zip(start, shape, strict=True))]


def convolve(
    image: np.ndarray,
    kernel: np.ndarray,
    mode: str = "full",
    axes: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Linear convolution of two real arrays of one number of dimensions, by FFT.

    Parameters
    ----------
    image, kernel : numpy.ndarray
        Real arrays (any units; the result has their product's).
    mode : {'full', 'same', 'valid'}
        ``full``: every overlap (shape ``image + kernel - 1``); ``same``: the centre of
        that of ``image``'s shape; ``valid``: where ``kernel`` lies wholly inside
        ``image`` (``image`` must then be at least as large on every axis). As in
        scipy, an axis on which either array has length 1 is multiplied, not
        transformed (the convolution there is a product): a ``(1, k, k)`` kernel
        convolves each image of a stack.
    axes : tuple of int, optional
        The axes convolved (all by default); along the others the two arrays are paired
        element by element (equal lengths, or 1): ``(n, a, a)`` images with
        ``(n, k, k)`` kernels and ``axes=(1, 2)`` convolve image ``i`` with kernel ``i``.

    Returns
    -------
    numpy.ndarray
        A new array, as ``scipy.signal.fftconvolve(image, kernel, mode, axes)``.

    Raises
    ------
    ValueError
        On an unknown mode, different numbers of dimensions, or a 'valid' kernel larger
        than the image.
    """
    a, b = np.asarray(image), np.asarray(kernel)
    if a.ndim != b.ndim:
        raise ValueError(f"convolve: image has {a.ndim} dimensions, kernel {b.ndim}")
    if mode not in ("full", "same", "valid"):
        raise ValueError(f"convolve: mode {mode!r} is not 'full', 'same' or 'valid'")
    along = range(a.ndim) if axes is None else axes
    transformed = [ax for ax in along if a.shape[ax] != 1 and b.shape[ax] != 1]
    pairs = list(enumerate(zip(a.shape, b.shape, strict=True)))
    if mode == "valid" and any(n < m for ax, (n, m) in pairs if ax in transformed):
        raise ValueError(
            f"convolve: a 'valid' convolution needs the kernel {b.shape} within {a.shape}"
        )
    shape = tuple(n + m - 1 if ax in transformed else max(n, m) for ax, (n, m) in pairs)
    if transformed:
        fshape = [sfft.next_fast_len(shape[ax], True) for ax in transformed]
        spectrum = sfft.rfftn(a, fshape, axes=transformed) * sfft.rfftn(b, fshape, axes=transformed)
        full = sfft.irfftn(spectrum, fshape, axes=transformed)[tuple(slice(n) for n in shape)]
    else:
        full = a * b
    if mode == "full":
        return full.copy()
    if mode == "same":
        kept = tuple(n if ax in transformed else shape[ax] for ax, (n, _) in pairs)
    else:
        kept = tuple(n - m + 1 if ax in transformed else shape[ax] for ax, (n, m) in pairs)
    return _centred(full, kept).copy()


def resample(values: np.ndarray, num: int, axis: int = 0) -> np.ndarray:
    """Band-limited resampling of a real array to ``num`` samples along ``axis``.

    The spectrum is cut or zero-padded (half the unpaired bin at an even length on
    each side) and scaled by ``num / n``, as ``scipy.signal.resample(values, num,
    axis=axis)`` does for real data without a window.

    Parameters
    ----------
    values : numpy.ndarray
        Real samples (any units; kept).
    num : int
        Number of samples wanted along ``axis``.
    axis : int
        The axis resampled.

    Returns
    -------
    numpy.ndarray
        ``values`` with ``num`` samples along ``axis``.
    """
    x = np.moveaxis(np.asarray(values), axis, -1)
    n = x.shape[-1]
    m = min(num, n)
    spectrum = sfft.rfft(x)[..., : m // 2 + 1]
    if m % 2 == 0 and num != n:
        spectrum[..., m // 2] *= 2 if num < n else 0.5
    out = sfft.irfft(spectrum / (n / num), n=num, overwrite_x=True)
    return np.moveaxis(out, -1, axis)
