"""Reading exposures from FITS and writing every output file, atomically.

Reading (:func:`read_exposure`) accepts single-HDU images, LSST-like
``IMAGE``/``MASK``/``VARIANCE`` files, alert triplets with ``<NAME>_VAR`` and
``<NAME>_PSF`` HDUs, separate inverse-variance weight and data-quality mask files
(the community pipeline's ``ooi``/``oow``/``ood`` siblings), tile-compressed
``.fits.fz`` files, and images with a celestial, a non-celestial or no WCS.

Writing goes through one place (:func:`atomic_write_bytes`, :func:`atomic_write_text`,
:func:`write_exposure`, :func:`write_table`): each file is written under a temporary
name in its own folder, flushed to disk and renamed, so a reader never sees half a
file and a failed or cancelled run leaves nothing behind. In a staging folder
(:func:`staged_output_dir`) the flushes run in the background while the next file is
encoded, and all are done before the folder is moved into place.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import os
import re
import shutil
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning
from astropy.table import Table
from astropy.wcs import WCS

from diffviewer.errors import InputError, OutputError
from diffviewer.exposure import (
    MASK_DTYPE,
    UNUSABLE,
    Exposure,
    MaskPlane,
    mask_header_cards,
    read_only,
    set_planes,
)
from diffviewer.fits_check import unreadable_fits_reason
from diffviewer.paths import (
    Extension,
    companion_files,
    ensure_not_input,
    parse_spec,
    require_file,
    template_specs,
)

# Path checks live in diffviewer.paths (no heavy imports); these two are kept importable
# from here for the callers that read and write through this module.
from diffviewer.paths import check_output_dir as check_output_dir
from diffviewer.paths import read_pairs_csv as read_pairs_csv
from diffviewer.saturation import PLATEAU_WIDTH, flat_top_level, star_plateau_level
from diffviewer.sky_stats import robust_sky

log = logging.getLogger(__name__)

#: Header keywords read as the photometric zero point (AB mag of one image unit), in order.
ZERO_POINT_KEYS = ("MAGZP", "MAGZPSCI", "PHOTZP", "MAGZERO", "MAGZPT", "ZEROPT", "ZPT", "ZP")
#: Plausible zero points (mag); values outside are sentinels such as -999 or 99.
ZERO_POINT_RANGE = (5.0, 45.0)
#: Zero point of an image in nJy: 1 nJy is AB magnitude 31.4 (AB: 0 mag = 3631 Jy).
NJY_ZERO_POINT = 31.4
#: Header keywords read as the gain (electrons per image unit), in order.
GAIN_KEYS = ("GAIN", "EGAIN")
#: Header keywords read as the saturation level (image units), in order.
SATURATION_KEYS = ("SATURATE", "SATLEVEL")
#: A sky level is taken as unsubtracted (usable for a Poisson gain) above this many sky sigmas.
SKY_LEVEL_MIN_SIGMAS = 5.0
#: Pixels of each block of rows in which an estimated variance is computed (2 MB of float64).
VARIANCE_BLOCK_PIXELS = 1 << 18

_STRUCTURAL = re.compile(
    r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|BZERO|BSCALE|BLANK|EXTNAME|EXTVER"
    r"|EXTLEVEL|INHERIT|CHECKSUM|DATASUM|Z[A-Z0-9_]*|TTYPE\d+|TFORM\d+|TFIELDS|THEAP)$"
)
_WCS_KEY = re.compile(
    r"^(WCSAXES|WCSNAME|WCSDIM|CTYPE\d|CRVAL\d|CRPIX\d|CDELT\d|CUNIT\d|CROTA\d|CD\d_\d|PC\d_\d"
    r"|PV\d_\d+|PS\d_\d+|CRDER\d|CSYER\d|LONPOLE|LATPOLE|RADESYS|RADECSYS|EQUINOX|EPOCH|MJDREF"
    r"|(A|B|AP|BP)_ORDER|(A|B|AP|BP)_\d+_\d+|(A|B)_DMAX|LTV\d|LTM\d_\d|WAT\d_\d+"
    r"|CPDIS\d|CPERR\d|DP\d|DQ\d|D2IMDIS\d|D2IMERR\d|D2IMARR)[A-Z]?$"
)


# --------------------------------------------------------------------------- specs


def demo_pair() -> tuple[Path, Path]:
    """The bundled demo pair (DECam i band stacks; see ``resources/demo/README.md``).

    Returns
    -------
    (Path, Path)
        The science and the template FITS files.

    Raises
    ------
    InputError
        When the files are missing from the installation.
    """
    package = Path(__file__).resolve().parent
    # Installed from a wheel or sdist, resources/ is the data package diffviewer.resources
    # (setup.py); in a source checkout it is the top-level folder beside the package.
    folders = [package / "resources" / "demo", package.parent / "resources" / "demo"]
    for folder in folders:
        science, template = folder / "science.fits", folder / "template.fits"
        if science.is_file() and template.is_file():
            return science, template
    raise InputError(
        f"the demo files science.fits and template.fits are in neither {folders[0]} nor "
        f"{folders[1]}; reinstall diffviewer (pip install from its wheel, sdist or source tree)"
    )


# --------------------------------------------------------------------------- FITS access


@contextlib.contextmanager
def _open_fits(path: Path, role: str) -> Iterator[fits.HDUList]:
    """Open a FITS file, turning every way it can fail into an :class:`InputError`."""
    require_file(path, role)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hdul = fits.open(path, memmap=False, lazy_load_hdus=False)
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise InputError(
            f"{role} file {path} is not a readable FITS file: {unreadable_fits_reason(path, exc)}"
        ) from None
    truncated = [w for w in caught if "truncated" in str(w.message).lower()]
    try:
        if truncated:
            raise InputError(
                f"{role} file {path} is truncated ({truncated[0].message}); "
                "copy or download it again"
            )
        yield hdul
    finally:
        hdul.close()


def _hdu_label(index: int, hdu: fits.hdu.base.ExtensionHDU | fits.PrimaryHDU) -> str:
    """One HDU as ``index NAME (shape)`` for messages."""
    has_data = hdu.is_image and hdu.shape
    shape = "x".join(str(n) for n in reversed(hdu.shape)) if has_data else "no data"
    return f"{index} {hdu.name or '(unnamed)'} ({shape})"


def _find_hdu(hdul: fits.HDUList, ext: Extension, path: Path, role: str) -> int:
    """Index of the HDU holding the image: the one named, or the first with 2-D data."""
    listing = ", ".join(_hdu_label(i, h) for i, h in enumerate(hdul))
    if ext is None:
        for i, hdu in enumerate(hdul):
            if hdu.is_image and len([n for n in hdu.shape if n > 1]) == 2:
                return i
        with_data = [(i, h) for i, h in enumerate(hdul) if h.is_image and h.shape]
        if not with_data:
            raise InputError(
                f"{role} file {path} holds no image data (HDUs: {listing}); "
                "give a FITS file with a 2-D image"
            )
        i, hdu = with_data[0]
        if len(hdu.shape) == 2:  # one pixel high or wide: the size check says the minimum
            return i
        raise InputError(
            f"{role} file {path}: HDU {i} holds a {len(hdu.shape)}-D array of shape "
            f"{hdu.shape}, not an image; give a 2-D image or name its extension"
        )
    if isinstance(ext, int):
        if 0 <= ext < len(hdul):
            return ext
    else:
        for i, hdu in enumerate(hdul):
            if hdu.name.upper() == ext.upper():
                return i
    raise InputError(f"{role} file {path} has no extension [{ext}]; it has: {listing}")


def _image_data(hdul: fits.HDUList, index: int, path: Path, role: str) -> np.ndarray:
    """The 2-D data of one HDU as native-endian float64 (BZERO/BSCALE applied)."""
    hdu = hdul[index]
    where = f"{role} file {path}, HDU {_hdu_label(index, hdu)}"
    if not hdu.is_image:
        raise InputError(f"{where} is a table, not an image; name an image extension")
    try:
        data = hdu.data
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(
            f"{where}: the data cannot be read ({exc}); the file is truncated "
            "or corrupt, copy or download it again"
        ) from None
    if data is None:
        raise InputError(f"{where} holds no image data; name an extension with a 2-D image")
    array = np.asarray(data)
    squeezed = array.reshape([n for n in array.shape if n > 1]) if array.ndim > 2 else array
    if squeezed.ndim != 2:
        raise InputError(
            f"{where} holds a {array.ndim}-D array of shape {array.shape}; "
            "give a 2-D image (one plane of a cube as its own file)"
        )
    return np.asarray(squeezed, dtype=np.float64)


def _merged_header(hdul: fits.HDUList, index: int) -> fits.Header:
    """The image HDU's header, with primary-header cards it lacks (structural cards dropped)."""
    own = hdul[index].header
    merged = fits.Header([c for c in own.cards if not _STRUCTURAL.match(c.keyword)])
    if index != 0:
        present = set(merged.keys())
        for card in hdul[0].header.cards:
            key = card.keyword
            if (
                key
                and key not in ("COMMENT", "HISTORY", "")
                and key not in present
                and not _STRUCTURAL.match(key)
                and not _WCS_KEY.match(key)
            ):
                merged.append(card)
    return merged


