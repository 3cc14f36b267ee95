"""fftconv reproduces scipy.signal's fftconvolve and resample to the last bit, so the
engine can drop the scipy.signal import (and its scipy.stats) without moving a figure."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from diffviewer.engine import fftconv


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    ("image_shape", "kernel_shape"), [((41, 37), (21, 21)), ((25, 25), (9, 12))]
)
def test_convolve_is_scipy_fftconvolve(mode, dtype, image_shape, kernel_shape):
    rng = np.random.default_rng(3)
    image = rng.normal(size=image_shape).astype(dtype)
    kernel = rng.normal(size=kernel_shape).astype(dtype)
    ours = fftconv.convolve(image, kernel, mode)
    theirs = signal.fftconvolve(image, kernel, mode=mode)
    assert ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize(("n", "num"), [(21, 84), (20, 80), (20, 7), (21, 10)])
def test_resample_is_scipy_resample(n, num):
    values = np.random.default_rng(4).normal(size=(n, n + 2))
    for axis in (0, 1):
        size = values.shape[axis]
        k = num if size == n else num + 2
        np.testing.assert_array_equal(
            fftconv.resample(values, k, axis=axis), signal.resample(values, k, axis=axis)
        )


def test_convolve_refuses_a_kernel_larger_than_a_valid_image():
    with pytest.raises(ValueError, match="valid"):
        fftconv.convolve(np.ones((5, 5)), np.ones((7, 7)), "valid")


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_a_stack_of_convolutions_is_scipy_fftconvolve_along_its_image_axes(mode):
    # The kernel fit's noise terms convolve every basis image with one covariance: the
    # stack's axis, of length 1 in the kernel, is multiplied, not transformed.
    rng = np.random.default_rng(5)
    stack = rng.normal(size=(6, 23, 23))
    kernel = rng.normal(size=(1, 15, 15))
    ours = fftconv.convolve(stack, kernel, mode)
    theirs = signal.fftconvolve(stack, kernel, mode=mode, axes=(1, 2))
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_stacks_paired_image_by_image_are_scipy_fftconvolve_along_their_axes(mode):
    # Each kernel star's profile correlated with the kernel at that star
    # (kernel_star_sums): image i with kernel i, the stack's axis not transformed.
    rng = np.random.default_rng(7)
    stack = rng.normal(size=(5, 23, 23)).astype(np.float32)
    kernels = rng.normal(size=(5, 15, 15)).astype(np.float32)
    ours = fftconv.convolve(stack, kernels, mode, axes=(1, 2))
    theirs = signal.fftconvolve(stack, kernels, mode=mode, axes=(1, 2))
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours, theirs)


def test_an_axis_of_length_one_is_multiplied_as_scipy_does():
    rng = np.random.default_rng(6)
    image, kernel = rng.normal(size=(1, 40)), rng.normal(size=(9, 7))
    np.testing.assert_array_equal(
        fftconv.convolve(image, kernel), signal.fftconvolve(image, kernel)
    )
