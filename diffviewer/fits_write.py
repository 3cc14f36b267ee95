"""FITS images and catalogs, written atomically (:func:`diffviewer.atomic.atomic_write`).

Images whose pixels are stored as they are (no tile compression, no BZERO or BSCALE) are
written by :func:`write_plain_hdus`, a block of rows at a time, the same bytes as
astropy's ``HDUList.writeto``: astropy swaps a read-only plane (every Exposure's are) to
big-endian by a whole copy of it, fresh memory for each plane written.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.table import Table

from diffviewer.atomic import atomic_write
from diffviewer.errors import OutputError
from diffviewer.exposure import Exposure, MaskPlane, mask_header_cards, row_blocks
from diffviewer.fits_header import ZERO_POINT_KEYS, header_with_wcs, text_card

#: A mask and mask planes: the pixels where any of the planes is set.
Blank = tuple[np.ndarray, int]


def write_exposure(
    path: str | Path,
    exposure: Exposure,
    *,
    protect: Sequence[str | Path] = (),
    compress_mask: bool = False,
) -> Path:
    """Write an exposure as IMAGE, MASK and VARIANCE HDUs (and PSF when known), atomically.

    Each image HDU carries the exposure's WCS; the MASK HDU names its planes with
    ``MP_<NAME>`` cards as LSST does; the zero point is written as ``MAGZP``. Pixels
    without data (NO_DATA) are NaN in IMAGE and VARIANCE, as LSST writes them, so that a
    tool weighting by the variance without reading the mask takes no value there. The
    file reads back with :func:`read_exposure` into an equal exposure, but for those
    pixels' values, which the reader makes 0 and the median variance.

    Parameters
    ----------
    path : str or Path
        Destination FITS file.
    exposure : Exposure
        What to write.
    protect : sequence of str or Path, optional
        Input files that must not be overwritten.
    compress_mask : bool
        Tile-compress the MASK HDU (RICE_1, lossless); it reads back unchanged.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OutputError
        When writing fails or ``path`` is an input.
    """
    primary = fits.PrimaryHDU(header=header_with_wcs(exposure.header, None))
    # Whole (a long string continues on CONTINUE cards), in a card of its own: an input's
    # SOURCE card (GOTO's) is the input's.
    source = exposure.source.encode("ascii", "replace").decode("ascii")
    primary.header["DVSOURCE"] = text_card(source, "where the exposure came from (diffviewer)")
    # The zero point is the exposure's, not a card the header carried from its input
    # (a matched template's pixels are on the science's scale, a score has none).
    for key in ZERO_POINT_KEYS:
        primary.header.remove(key, ignore_missing=True, remove_all=True)
    if exposure.zero_point is not None:
        primary.header["MAGZP"] = (exposure.zero_point, "AB mag of one image unit")
    plane_header = header_with_wcs(fits.Header(), exposure.wcs)
    mask_header = plane_header.copy()
    # A reader takes the unit from the HDU it shows: the planes carry it, squared for the
    # variance (the primary holds no data).
    unit = str(primary.header.get("BUNIT", "")).strip()
    image_header, variance_header = plane_header.copy(), plane_header.copy()
    if unit:
        image_header["BUNIT"] = unit
        variance_header["BUNIT"] = f"({unit})**2"
    for key, bit, comment in mask_header_cards():
        mask_header[key if len(key) <= 8 else f"HIERARCH {key}"] = (bit, comment)
    hdus = [
        primary,
        fits.ImageHDU(exposure.image, header=image_header, name="IMAGE"),
        (
            fits.CompImageHDU(
                exposure.mask, header=mask_header, name="MASK", compression_type="RICE_1"
            )
            if compress_mask
            else fits.ImageHDU(exposure.mask, header=mask_header, name="MASK")
        ),
        fits.ImageHDU(exposure.variance, header=variance_header, name="VARIANCE"),
    ]
    if exposure.psf is not None:
        hdus.append(fits.ImageHDU(exposure.psf, name="PSF"))
    mask, plane = exposure.mask, int(MaskPlane.NO_DATA)
    # looked for a block of rows at a time: no mask-sized temporary
    anywhere = any((mask[rows] & plane).any() for rows in row_blocks(mask.shape))
    blank = {1: (mask, plane), 3: (mask, plane)} if anywhere else {}
    return write_hdulist(path, fits.HDUList(hdus), protect=protect, blank=blank)


def write_hdulist(
    path: str | Path,
    hdul: fits.HDUList,
    *,
    protect: Sequence[str | Path] = (),
    blank: Mapping[int, Blank] | None = None,
) -> Path:
    """Write a FITS HDU list atomically (see :func:`quiet_fits_verify` for the warnings).

    Parameters
    ----------
    path : str or Path
        Destination FITS file.
    hdul : astropy.io.fits.HDUList
        What to write (the arrays it holds are not modified).
    protect : sequence of str or Path, optional
        Input files that must not be overwritten.
    blank : mapping of int to (numpy.ndarray, int), optional
        A mask and planes: the pixels with any of those planes are written NaN in the
        floating-point HDU of that index.

    Returns
    -------
    Path
        ``path``.
    """
    blank = blank or {}

    def write(tmp: Path) -> None:
        with quiet_fits_verify():
            if all(is_plain(hdu) for hdu in hdul):
                with open(tmp, "wb") as handle:
                    write_plain_hdus(handle, hdul, blank=blank)
            else:
                for index, (mask, planes) in blank.items():  # astropy's writer: copies
                    hdul[index].data = np.where((mask & planes) != 0, np.nan, hdul[index].data)
                hdul.writeto(tmp, overwrite=True)

    return atomic_write(path, write, protect)


#: Bytes of big-endian pixels staged at a time by :func:`write_plain_hdus`. The buffer is
#: made once an HDU and reused, where astropy's whole-plane copy is fresh memory each
#: time (64 MB a 4096^2 float32 plane): ``diffviewer run``'s writes at 4096^2 took 0.61-0.66
#: s against 1.33-1.34 s (whole runs in turn, 2026-12-06), 1.14 against 1.28 s beside
#: HOTPANTS's own writes in ``bench_peers.py`` (README, issue 9).
BLOCK_BYTES = 1 << 22

#: Pixel types FITS stores as they are (BITPIX 8, 16, 32, 64, -32, -64).
PLAIN_TYPES = frozenset(np.dtype(code) for code in ("u1", "i2", "i4", "i8", "f4", "f8"))


def is_plain(hdu: Any) -> bool:
    """Whether :func:`write_plain_hdus` writes ``hdu`` (an HDU of an HDU list).

    It does a primary or image HDU, not tile-compressed, without BZERO or BSCALE cards,
    whose data, if any, is an array of at least one dimension of :data:`PLAIN_TYPES`
    (either byte order); astropy's writer does every other.
    """
    if type(hdu) not in (fits.PrimaryHDU, fits.ImageHDU):
        return False
    if "BZERO" in hdu.header or "BSCALE" in hdu.header:
        return False
    data = hdu.data
    return data is None or (
        isinstance(data, np.ndarray)
        and data.ndim >= 1
        and data.dtype.newbyteorder("=") in PLAIN_TYPES
    )


def write_plain_hdus(
    handle: BinaryIO,
    hdul: fits.HDUList,
    block_bytes: int = BLOCK_BYTES,
    blank: Mapping[int, Blank] | None = None,
) -> None:
    """Write an HDU list, every HDU of which :func:`is_plain`, to a file open for binary writing.

    As ``HDUList.writeto`` does, the list is verified (a problem raises) and given EXTEND
    when it has extensions, and each header is brought up to date with its data. Then
    each header is written, its pixels big-endian a block of rows at a time (at most
    ``block_bytes``, one row at least) through one buffer, and the zeros that end its data
    on a 2880-byte record.

    Parameters
    ----------
    handle : BinaryIO
        The file.
    hdul : astropy.io.fits.HDUList
        What to write.
    block_bytes : int
        Bytes staged at a time.
    blank : mapping of int to (numpy.ndarray, int), optional
        A mask, of the shape of the data of the HDU of that index (floating-point), and
        planes: the pixels with any of those planes are written NaN.
    """
    blank = blank or {}
    hdul.verify(option="exception")
    hdul.update_extend()
    for index, hdu in enumerate(hdul):
        hdu.update_header()
        handle.write(hdu.header.tostring().encode("ascii"))
        if hdu.data is not None:
            _write_big_endian(handle, hdu.data, block_bytes, blank.get(index))


def _write_big_endian(
    handle: BinaryIO, data: np.ndarray, block_bytes: int, blank: Blank | None
) -> None:
    """An array's pixels, big-endian, by blocks along its first axis (NaN where ``blank``
    is set, when given), then its FITS padding."""
    row_bytes = data[0].nbytes if data.ndim > 1 and len(data) else data.itemsize
    rows = max(1, block_bytes // max(row_bytes, 1))
    buffer = np.empty((min(rows, len(data)), *data.shape[1:]), data.dtype.newbyteorder(">"))
    for start in range(0, len(data), rows):
        block = buffer[: len(data[start : start + rows])]
        block[...] = data[start : start + rows]
        if blank is not None:
            block[(blank[0][start : start + rows] & blank[1]) != 0] = np.nan
        handle.write(block.data)
    handle.write(bytes(-data.nbytes % 2880))


@contextlib.contextmanager
def quiet_fits_verify() -> Iterator[None]:
    """Silence astropy's VerifyWarning while building or writing FITS headers.

    Long keywords become HIERARCH cards and over-long comments of re-formatted input
    cards are cut: both are what we want, not something to warn about.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)
        yield


