"""FITS images written a block of rows at a time: astropy's bytes, without its plane copies."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st

from diffviewer.exposure import Exposure, MaskPlane
from diffviewer.fits_write import is_plain, write_exposure, write_hdulist, write_plain_hdus
from diffviewer.io import read_exposure

TYPES = ("u1", "i2", ">i2", "i4", "i8", "f4", ">f4", "f8")


def _astropy_bytes(hdul: fits.HDUList) -> bytes:
    """What astropy's own writer makes of the list."""
    buffer = io.BytesIO()
    hdul.writeto(buffer)
    return buffer.getvalue()


def _plain_bytes(hdul: fits.HDUList, block_bytes: int) -> bytes:
    buffer = io.BytesIO()
    write_plain_hdus(buffer, hdul, block_bytes)
    return buffer.getvalue()


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(TYPES),
    shape=st.one_of(
        st.tuples(st.integers(0, 40)),
        st.tuples(st.integers(1, 30), st.integers(1, 30)),
        st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 5)),
    ),
    block_bytes=st.integers(1, 3000),
    layout=st.sampled_from(["read-only", "writeable", "transposed", "strided"]),
    seed=st.integers(0, 2**16),
)
def test_a_plain_image_is_written_as_astropy_writes_it(
    dtype: str, shape: tuple[int, ...], block_bytes: int, layout: str, seed: int
) -> None:
    # Any stored type, byte order, shape (an empty 1-D sample set of diagnostics.fits
    # included), block size (one row at least, so blocks of one row and of many) and
    # memory layout: the same bytes, header and padding included, as astropy's writer.
    rng = np.random.default_rng(seed)
    data = (rng.normal(0.0, 1000.0, size=shape) % 120).astype(dtype)
    if layout == "transposed":
        data = data.T
    elif layout == "strided" and data.ndim >= 1 and len(data) > 1:
        data = data[::2]
    data.flags.writeable = layout != "read-only"
    before = data.copy()

    def hdul() -> fits.HDUList:
        # A list of its own for each writer: each brings its headers up to date.
        primary = fits.PrimaryHDU()
        primary.header["OBSERVER"] = "someone"
        return fits.HDUList([primary, fits.ImageHDU(data, name="IMAGE")])

    assert all(is_plain(hdu) for hdu in hdul())
    assert _plain_bytes(hdul(), block_bytes) == _astropy_bytes(hdul())
    np.testing.assert_array_equal(data, before)  # the caller's array is left as it was


def test_an_exposure_file_is_astropys_bytes_and_reads_back(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    exposure = Exposure(
        image=rng.normal(100.0, 5.0, (70, 90)).astype(np.float32),
        variance=np.full((70, 90), 25.0, np.float32),
        mask=(rng.random((70, 90)) < 0.1).astype(np.int16) * 4,
        psf=np.outer(np.hanning(7), np.hanning(7)) / np.hanning(7).sum() ** 2,
        zero_point=27.5,
        source="synthetic",
    )
    path = write_exposure(tmp_path / "exposure.fits", exposure)
    with fits.open(path) as hdul:
        hdul.readall()
        assert path.read_bytes() == _astropy_bytes(hdul)
    back = read_exposure(str(path))
    np.testing.assert_array_equal(back.image, exposure.image)
    np.testing.assert_array_equal(back.variance, exposure.variance)
    np.testing.assert_array_equal(back.mask, exposure.mask)


@pytest.mark.parametrize(
    "hdu",
    [
        fits.ImageHDU(np.arange(12, dtype=np.uint16).reshape(3, 4)),  # stored with BZERO
        fits.CompImageHDU(np.arange(64, dtype=np.int16).reshape(8, 8)),
        fits.BinTableHDU.from_columns([fits.Column("a", "E", array=np.arange(3.0))]),
    ],
    ids=["uint16", "compressed", "table"],
)
def test_other_hdus_are_left_to_astropy(
    tmp_path: Path, hdu: fits.ImageHDU | fits.CompImageHDU | fits.BinTableHDU
) -> None:
    # Scaled, compressed or tabular HDUs are astropy's to write; the file is still written.
    hdul = fits.HDUList([fits.PrimaryHDU(), hdu])
    assert not is_plain(hdu)
    path = write_hdulist(tmp_path / "other.fits", hdul)
    with fits.open(path) as back:
        np.testing.assert_array_equal(back[1].data, hdu.data)


def test_a_read_only_plane_is_written_without_a_copy_of_it(tmp_path: Path) -> None:
    # astropy swaps a read-only plane to big-endian by a whole copy (fresh memory for
    # each plane: 64 MB at 4096^2); the block writer stages 4 MiB at a time.
    plane = np.ones((1024, 4096), np.float32)  # 16 MB
    exposure = Exposure(image=plane, variance=plane, mask=np.zeros(plane.shape, np.int16))
    tracemalloc.start()
    try:
        write_exposure(tmp_path / "big.fits", exposure)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < plane.nbytes / 2


@pytest.mark.parametrize("compress_mask", [False, True])
def test_pixels_without_data_are_written_nan(tmp_path: Path, compress_mask: bool) -> None:
    # By the block writer, or by astropy's when the mask is tile-compressed; the
    # exposure's own planes keep their values (the engine's 0).
    rng = np.random.default_rng(4)
    mask = np.where(rng.random((300, 40)) < 0.2, int(MaskPlane.NO_DATA), 0).astype(np.int16)
    mask[5] |= int(MaskPlane.SAT)  # other planes leave a pixel as it is
    image = np.where(mask & int(MaskPlane.NO_DATA), 0.0, 7.0).astype(np.float32)
    exposure = Exposure(image=image, variance=np.full(image.shape, 4.0, np.float32), mask=mask)
    path = write_exposure(tmp_path / "x.fits", exposure, compress_mask=compress_mask)
    no_data = (mask & int(MaskPlane.NO_DATA)) != 0
    with fits.open(path) as hdul:
        for name, value in (("IMAGE", 7.0), ("VARIANCE", 4.0)):
            data = hdul[name].data
            assert np.array_equal(np.isnan(data), no_data), name
            assert np.all(data[~no_data] == value), name
    assert np.all(exposure.image[no_data] == 0.0) and not np.isnan(exposure.variance).any()
    # in blocks of a few rows, each with its own part of the mask
    buffer = io.BytesIO()
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image)])
    write_plain_hdus(buffer, hdul, block_bytes=500, blank={1: (mask, int(MaskPlane.NO_DATA))})
    buffer.seek(0)
    with fits.open(buffer) as back:
        assert np.array_equal(np.isnan(back[1].data), no_data)
