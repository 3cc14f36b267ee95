"""FITS images and catalogs, written atomically (:func:`diffviewer.atomic.atomic_write`)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.table import Table

from diffviewer.atomic import atomic_write
from diffviewer.errors import OutputError
from diffviewer.exposure import Exposure, mask_header_cards
from diffviewer.fits_header import header_with_wcs


def write_exposure(
    path: str | Path,
    exposure: Exposure,
    *,
    protect: Sequence[str | Path] = (),
    compress_mask: bool = False,
) -> Path:
    """Write an exposure as IMAGE, MASK and VARIANCE HDUs (and PSF when known), atomically.

    Each image HDU carries the exposure's WCS; the MASK HDU names its planes with
    ``MP_<NAME>`` cards as LSST does; the zero point is written as ``MAGZP``. The file
    reads back with :func:`read_exposure` into an equal exposure.

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
    source = exposure.source.encode("ascii", "replace").decode("ascii")[-68:]
    primary.header["SOURCE"] = (source, "where the exposure came from")
    if exposure.zero_point is not None:
        primary.header["MAGZP"] = (exposure.zero_point, "AB mag of one image unit")
    plane_header = header_with_wcs(fits.Header(), exposure.wcs)
    mask_header = plane_header.copy()
    for key, bit, comment in mask_header_cards():
        mask_header[key if len(key) <= 8 else f"HIERARCH {key}"] = (bit, comment)
    hdus = [
        primary,
        fits.ImageHDU(exposure.image, header=plane_header, name="IMAGE"),
        (
            fits.CompImageHDU(
                exposure.mask, header=mask_header, name="MASK", compression_type="RICE_1"
            )
            if compress_mask
            else fits.ImageHDU(exposure.mask, header=mask_header, name="MASK")
        ),
        fits.ImageHDU(exposure.variance, header=plane_header, name="VARIANCE"),
    ]
    if exposure.psf is not None:
        hdus.append(fits.ImageHDU(exposure.psf, name="PSF"))
    return write_hdulist(path, fits.HDUList(hdus), protect=protect)


def write_hdulist(
    path: str | Path, hdul: fits.HDUList, *, protect: Sequence[str | Path] = ()
) -> Path:
    """Write a FITS HDU list atomically (see :func:`quiet_fits_verify` for the warnings).

    Parameters
    ----------
    path : str or Path
        Destination FITS file.
    hdul : astropy.io.fits.HDUList
        What to write.
    protect : sequence of str or Path, optional
        Input files that must not be overwritten.

    Returns
    -------
    Path
        ``path``.
    """

    def write(tmp: Path) -> None:
        with quiet_fits_verify():
            hdul.writeto(tmp, overwrite=True)

    return atomic_write(path, write, protect)


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
        with quiet_fits_verify():
            hdu = fits.table_to_hdu(table)
        return write_hdulist(path, fits.HDUList([fits.PrimaryHDU(), hdu]), protect=protect)
    return atomic_write(path, lambda tmp: table.write(tmp, format=fmt, overwrite=True), protect)