def _degenerate_matrix(matrix: np.ndarray) -> str | None:
    """Why a 2 x 2 pixel scale matrix maps the image onto a point or a line, or None."""
    scale = float(np.abs(matrix).max()) if np.isfinite(matrix).all() else math.nan
    if not scale > 0:
        return "its pixel scale matrix (CD) is zero or not finite"
    if abs(float(np.linalg.det(matrix))) <= 1e-10 * scale**2:
        return "its pixel scale matrix (CD) is singular"
    return None


def _header_cd(header: fits.Header) -> np.ndarray | None:
    """The header's own CD matrix (wcslib replaces a zero one by the unit matrix), or None."""
    keys = [f"CD{i}_{j}" for i in (1, 2) for j in (1, 2)]
    if not any(k in header for k in keys):
        return None
    try:
        return np.array([float(header.get(k, 0.0)) for k in keys]).reshape(2, 2)
    except (TypeError, ValueError):
        return np.full((2, 2), np.nan)


def _read_wcs(header: fits.Header, source: str) -> WCS | None:
    """The WCS of a header: None without WCS keywords, or when unreadable or degenerate.

    An unreadable or degenerate WCS (a zero or singular CD matrix, which wcslib may
    accept) is reported in one log line and dropped, so the images are handled in pixel
    coordinates (registered on stars, or taken as aligned).
    """
    if not any(_WCS_KEY.match(k) for k in header):
        return None
    cd = _header_cd(header)
    why = _degenerate_matrix(cd) if cd is not None else None
    wcs = None
    if why is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wcs = WCS(header, naxis=2)
        except Exception as exc:  # astropy/wcslib raise many types on malformed WCS
            reason = " ".join(str(exc).split())[:200]
            log.warning("%s: WCS cannot be read (%s); using pixel coordinates only", source, reason)
            return None
        if wcs.has_celestial:
            scale = np.asarray(wcs.celestial.pixel_scale_matrix, dtype=np.float64)
            why = _degenerate_matrix(scale)
    if why is not None:
        log.warning(
            "%s: the WCS is degenerate (%s: every pixel maps onto one sky point or line); "
            "using pixel coordinates only",
            source,
            why,
        )
        return None
    return wcs