_TABLE_FORMATS = {".ecsv": "ascii.ecsv", ".fits": "fits", ".fit": "fits"}


def _without_int8(table: Table) -> Table:
    """``table`` with its signed 8-bit integer columns widened to 16 bits.

    astropy writes an int8 column as a FITS logical (TFORM 'L'): the catalog's ``sign``
    (-1, 0, +1) read back as True / False.
    """
    narrow = [name for name in table.colnames if table[name].dtype == np.int8]
    if not narrow:
        return table
    out = table.copy(copy_data=False)
    for name in narrow:
        out[name] = out[name].astype(np.int16)
    return out


def write_table(path: str | Path, table: Table, *, protect: Sequence[str | Path] = ()) -> Path:
    """Write a catalog as ECSV (``.ecsv``) or FITS (``.fits``), chosen by suffix, atomically.

    Parameters
    ----------
    path : str or Path
        Destination file.
    table : astropy.table.Table
        The catalog.
    protect : sequence of str or Path, optional
        Input files that must not be overwritten.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OutputError
        On another suffix, when writing fails, or when ``path`` is an input.
    """
    fmt = _TABLE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise OutputError(f"cannot write table {path}: use a .ecsv or .fits name")

    if fmt == "fits":
        try:
            with quiet_fits_verify():
                hdu = fits.table_to_hdu(_without_int8(table))
        except (ValueError, TypeError, UnicodeError) as exc:
            raise OutputError(
                f"cannot write {path}: FITS cannot hold the table ({type(exc).__name__}: {exc}); "
                "write it as .ecsv instead"
            ) from None
        return write_hdulist(path, fits.HDUList([fits.PrimaryHDU(), hdu]), protect=protect)
    return atomic_write(path, lambda tmp: table.write(tmp, format=fmt, overwrite=True), protect)