def _header_float(header: fits.Header, keys: Sequence[str]) -> tuple[str, float] | None:
    """The first of ``keys`` present with a finite numeric value (numeric strings accepted)."""
    for key in keys:
        if key in header:
            try:
                value = float(header[key])
            except (TypeError, ValueError):
                continue
            if np.isfinite(value):
                return key, value
    return None


def header_zero_point(header: fits.Header) -> float | None:
    """Photometric zero point from a header, or None.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Looked up in :data:`ZERO_POINT_KEYS` order; an image with ``BUNIT = 'nJy'``
        has the zero point 31.4 when no keyword gives one.

    Returns
    -------
    float or None
        AB magnitude of one image unit.
    """
    lo, hi = ZERO_POINT_RANGE
    for key in ZERO_POINT_KEYS:
        found = _header_float(header, (key,))
        if found is not None and lo < found[1] < hi:
            return found[1]
    if str(header.get("BUNIT", "")).strip().lower() == "njy":
        return NJY_ZERO_POINT
    return None


def header_gain(header: fits.Header) -> float | None:
    """Gain (electrons per image unit) from a header, or None when absent or not positive."""
    found = _header_float(header, GAIN_KEYS)
    return found[1] if found is not None and found[1] > 0 else None


# --------------------------------------------------------------------------- masks, PSF, noise


def mask_from_planes(raw: np.ndarray, header: fits.Header) -> np.ndarray:
    """Translate a mask read from a file into :class:`MaskPlane` bits.

    Parameters
    ----------
    raw : numpy.ndarray
        Integer mask as stored.
    header : astropy.io.fits.Header
        Its header; ``MP_<NAME> = bit`` cards (as LSST writes them) map each named
        plane onto the plane of the same name here (planes we do not know are
        dropped). Without such cards every nonzero pixel becomes ``BAD`` (as for a
        data-quality file).

    Returns
    -------
    numpy.ndarray
        mask (``MASK_DTYPE``).
    """
    values = np.asarray(raw).astype(np.int64)
    planes = {k[3:]: header[k] for k in header if k.startswith("MP_")}
    if not planes:
        return np.where(values != 0, int(MaskPlane.BAD), 0).astype(MASK_DTYPE)
    out = np.zeros(values.shape, dtype=MASK_DTYPE)
    for name, bit in planes.items():
        if name in MaskPlane.__members__ and isinstance(bit, int) and 0 <= bit < 63:
            out[(values & (1 << bit)) != 0] |= MASK_DTYPE(int(MaskPlane[name]))
    return out


def normalize_psf(psf: np.ndarray, source: str) -> np.ndarray:
    """Return a PSF image with odd sides, centred, and summing to 1.

    An even side loses the row (column) farthest from the PSF's centroid.

    Parameters
    ----------
    psf : numpy.ndarray
        The PSF image as stored.
    source : str
        Where it came from, for the error message.

    Returns
    -------
    numpy.ndarray
        float64 PSF, sum 1.

    Raises
    ------
    InputError
        When the PSF is not 2-D, not finite or does not sum to a positive value.
    """
    out = np.nan_to_num(np.asarray(psf, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if out.ndim != 2 or min(out.shape) < 1 or out.sum() <= 0:
        raise InputError(
            f"PSF {source} (shape {out.shape}) is empty or does not sum to a positive "
            "value; give a 2-D PSF image or none"
        )
    for axis in (0, 1):
        n = out.shape[axis]
        if n % 2 == 0:
            weights = out.sum(axis=1 - axis)
            centroid = float(np.dot(np.arange(n), weights) / weights.sum())
            keep = slice(1, n) if centroid > (n - 1) / 2 else slice(0, n - 1)
            out = out[keep, :] if axis == 0 else out[:, keep]
    return out / out.sum()


def estimate_variance(
    image: np.ndarray, mask: np.ndarray, gain: float | None, source: str = "image"
) -> np.ndarray:
    """Estimate a variance plane from the image itself.

    The sky variance comes from :func:`robust_sky`; sources add their Poisson term
    ``max(image - sky, 0) / gain``. Without a gain, a sky that was not subtracted
    (level above :data:`SKY_LEVEL_MIN_SIGMAS` sky sigmas) gives an effective gain
    ``sky_level / sky_variance`` (Poisson sky); otherwise only the sky noise is used.

    Parameters
    ----------
    image : numpy.ndarray
        The image (image units).
    mask : numpy.ndarray
        Mask bits; NO_DATA, SAT and BAD pixels are left out of the sky estimate.
    gain : float or None
        Electrons per image unit.
    source : str
        Where the image came from, for the error message.

    Returns
    -------
    numpy.ndarray
        float32 variance (image units squared), each value computed in double precision
        and rounded once, a block of rows at a time (no image-sized float64 plane).

    Raises
    ------
    InputError
        When the image has no noise to measure (constant).
    """
    good = (mask & int(MaskPlane.NO_DATA | MaskPlane.SAT | MaskPlane.BAD)) == 0
    level, sigma = robust_sky(image, good)
    if not np.isfinite(sigma) or sigma <= 0:
        values, counts = np.unique(image[good], return_counts=True)
        most = int(np.argmax(counts)) if counts.size else 0
        what = (
            f"{counts[most] / counts.sum():.0%} of its {counts.sum()} usable pixels have the "
            f"one value {values[most]:g}"
            if counts.size
            else "no pixel is usable"
        )
        raise InputError(
            f"{source}: the sky noise cannot be measured: {what} (a saturated, clipped "
            "or blank image); give an image whose sky is not clipped (e.g. at 0) or "
            "saturated, or a variance plane (a VARIANCE or <NAME>_VAR extension, or a "
            "weight file)"
        )
    sky_var = sigma**2
    if gain is None and level > SKY_LEVEL_MIN_SIGMAS * sigma:
        gain = level / sky_var
    if gain is None:
        return np.full(image.shape, sky_var, dtype=np.float32)
    variance = np.empty(image.shape, dtype=np.float32)
    rows = max(1, VARIANCE_BLOCK_PIXELS // max(image.shape[1], 1))
    for start in range(0, image.shape[0], rows):
        block = image[start : start + rows] - level  # sky_var + max(image - level, 0) / gain
        np.maximum(block, 0.0, out=block)
        block /= gain
        block += sky_var
        variance[start : start + rows] = block
    return variance


#: Pixel values of at least this magnitude are blank fill, not data (ZTF alert cutouts pad
#: with -3.4e38, the most negative float32).
BLANK_MAGNITUDE = 1e30


def blank_fill(image: np.ndarray) -> np.ndarray:
    """Boolean map of the pixels of magnitude at least :data:`BLANK_MAGNITUDE` (NaN: False).

    Two comparisons, not ``abs(image) >= BLANK_MAGNITUDE``: no image-sized float
    temporary (27 MB of fresh memory for a float64 1850 x 1850 image).
    """
    return (image >= BLANK_MAGNITUDE) | (image <= -BLANK_MAGNITUDE)


def fill_no_data(
    image: np.ndarray, variance: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flag unusable values as NO_DATA and replace them with finite ones.

    Pixels whose image is NaN/Inf or a blank fill value (magnitude at least
    :data:`BLANK_MAGNITUDE`), or whose variance is NaN/Inf or negative, get
    NO_DATA; there the image becomes 0 and the variance the median variance of the
    pixels without NO_DATA, so no NaN reaches arithmetic downstream.

    Parameters
    ----------
    image, variance : numpy.ndarray
        Planes (not modified).
    mask : numpy.ndarray
        Mask bits (not modified).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        Image, variance and a new mask (``MASK_DTYPE``); the image and the variance are the
        inputs themselves when none of their values needed replacing.
    """
    bad_image = ~np.isfinite(image) | blank_fill(image)
    out_mask = set_planes(mask, bad_image, MaskPlane.NO_DATA)
    out_image = np.where(bad_image, 0.0, image) if bad_image.any() else np.asarray(image)
    out_variance, out_mask = fill_bad_variance(variance, out_mask)
    return out_image, out_variance, out_mask


def fill_bad_variance(variance: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flag NaN/Inf or negative variances as NO_DATA and replace them with the median one.

    Parameters
    ----------
    variance : numpy.ndarray
        Variance plane (image units squared; not modified).
    mask : numpy.ndarray
        Mask bits (not modified).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The variance, where bad the median variance of the pixels without NO_DATA (1
        when there are none), and the mask with NO_DATA added there; each is the input
        itself when no variance is bad.
    """
    bad = ~np.isfinite(variance) | (variance < 0)
    if not bad.any():
        return np.asarray(variance), mask
    out_mask = set_planes(mask, bad, MaskPlane.NO_DATA)
    known = ~bad & ((out_mask & int(MaskPlane.NO_DATA)) == 0)
    fill = float(np.median(variance[known])) if known.any() else 1.0
    return np.where(bad, fill, variance), out_mask


# --------------------------------------------------------------------------- reading


def _read_plane(
    spec: str | Path, default_ext: str, role: str, shape: tuple[int, ...], image_source: str
) -> tuple[np.ndarray, fits.Header]:
    """Read a companion plane (variance, weight or mask) and check its shape.

    Without an extension in ``spec``, the HDU of the image's name is used when the
    file has one, else the first 2-D image.
    """
    path, ext = parse_spec(spec)
    with _open_fits(path, role) as hdul:
        if ext is None and any(
            h.name.upper() == default_ext.upper()
            and h.is_image
            and len([n for n in h.shape if n > 1]) == 2
            for h in hdul
        ):
            ext = default_ext
        index = _find_hdu(hdul, ext, path, role)
        data = _image_data(hdul, index, path, role)
        header = hdul[index].header.copy()
    if data.shape != shape:
        raise InputError(
            f"{role} {path} has shape {data.shape} but the image {image_source} has "
            f"shape {shape}; give a {role} of the same size as the image"
        )
    return data, header


def _hdu_by_name(hdul: fits.HDUList, names: Sequence[str]) -> int | None:
    """Index of the first HDU whose EXTNAME is one of ``names`` (case-insensitive)."""
    for name in names:
        for i, hdu in enumerate(hdul):
            if hdu.name.upper() == name.upper():
                return i
    return None


def _planes_beside(
    hdul: fits.HDUList, index: int, path: Path, shape: tuple[int, ...]
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Variance, mask and PSF stored in the image's own file, when present.

    ``<NAME>_VAR`` and ``<NAME>_PSF`` belong to the image HDU ``<NAME>``; an
    ``IMAGE`` HDU (LSST layout) also has ``VARIANCE``, ``MASK`` and ``PSF``.
    """
    name = hdul[index].name.upper()
    lsst = name == "IMAGE"
    var_index = _hdu_by_name(hdul, [f"{name}_VAR", *(["VARIANCE"] if lsst else [])])
    mask_index = _hdu_by_name(hdul, ["MASK"] if lsst else [])
    psf_index = _hdu_by_name(hdul, [f"{name}_PSF", *(["PSF"] if lsst else [])])
    variance = mask = psf = None
    if var_index is not None:
        variance = _image_data(hdul, var_index, path, "variance")
    if mask_index is not None:
        raw = _image_data(hdul, mask_index, path, "mask").astype(np.int64)
        mask = mask_from_planes(raw, hdul[mask_index].header)
    for plane, label in ((variance, "variance"), (mask, "mask")):
        if plane is not None and plane.shape != shape:
            raise InputError(
                f"{path}: {label} HDU has shape {plane.shape} but the image "
                f"[{name}] has shape {shape}; the file's planes must agree"
            )
    if psf_index is not None:
        psf = normalize_psf(
            _image_data(hdul, psf_index, path, "PSF"), f"{path}[{hdul[psf_index].name}]"
        )
    return variance, mask, psf


def _data_pixels(image: np.ndarray, source: str) -> np.ndarray:
    """Boolean map of the pixels that hold data: finite and not blank fill.

    Parameters
    ----------
    image : numpy.ndarray
        Pixel values as read.
    source : str
        The image's name, for the message and the warning.

    Returns
    -------
    numpy.ndarray
        True where the value is finite and of magnitude below :data:`BLANK_MAGNITUDE`;
        blank fill pixels, when present, are counted in one log warning.

    Raises
    ------
    InputError
        When no pixel is finite, or every finite pixel is blank fill.
    """
    data = np.isfinite(image)
    blank = blank_fill(image)  # NaN is not blank; +-Inf is, and is not finite
    blank &= data
    data &= ~blank
    if data.any():
        n_blank = int(np.count_nonzero(blank))
        if n_blank:
            log.warning(
                "%s: %d pixels of magnitude >= %g are taken as blank fill (NO_DATA)",
                source,
                n_blank,
                BLANK_MAGNITUDE,
            )
        return data
    if not blank.any():
        raise InputError(f"image {source} has no finite pixel (all NaN or Inf); give a valid image")
    raise InputError(
        f"image {source}: every finite pixel is blank fill (|value| >= {BLANK_MAGNITUDE:g}, "
        "the padding some surveys write), none is data; give the image's data extension"
    )


def _saturation(
    image: np.ndarray, finite: np.ndarray, header: fits.Header, source: str
) -> tuple[str, float] | None:
    """The saturation level and where it came from: the header, else the image's flat top.

    Parameters
    ----------
    image : numpy.ndarray
        Pixel values (image units).
    finite : numpy.ndarray
        Boolean, True on pixels with data.
    header : astropy.io.fits.Header
        The image's header (``SATURATE`` or ``SATLEVEL``, image units).
    source : str
        The image's name, for the warning.

    Returns
    -------
    tuple of (str, float) or None
        ``(keyword, level)`` from the header, ``("flat top", level)`` when the header has
        none and :func:`diffviewer.saturation.flat_top_level` finds the clip level,
        ``("star plateau", level)`` when :func:`diffviewer.saturation.star_plateau_level`
        finds a coadd's smeared one, else None.
    """
    found = _header_float(header, SATURATION_KEYS)
    if found is not None:
        return found
    level = flat_top_level(image, finite)
    if level is None:
        plateau = star_plateau_level(image, finite)
        if plateau is not None:
            log.warning(
                "%s: no SATURATE card, but the broad cores of several stars pile up within "
                "%g%% of the maximum (a coadd's clip level): %g taken as the saturation "
                "level (SAT); give SATURATE in the header to set it",
                source,
                100 * PLATEAU_WIDTH,
                plateau,
            )
            return ("star plateau", plateau)
        return None
    log.warning(
        "%s: no SATURATE card, but %d pixels sit exactly at the maximum %g: taken as the "
        "saturation level (SAT); give SATURATE in the header to set it",
        source,
        int(np.count_nonzero(finite & (image == level))),
        level,
    )
    return ("flat top", level)


def _check_usable(bits: np.ndarray, source: str, saturation: tuple[str, float] | None) -> None:
    """Raise when every pixel carries a plane that makes it unusable, naming the planes."""
    unusable = int(UNUSABLE)
    if ((bits & unusable) == 0).any():
        return
    everywhere = [p for p in MaskPlane if int(p) & unusable and ((bits & int(p)) != 0).all()]
    names = ", ".join(p.name or str(int(p)) for p in everywhere) or "a mix of planes"
    why = []
    if MaskPlane.BAD in everywhere:
        why.append(
            "a mask with no MP_<NAME> plane names counts every nonzero value as BAD: give "
            "MP_* cards naming its bits, or a mask that is 0 on good pixels"
        )
    if MaskPlane.SAT in everywhere and saturation is not None:
        why.append(
            f"every pixel reaches {saturation[0]} = {saturation[1]:g}: the image is saturated"
        )
    raise InputError(
        f"image {source}: every pixel is masked ({names} on all of them)"
        + (f"; {'; '.join(why)}" if why else "; check the mask")
    )


def read_exposure(
    spec: str | Path,
    *,
    variance: str | Path | None = None,
    weight: str | Path | None = None,
    mask: str | Path | None = None,
) -> Exposure:
    """Read an image, its variance, mask, WCS, PSF and zero point from FITS.

    Parameters
    ----------
    spec : str or Path
        ``file.fits``, ``file.fits[NAME]`` or ``file.fits[index]``; without an
        extension, the first HDU with a 2-D image.
    variance : str or Path, optional
        A variance image (image units squared). Otherwise the variance is taken from
        the same file (``VARIANCE`` beside ``IMAGE``, or ``<NAME>_VAR`` beside
        ``<NAME>``), from ``weight``, or estimated (see :func:`estimate_variance`).
    weight : str or Path, optional
        An inverse-variance image; weight 0 marks NO_DATA. A ``*_ooi_*`` image finds
        its ``*_oow_*`` sibling by itself.
    mask : str or Path, optional
        A mask image: LSST planes when its header has ``MP_*`` cards, else any
        nonzero value is BAD. A ``*_ooi_*`` image finds its ``*_ood_*`` sibling; an
        ``IMAGE`` HDU its ``MASK`` HDU.

    Returns
    -------
    Exposure
        float32 planes; NaN/Inf pixels are 0 with NO_DATA set; SAT set where the
        image reaches the header's SATURATE, or its flat top when the header has none
        (:func:`diffviewer.saturation.flat_top_level`); ``variance_estimated`` tells whether the
        variance was estimated.

    Raises
    ------
    InputError
        When a file is missing, not FITS, truncated, lacks the extension or image
        data, holds a 1-D or 3-D array, when planes differ in shape, when both a
        variance and a weight are given, or when no pixel is finite.
    """
    if variance is not None and weight is not None:
        raise InputError(f"{spec}: give either a variance or a weight file, not both")
    path, ext = parse_spec(spec)
    source = str(spec)
    with _open_fits(path, "image") as hdul:
        index = _find_hdu(hdul, ext, path, "image")
        image = _image_data(hdul, index, path, "image")
        header = _merged_header(hdul, index)
        name = hdul[index].name.upper()
        wcs = _read_wcs(hdul[index].header, source)
        shape = image.shape
        in_var, in_mask, psf = _planes_beside(hdul, index, path, shape)

    siblings = companion_files(path)
    if variance is None and weight is None and in_var is None:
        weight = siblings.get("weight")
    if mask is None and in_mask is None:
        mask = siblings.get("mask")

    bits = np.zeros(shape, dtype=MASK_DTYPE) if in_mask is None else in_mask
    if mask is not None:
        raw, mask_header = _read_plane(mask, name, "mask", shape, source)
        bits = bits | mask_from_planes(raw.astype(np.int64), mask_header)
    var = in_var
    if variance is not None:
        var, _ = _read_plane(variance, name, "variance", shape, source)
    elif weight is not None:
        w, _ = _read_plane(weight, name, "weight", shape, source)
        positive = np.isfinite(w) & (w > 0)
        bits = set_planes(bits, ~positive, MaskPlane.NO_DATA)
        var = np.divide(1.0, w, out=np.full(shape, np.nan), where=positive)

    data = _data_pixels(image, source)
    if not data.all():
        bits[~data] |= MASK_DTYPE(int(MaskPlane.NO_DATA))  # bits is this function's own
        image = np.where(data, image, 0.0)
    saturation = _saturation(image, data, header, source)
    if saturation is not None and saturation[1] > 0:
        # Pixels without data are 0 by now, below a positive level.
        bits[image >= saturation[1]] |= MASK_DTYPE(int(MaskPlane.SAT))
    if (bits & int(MaskPlane.NO_DATA)).all():
        raise InputError(
            f"image {source} has no usable pixel (zero weight or no data everywhere); "
            "check the weight and mask files"
        )
    _check_usable(bits, source, saturation)
    if var is not None and not np.any(np.isfinite(var) & (var > 0)):
        with np.errstate(invalid="ignore"):
            span = (
                f"min {np.nanmin(var):g}, max {np.nanmax(var):g}"
                if np.isfinite(var).any()
                else "all NaN"
            )
        raise InputError(
            f"the variance plane of {source} has no positive value ({span}); a variance is "
            "positive (image units^2): fix the plane, or leave it out to have it estimated"
        )

    estimated = var is None
    if var is None:
        var = estimate_variance(image, bits, header_gain(header), source)
    var, bits = fill_bad_variance(var, bits)  # the image has no bad value left
    return Exposure(
        image=image,
        variance=read_only(var),  # both made here: adopted without a copy
        mask=read_only(bits),
        wcs=wcs,
        psf=psf,
        zero_point=header_zero_point(header),
        header=header,
        source=source,
        variance_estimated=estimated,
        saturation=saturation,
    )


# --------------------------------------------------------------------------- writing


#: Staging folders: ``.<name>.partial-<host>-<pid>-<random>`` beside the output folder.
_STAGING = re.compile(r"^\.(?P<name>.+)\.partial-(?P<host>[^-]*)-(?P<pid>\d+)-[0-9a-f]{8}$")


def staging_name(name: str) -> str:
    """The name of a fresh staging folder for the output folder ``name``.

    It carries the host and the process id, so a folder left by a killed process
    (SIGKILL: no clean-up ran) is recognised by the next run (:func:`remove_stale_staging`).
    """
    host = socket.gethostname().replace("-", "_")
    return f".{name}.partial-{host}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _process_alive(pid: int) -> bool:
    """Whether a process of this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _staging_folders(folder: str | Path, name: str | None) -> list[tuple[Path, bool]]:
    """The staging folders of this host in ``folder``, each with whether its process runs."""
    host = socket.gethostname().replace("-", "_")
    found_here = []
    with contextlib.suppress(OSError):
        for path in Path(folder).iterdir():
            found = _STAGING.match(path.name)
            if not found or (name is not None and found["name"] != name):
                continue
            if found["host"] == host:
                found_here.append((path, _process_alive(int(found["pid"]))))
    return found_here


def remove_stale_staging(folder: str | Path, name: str | None = None) -> list[Path]:
    """Remove the staging folders left in ``folder`` by processes that no longer run.

    Only folders named by :func:`staging_name` on this host whose process is gone are
    removed (a run in progress, here or on another node, keeps its own).

    Parameters
    ----------
    folder : str or Path
        Where output folders are created.
    name : str, optional
        Only the staging folders of this output folder.

    Returns
    -------
    list of Path
        The folders removed.
    """
    removed = []
    for path, alive in _staging_folders(folder, name):
        if not alive:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def wait_for_running_staging(folder: str | Path, timeout_s: float) -> list[Path]:
    """Wait until no process of this host still writes a staging folder in ``folder``.

    A pair being written when a batch is interrupted either lands (its folder is
    moved into place) or its process ends; either way the folder's state is final
    and the summary can be written from it.

    Parameters
    ----------
    folder : str or Path
        Where output folders are created.
    timeout_s : float
        Longest wait, seconds.

    Returns
    -------
    list of Path
        Staging folders whose process still ran when the wait ended (empty normally).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        running = [path for path, alive in _staging_folders(folder, None) if alive]
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.05)


@contextlib.contextmanager
def staged_output_dir(
    out_dir: str | Path,
    inputs: Sequence[str | Path],
    overwrite: bool,
    replaced_names: Sequence[str] = (),
) -> Iterator[Path]:
    """Write a set of outputs into a staging folder and move it into place only when done.

    The staging folder is a hidden sibling of ``out_dir`` (same file system). The files
    written atomically in it are flushed to disk in the background (:class:`_DeferredSyncs`).
    When the block ends normally and every flush is done, its files move into ``out_dir``
    (a rename of the whole folder when ``out_dir`` does not exist yet, else one atomic
    rename per file, after removing the files named in ``replaced_names`` that this run
    did not write, so no stale output of an earlier run stays beside the new ones). When
    the block raises, the staging folder and any parent folders it created are removed
    and ``out_dir`` is untouched: a failed or cancelled run leaves no partial output. A
    staging folder of ``out_dir`` left by a killed process is removed first
    (:func:`remove_stale_staging`).

    Parameters
    ----------
    out_dir : str or Path
        The output folder.
    inputs : sequence of str or Path
        Input specs or paths, checked with :func:`check_output_dir`.
    overwrite : bool
        Allow an existing, non-empty folder.
    replaced_names : sequence of str
        Every file name a run of this kind may write.

    Yields
    ------
    Path
        The staging folder to write into.
    """
    out = check_output_dir(out_dir, inputs, overwrite)
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(out.parent, out.name)
        stage = out.parent / staging_name(out.name)
        stage.mkdir()
    except OSError as exc:
        raise OutputError(f"cannot create {out} ({exc.strerror}); check the path") from None
    try:
        with _syncs_deferred(stage):
            yield stage
        if not out.exists():
            os.rename(stage, out)
        else:
            written = {p.name for p in stage.iterdir()}
            for name in set(replaced_names) - written:
                (out / name).unlink(missing_ok=True)
            for path in stage.iterdir():
                os.replace(path, out / path.name)
            stage.rmdir()
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in created:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _atomic_write(
    path: str | Path, write: Callable[[Path], None], protect: Sequence[str | Path]
) -> Path:
    """Write through ``write(temporary_path)``, fsync, then rename onto ``path``.

    In a staging folder being written (:func:`staged_output_dir`) the fsync runs in the
    background and is waited for before the folder is moved into place.
    """
    path = Path(path)
    if protect:
        ensure_not_input(path, protect)
    tag = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
    tmp = path.with_name(f".{path.name}.{tag}.tmp{''.join(path.suffixes)}")
    deferred = _DEFERRED_SYNCS.get()
    if deferred is not None and path.parent != deferred.folder:
        deferred = None  # a file outside the staging folder is flushed before its rename
    try:
        write(tmp)
        if deferred is None:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        else:
            deferred.add(tmp, path)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise _write_error(path, exc) from None
        raise
    if deferred is None:
        _fsync_folder(path.parent)
    return path


def _write_error(path: Path, exc: OSError) -> OutputError:
    """The error of a failed write, saying what to check."""
    return OutputError(
        f"cannot write {path} ({exc.strerror or exc}); check the folder "
        "exists, is writable and has free space"
    )


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk, where the system allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_and_close(fd: int) -> None:
    """Flush an open file to disk and close it."""
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _DeferredSyncs:
    """Flushes to disk of the files written into a staging folder, on one background thread.

    Flushing a file waits for the disk (0.06-0.16 s for the 112 MB of a GOTO run on this
    machine) and releases the interpreter, so it overlaps with encoding the next file.
    Every flush is waited for before the staging folder is moved into place. Writing the
    exposures on a thread as well gained nothing (GOTO's outputs, median of 10 at load
    2.7: 0.38 s against 0.40 s) and held 9 MB more at the peak of writing.

    Parameters
    ----------
    folder : Path
        The staging folder (its entries are flushed last).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffviewer-fsync")
        self._pending: list[tuple[Path, Future[None]]] = []

    def add(self, written: Path, path: Path) -> None:
        """Flush ``written`` (a file about to be renamed to ``path``) in the background."""
        fd = os.open(written, os.O_RDONLY)
        self._pending.append((path, self._pool.submit(_fsync_and_close, fd)))

    def finish(self) -> None:
        """Wait for every flush (raising :class:`OutputError` if one failed), then stop."""
        try:
            for path, done in self._pending:
                try:
                    done.result()
                except OSError as exc:
                    raise _write_error(path, exc) from None
        finally:
            self._pool.shutdown(wait=True)
        _fsync_folder(self.folder)


#: The flushes of the staging folder being written in this context, if any.
_DEFERRED_SYNCS: contextvars.ContextVar[_DeferredSyncs | None] = contextvars.ContextVar(
    "diffviewer_deferred_syncs", default=None
)


@contextlib.contextmanager
def _syncs_deferred(folder: Path) -> Iterator[None]:
    """Flush the files written atomically within the block in the background; wait at its end."""
    syncs = _DeferredSyncs(folder)
    token = _DEFERRED_SYNCS.set(syncs)
    try:
        yield
    except BaseException:
        with contextlib.suppress(OutputError):
            syncs.finish()
        raise
    finally:
        _DEFERRED_SYNCS.reset(token)
    syncs.finish()


def atomic_write_bytes(
    path: str | Path, data: bytes, *, protect: Sequence[str | Path] = ()
) -> Path:
    """Write bytes to ``path`` atomically (temporary file in the same folder, fsync, rename).

    Parameters
    ----------
    path : str or Path
        Destination file.
    data : bytes
        The content.
    protect : sequence of str or Path, optional
        Input files that must not be overwritten (see :func:`ensure_not_input`).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OutputError
        When writing fails (the temporary file is removed) or ``path`` is an input.
    """

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    return _atomic_write(path, write, protect)


def atomic_write_text(path: str | Path, text: str, *, protect: Sequence[str | Path] = ()) -> Path:
    """Write UTF-8 text to ``path`` atomically; see :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"), protect=protect)


def header_with_wcs(header: fits.Header, wcs: WCS | None) -> fits.Header:
    """A copy of ``header`` whose WCS cards are replaced by those of ``wcs``.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Any header (not modified); its structural and WCS cards are dropped.
    wcs : astropy.wcs.WCS or None
        The WCS to write (SIP and TPV distortions included); None writes none.

    Returns
    -------
    astropy.io.fits.Header
    """
    out = fits.Header(
        [
            c
            for c in header.cards
            if not _STRUCTURAL.match(c.keyword) and not _WCS_KEY.match(c.keyword)
        ]
    )
    if wcs is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cards = wcs.to_header(relax=True).cards
        for card in cards:
            if _WCS_KEY.match(card.keyword):
                out[card.keyword] = (card.value, card.comment)
    return out


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

    return _atomic_write(path, write, protect)


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
    return _atomic_write(path, lambda tmp: table.write(tmp, format=fmt, overwrite=True), protect)


def read_templates(spec: str | Sequence[str]) -> list[Exposure]:
    """Read a template given whole or in pieces (see :func:`diffviewer.paths.template_specs`).

    Returns
    -------
    list of Exposure
        One exposure per piece, each read by :func:`read_exposure`.
    """
    return [read_exposure(piece) for piece in template_specs(spec)]
