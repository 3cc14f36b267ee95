"""Reading exposures from FITS.

:func:`read_exposure` accepts single-HDU images, LSST-like ``IMAGE``/``MASK``/``VARIANCE``
files, alert triplets with ``<NAME>_VAR`` and ``<NAME>_PSF`` HDUs, HST's and JWST's
``SCI``/``ERR``/``DQ`` files, planes in files of their own
(:class:`~diffviewer.companions.Companions`), separate
inverse-variance weight and data-quality mask files (the community pipeline's
``ooi``/``oow``/``ood`` siblings), tile-compressed ``.fits.fz`` files, and images with a
celestial, a non-celestial or no WCS (:mod:`diffviewer.fits_header` reads the cards).
Outputs are written by :mod:`diffviewer.fits_write` and :mod:`diffviewer.atomic`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from astropy.io import fits

from diffviewer.companions import NO_COMPANIONS, Companions
from diffviewer.errors import InputError
from diffviewer.exposure import (
    MASK_DTYPE,
    PIXEL_DEFECTS,
    UNUSABLE,
    Exposure,
    MaskPlane,
    describe_planes,
    map_by_rows,
    planes_clear,
    read_only,
    row_blocks,
    set_planes,
    unusable_everywhere,
    zero_point_scales,
)
from diffviewer.fits_check import unreadable_fits_reason
from diffviewer.fits_header import (
    header_float,
    header_gain,
    header_zero_point,
    mask_from_planes,
    merged_header,
    names_planes,
    read_wcs,
    unreadable_number,
    wcs_header,
)
from diffviewer.paths import (
    Extension,
    absolute_spec,
    companion_files,
    extension_text,
    hdu_index,
    parse_spec,
    require_file,
    template_specs,
)
from diffviewer.saturation import (
    PLATEAU_WIDTH,
    flat_top_level,
    floor_fill_level,
    pieces_plateau_level,
    star_plateau_level,
)
from diffviewer.sky_stats import robust_sky

log = logging.getLogger(__name__)

#: Header keywords read as the saturation level (image units), in order.
SATURATION_KEYS = ("SATURATE", "SATLEVEL")
#: A sky level is taken as unsubtracted (usable for a Poisson gain) above this many sky sigmas.
SKY_LEVEL_MIN_SIGMAS = 5.0
#: A header's gain is said not to be the image's when the Poisson variance of the sky it
#: implies exceeds the measured sky variance this many times (the measured noise holds the
#: sky's Poisson noise and more: read noise, faint stars).
GAIN_NOISE_EXCESS = 4.0
#: Pixels of each block of rows in which an estimated variance is computed (2 MB of float64).
VARIANCE_BLOCK_PIXELS = 1 << 18


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
def open_fits(path: Path, role: str) -> Iterator[fits.HDUList]:
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
    """One HDU as ``index NAME (shape)`` for messages (a table says so)."""
    if isinstance(hdu, fits.BinTableHDU | fits.TableHDU):
        what = f"a table of {hdu.header.get('NAXIS2', 0)} rows"
    elif hdu.is_image and hdu.shape:
        what = "x".join(str(n) for n in reversed(hdu.shape))
    else:
        what = "no data"
    return f"{index} {hdu.name or '(unnamed)'} ({what})"


def _find_hdu(hdul: fits.HDUList, ext: Extension, path: Path, role: str) -> int:
    """Index of the HDU holding the image: the one named (:func:`~diffviewer.paths.hdu_index`),
    or the first with 2-D data."""
    listing = ", ".join(_hdu_label(i, h) for i, h in enumerate(hdul))
    if ext is None:
        for i, hdu in enumerate(hdul):
            if is_image(hdu):
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
            f"{hdu.shape}, not an image; give a 2-D image (a plane of a cube saved as an "
            "image of its own), or name the extension that holds one"
        )
    index = hdu_index([(hdu.name, hdu.ver) for hdu in hdul], ext)
    if index is not None:
        return index
    raise InputError(f"{role} file {path} has no extension [{ext}]; it has: {listing}")


#: HDU names that hold a plane of another HDU's image, not an image of their own.
_PLANE_NAMES = ("VARIANCE", "MASK", "PSF", "ERR", "DQ")
_PLANE_SUFFIXES = ("_VAR", "_PSF")


def is_image(hdu: fits.hdu.base.ExtensionHDU | fits.PrimaryHDU) -> bool:
    """Whether an HDU holds an image the reader reads: two axes longer than a pixel (a
    cube of one plane too)."""
    return bool(hdu.is_image and len([n for n in hdu.shape if n > 1]) == 2)


def image_hdus(hdul: fits.HDUList, besides: int | None = None) -> list[int]:
    """The image HDUs of a file (:func:`is_image`) other than planes of another image (a
    variance, mask or PSF: :data:`_PLANE_NAMES`, :data:`_PLANE_SUFFIXES`), and than HDU
    ``besides`` when given."""
    return [
        i
        for i, hdu in enumerate(hdul)
        if i != besides
        and is_image(hdu)
        and hdu.name.upper() not in _PLANE_NAMES
        and not hdu.name.upper().endswith(_PLANE_SUFFIXES)
    ]


def _say_which_image(hdul: fits.HDUList, index: int, path: Path) -> None:
    """Log a warning when a file read without a named extension holds other images than
    the first, which was read: a multi-extension camera file, or an alert's triplet."""
    others = image_hdus(hdul, besides=index)
    if others:
        # a spec that reads that HDU and no other (an EXTNAME of digits reads as an index)
        name = extension_text([(hdu.name, hdu.ver) for hdu in hdul], others[0])
        log.warning(
            "%s: no extension named, so HDU %s, the first 2-D image, is read; the file also "
            "holds %s: name the one to read, e.g. %s[%s]",
            path,
            _hdu_label(index, hdul[index]),
            ", ".join(_hdu_label(i, hdul[i]) for i in others),
            path,
            name,
        )


def _image_data(hdul: fits.HDUList, index: int, path: Path, role: str) -> np.ndarray:
    """The 2-D data of one HDU, native-endian, BZERO/BSCALE applied.

    float32 when that holds every stored value exactly (float32 data, integers of up to
    16 bits), else float64: a float32 image is not widened only to be narrowed again by
    :class:`~diffviewer.exposure.Exposure` (at 4096^2, 128 MB of fresh memory per image).
    """
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
    if not squeezed.dtype.isnative and squeezed.flags.writeable:
        # FITS is big-endian: the file's own buffer (read whole, never mapped, closed
        # after) is swapped in place rather than copied (a 4096^2 image: 8 ms against
        # 32-144 ms and 64 MB of fresh memory).
        squeezed = squeezed.byteswap(inplace=True).view(squeezed.dtype.newbyteorder())
    exact = np.can_cast(squeezed.dtype, np.float32, casting="safe")
    image = np.asarray(squeezed, dtype=np.float32 if exact else np.float64)
    blank = _blank_pixels(squeezed, hdu.header)
    if blank is not None:
        image[blank] = np.nan  # NO_DATA, as astropy's scaled reading gives BLANK pixels
    return image


def _blank_pixels(data: np.ndarray, header: fits.Header) -> np.ndarray | None:
    """Where integer data as read hold the header's BLANK value, or None.

    astropy turns BLANK into NaN when it scales integers to floats, but not in the
    unsigned integers it reads with their BZERO applied (BITPIX 16 and BZERO 32768):
    there a BLANK pixel is the physical value ``BZERO + BSCALE * BLANK``.
    """
    if data.dtype.kind not in "iu" or "BLANK" not in header:
        return None
    try:
        value = int(header["BZERO"] if "BZERO" in header else 0) + int(
            header["BSCALE"] if "BSCALE" in header else 1
        ) * int(header["BLANK"])
    except (TypeError, ValueError):
        return None
    hits = data == value
    return hits if hits.any() else None


# --------------------------------------------------------------------------- masks, PSF, noise


def normalize_psf(psf: np.ndarray, source: str) -> np.ndarray:
    """Return a PSF image with odd sides, centred, and summing to 1.

    An even side loses the row (column) farthest from the PSF's centroid; a PSF centred
    between its two middle rows (columns) is first moved half a pixel onto one of them.

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
            if abs(centroid - (n - 1) / 2) < 0.25:
                # Centred between the two middle pixels: moved onto pixel n / 2 first,
                # else the odd image would hold it half a pixel off its centre (a forced
                # flux 7 % low at FWHM 3 px).
                out, centroid = _shifted_half_pixel(out, axis), n / 2
            keep = slice(1, n) if centroid > (n - 1) / 2 else slice(0, n - 1)
            out = out[keep, :] if axis == 0 else out[:, keep]
    return out / out.sum()


def _shifted_half_pixel(image: np.ndarray, axis: int) -> np.ndarray:
    """``image`` moved half a pixel towards higher indices along ``axis`` (Fourier shift)."""
    n = image.shape[axis]
    shape = [1, 1]
    shape[axis] = n // 2 + 1
    phase = np.exp(-1j * np.pi * np.fft.rfftfreq(n)).reshape(shape)
    return np.fft.irfft(np.fft.rfft(image, axis=axis) * phase, n=n, axis=axis)


def _units_too_large(variance: float, sigma: float) -> str:
    """Why a variance beyond single precision refuses an image, and the factor to divide
    by: the rest of a message naming the image and the variance."""
    return (
        f"is {variance:.3g} (image units^2), beyond single precision "
        f"({float(np.finfo(np.float32).max):.3g}): the image is in units too large (its sky "
        f"noise is {sigma:.3g}); divide both images by a common factor (e.g. "
        f"{10.0 ** math.floor(math.log10(sigma)):.0e}) and any variance planes by its square"
    )


def estimate_variance(
    image: np.ndarray,
    mask: np.ndarray,
    gain: float | tuple[str, float] | None,
    source: str = "image",
) -> np.ndarray:
    """Estimate a variance plane from the image itself.

    The sky variance comes from :func:`robust_sky`; sources add their Poisson term
    ``max(image - sky, 0) / gain``. Without a gain, a sky that was not subtracted
    (level above :data:`SKY_LEVEL_MIN_SIGMAS` sky sigmas) gives an effective gain
    ``sky_level / sky_variance`` (Poisson sky); otherwise only the sky noise is used. A
    gain whose Poisson noise of that sky alone would exceed the measured sky noise
    :data:`GAIN_NOISE_EXCESS` times (in variance) is said not to be the image's (an image
    in counts per second, a mistyped card; or the level holds a pedestal), and used; one
    that overflows single precision at the brightest pixel is refused, named.

    Parameters
    ----------
    image : numpy.ndarray
        The image (image units).
    mask : numpy.ndarray
        Mask bits; NO_DATA, SAT and BAD pixels are left out of the sky estimate.
    gain : float, (str, float) or None
        Electrons per image unit, or the header card it was read from and its value.
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
            "saturated, or a variance plane (a VARIANCE, <NAME>_VAR or ERR extension, "
            "or a variance or weight file: --science-variance, --science-weight)"
        )
    sky_var = sigma**2
    largest = float(np.finfo(np.float32).max)
    if not sky_var <= largest:
        raise InputError(f"{source}: its sky variance {_units_too_large(sky_var, sigma)}")
    # the gain given (and the card it was read from), else the sky's Poisson one
    card, given = gain if isinstance(gain, tuple) else ("gain", gain)
    unsubtracted = level > SKY_LEVEL_MIN_SIGMAS * sigma
    gain = given if given is not None else (level / sky_var if unsubtracted else None)
    brightest = sky_var + max(float(np.max(image[good])) - level, 0.0) / gain if gain else 0.0
    if not brightest <= largest:
        cause = (
            f"by {card} = {gain:g} is {brightest:.3g} (image units^2), beyond single precision "
            f"({largest:.3g}): the gain is not this image's electrons per unit; fix or remove "
            "the card, or give a variance plane"
            if given is not None
            else _units_too_large(brightest, sigma)
        )
        raise InputError(f"{source}: the variance of its brightest pixel {cause}")
    if given is not None and unsubtracted and level / given > GAIN_NOISE_EXCESS * sky_var:
        # Said, not replaced: the level may hold a pedestal (a bias not taken out) that is
        # no Poisson sky, and then the card is right.
        log.warning(
            "%s: %s = %g makes the Poisson noise of its sky level (%g) %.3g, %.3g times the "
            "noise measured there (%.3g): the gain is not in this image's units (counts per "
            "second?), or the level holds a pedestal; the source pixels' variance uses it: "
            "fix or remove the card, or give a variance plane",
            source,
            card,
            given,
            level,
            math.sqrt(level / given),
            math.sqrt(level / given) / sigma,
            sigma,
        )
    if gain is None:
        return np.full(image.shape, sky_var, dtype=np.float32)
    variance = np.empty(image.shape, dtype=np.float32)
    rows = max(1, VARIANCE_BLOCK_PIXELS // max(image.shape[1], 1))
    for start in range(0, image.shape[0], rows):
        # sky_var + max(image - level, 0) / gain, in double precision
        block = np.subtract(image[start : start + rows], level, dtype=np.float64)
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
    temporary (27 MB of fresh memory for a float64 1850 x 1850 image). They are made in
    at least single precision: cast to float16, the limit would overflow (and warn).
    """
    limit = np.asarray(BLANK_MAGNITUDE, dtype=np.result_type(image.dtype, np.float32))
    return (image >= limit) | (image <= -limit)


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

    A variance of 0 (an infinite weight) on a pixel no unusable plane masks is flagged so
    too, as a weight of 0 is: no pixel is known without noise.

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

    def bad_rows(rows: slice) -> np.ndarray:
        v = variance[rows]
        return ~(v >= 0) | np.isinf(v) | ((v == 0) & planes_clear(mask[rows], int(UNUSABLE)))

    bad = map_by_rows(variance.shape, bad_rows)
    if not bad.any():
        return np.asarray(variance), mask
    out_mask = set_planes(mask, bad, MaskPlane.NO_DATA)
    known = ~bad & ((out_mask & int(MaskPlane.NO_DATA)) == 0)
    fill = float(np.median(variance[known].astype(np.float64))) if known.any() else 1.0
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
    with open_fits(path, role) as hdul:
        if ext is None and any(h.name.upper() == default_ext.upper() and is_image(h) for h in hdul):
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


def _hdu_of_version(hdul: fits.HDUList, name: str, version: int) -> int | None:
    """Index of the HDU of EXTNAME ``name`` (case-insensitive) and EXTVER ``version``."""
    for i, hdu in enumerate(hdul):
        if hdu.name.upper() == name and hdu.ver == version:
            return i
    return None


def _planes_beside(
    hdul: fits.HDUList,
    index: int,
    path: Path,
    shape: tuple[int, ...],
    mask_bits: Sequence[tuple[int, str]] = (),
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, bool]:
    """Variance, mask and PSF stored in the image's own file, when present, and whether
    the mask's planes are named (:func:`~diffviewer.fits_header.names_planes`, or a bit
    map given for a mask without names: ``mask_bits``,
    :func:`~diffviewer.fits_header.mask_from_planes`; True without a mask).

    ``<NAME>_VAR`` and ``<NAME>_PSF`` belong to the image HDU ``<NAME>``; an
    ``IMAGE`` HDU (LSST layout) also has ``VARIANCE``, ``MASK`` and ``PSF``, and so has an
    image in the primary HDU (a file holding one image and its planes). A ``SCI`` HDU
    (HST's and JWST's layout) has the ``ERR`` (1-sigma error) and ``DQ`` (data quality
    bits) of its own EXTVER (each chip of a two-chip file its own).
    """
    name = hdul[index].name.upper()
    lsst = name == "IMAGE" or index == 0
    var_index = _hdu_by_name(hdul, [f"{name}_VAR", *(["VARIANCE"] if lsst else [])])
    mask_index = _hdu_by_name(hdul, ["MASK"] if lsst else [])
    psf_index = _hdu_by_name(hdul, [f"{name}_PSF", *(["PSF"] if lsst else [])])
    err_index = None
    if name == "SCI":
        err_index = _hdu_of_version(hdul, "ERR", hdul[index].ver)
        mask_index = _hdu_of_version(hdul, "DQ", hdul[index].ver)
    variance = mask = psf = None
    if var_index is not None:
        variance = _image_data(hdul, var_index, path, "variance")
    elif err_index is not None:
        error = _image_data(hdul, err_index, path, "error").astype(np.float64)
        variance = np.square(error, out=error)
    if mask_index is not None:
        raw = _image_data(hdul, mask_index, path, "mask").astype(np.int64)
        mask = mask_from_planes(raw, hdul[mask_index].header, str(path), mask_bits)
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
    named = mask_index is None or names_planes(hdul[mask_index].header) or bool(mask_bits)
    return variance, mask, psf, named


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
        True where the value is finite, of magnitude below :data:`BLANK_MAGNITUDE` and
        not a floor of fill (:func:`~diffviewer.saturation.floor_fill_level`); blank and
        floor fill pixels, when present, are counted in a log warning each.

    Raises
    ------
    InputError
        When no pixel is finite, or every finite pixel is blank fill.
    """
    # By blocks of rows: one boolean plane of fresh memory, not four.
    data = np.empty(image.shape, dtype=bool)
    n_blank = 0
    for rows in row_blocks(image.shape):
        finite = np.isfinite(image[rows])
        blank = blank_fill(image[rows]) & finite  # NaN is not blank; +-Inf is, not finite
        n_blank += int(np.count_nonzero(blank))
        np.greater(finite, blank, out=data[rows])  # finite and not blank
    floor = floor_fill_level(image, data)
    if floor is not None:
        fill = data & (image == floor[0])
        data &= ~fill
        log.warning(
            "%s: %d pixels hold exactly %g, the image's minimum, %.0f robust sigmas below the "
            "other pixels: taken as fill without data (NO_DATA); give a mask or weight file "
            "if they hold data",
            source,
            int(np.count_nonzero(fill)),
            *floor,
        )
    if data.any():
        if n_blank:
            log.warning(
                "%s: %d pixels of magnitude >= %g are taken as blank fill (NO_DATA)",
                source,
                n_blank,
                BLANK_MAGNITUDE,
            )
        return data
    if not n_blank:
        raise InputError(
            f"image {source} has no finite pixel (all NaN or Inf, or the header's BLANK "
            "value: no data); give an image that holds data"
        )
    raise InputError(
        f"image {source}: every finite pixel is blank fill (|value| >= {BLANK_MAGNITUDE:g}, "
        "the padding some surveys write), none is data; give the image's data extension"
    )


#: Where a saturation level taken from the image's own data comes from (not a header's).
DATA_LEVELS = ("flat top", "star plateau")


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
        ``(keyword, level)`` from the header (a level that is not positive is ignored,
        with a warning), ``("flat top", level)`` when the header has none and
        :func:`diffviewer.saturation.flat_top_level` finds the clip level,
        ``("star plateau", level)`` when :func:`diffviewer.saturation.star_plateau_level`
        finds a coadd's smeared one, else None.
    """
    found = header_float(header, SATURATION_KEYS)
    unreadable = unreadable_number(header, SATURATION_KEYS) if found is None else None
    if unreadable is not None:
        log.warning(
            "%s: %s = %r is not a number: ignored, as if the card were absent; give the "
            "level at which the detector saturates, in image units",
            source,
            *unreadable,
        )
    if found is not None and not found[1] > 0:
        # Taken at its word it would mark every pixel SAT and keep every star out of the
        # kernel fit.
        log.warning(
            "%s: %s = %g is not a positive saturation level: ignored, as if the card were "
            "absent; give the level at which the detector saturates, in image units",
            source,
            *found,
        )
        found = None
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


def _check_usable(
    bits: np.ndarray, source: str, saturation: tuple[str, float] | None, named: bool
) -> None:
    """Raise when every pixel carries a plane that makes it unusable, naming the planes
    (``named``: the mask read had ``MP_*`` cards naming its planes)."""
    everywhere = unusable_everywhere(bits)
    if everywhere is None:
        return
    if MaskPlane.NO_DATA in everywhere:
        raise InputError(
            f"image {source} has no usable pixel (zero weight or no data everywhere); "
            "check the weight and mask files"
        )
    names = describe_planes(everywhere)
    why = []
    if MaskPlane.BAD in everywhere and not named:
        why.append(
            "a mask with no MP_<NAME> plane names counts every nonzero value as BAD: give "
            "the bits that mask (diffviewer run --mask-bits PLANE=BIT,...), MP_* cards "
            "naming its bits, or a mask that is 0 on good pixels"
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
    companions: Companions = NO_COMPANIONS,
    saved: bool = False,
) -> Exposure:
    """Read an image, its variance, mask, WCS, PSF and zero point from FITS.

    Parameters
    ----------
    spec : str or Path
        ``file.fits``, ``file.fits[NAME]`` or ``file.fits[index]``; without an
        extension, the first HDU with a 2-D image.
    companions : Companions
        Planes in other files, and the map of a mask's bits
        (:class:`~diffviewer.companions.Companions`). A variance image (image units
        squared) or an inverse-variance weight (weight 0 marks NO_DATA) replaces the
        file's own variance (``VARIANCE`` beside ``IMAGE``, or ``<NAME>_VAR`` beside
        ``<NAME>``); without either, a ``*_ooi_*`` image finds its ``*_oow_*`` weight
        sibling, else the variance is estimated (:func:`estimate_variance`). A mask image
        adds its planes to the file's own ``MASK`` HDU (beside an ``IMAGE`` or primary
        image); without one, a ``*_ooi_*`` image finds its ``*_ood_*`` sibling.
    saved : bool
        The file is one of a run's own outputs (:func:`diffviewer.results.read_saved_run`),
        read as written: it may have no usable pixel (the score of a cutout smaller than
        the kernel's footprint is EDGE everywhere), which an input may not.

    Returns
    -------
    Exposure
        float32 planes; NaN/Inf pixels are 0 with NO_DATA set; SAT set where the
        image reaches the header's SATURATE, or its flat top when the header has none
        (:func:`diffviewer.saturation.flat_top_level`); ``variance_estimated`` tells whether the
        variance was estimated; ``source`` is the spec with its path made absolute
        (:func:`diffviewer.paths.absolute_spec`; the messages of the reading name it as given);
        ``companions`` as given, their paths absolute (the siblings a ``*_ooi_*`` image
        finds are found again on every read).

    Raises
    ------
    InputError
        When a file is missing, not FITS, truncated, lacks the extension or image
        data, holds a 1-D or 3-D array, when planes differ in shape, or when no pixel is
        finite (or, unless ``saved``, usable).
    """
    path, ext = parse_spec(spec)
    source = str(spec)
    with open_fits(path, "image") as hdul:
        index = _find_hdu(hdul, ext, path, "image")
        if ext is None:
            _say_which_image(hdul, index, path)
        image = _image_data(hdul, index, path, "image")
        header = merged_header(hdul, index)
        name = hdul[index].name.upper()
        wcs = read_wcs(wcs_header(hdul, index, source), source)
        shape = image.shape
        in_var, in_mask, psf, named = _planes_beside(hdul, index, path, shape, companions.mask_bits)

    found = _with_siblings(companions, path, in_var is not None, in_mask is not None)
    mask, variance, weight = found.mask, found.variance, found.weight
    bits = np.zeros(shape, dtype=MASK_DTYPE) if in_mask is None else in_mask
    if mask is not None:
        raw, mask_header = _read_plane(mask, name, "mask", shape, source)
        bits = bits | mask_from_planes(
            raw.astype(np.int64), mask_header, str(mask), companions.mask_bits
        )
        named = named and (names_planes(mask_header) or bool(companions.mask_bits))
    var = in_var
    if variance is not None:
        var, _ = _read_plane(variance, name, "variance", shape, source)
    elif weight is not None:
        w, _ = _read_plane(weight, name, "weight", shape, source)
        positive = np.isfinite(w) & (w > 0)
        bits = set_planes(bits, ~positive, MaskPlane.NO_DATA)
        var = np.divide(1.0, w, out=np.full(shape, np.nan), where=positive, dtype=np.float64)

    data = _data_pixels(image, source)
    if not data.all():
        bits[~data] |= MASK_DTYPE(int(MaskPlane.NO_DATA))  # bits is this function's own
        image = np.where(data, image, 0.0)
    # A pixel defect's value (a cosmic ray's, a hot column's fill) tells nothing of the
    # detector's clip level, nor is it a saturated star's core (a plane grown over its
    # neighbours): 5129 masked pixels of a synthetic frame's cosmic rays and hot columns,
    # all at one value, were taken for a flat top and made SAT, which left every kernel
    # star out.
    sound = data & planes_clear(bits, int(PIXEL_DEFECTS))
    saturation = _saturation(image, sound, header, source)
    if saturation is not None and saturation[1] > 0:
        # Pixels without data are 0 by now, below a positive level; compared in double
        # precision (a header's level is not rounded to a float32 image's).
        bits[sound & (image >= np.float64(saturation[1]))] |= MASK_DTYPE(int(MaskPlane.SAT))
    if not saved:
        _check_usable(bits, source, saturation, named)
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
        var = estimate_variance(image, bits, header_gain(header, source), source)
    var, bits = fill_bad_variance(var, bits)  # the image has no bad value left
    return Exposure(
        image=read_only(image),  # the file's, closed: adopted without a copy, as the others
        variance=read_only(var),  # made here
        mask=read_only(bits),
        wcs=wcs,
        psf=psf,
        zero_point=header_zero_point(header),
        header=header,
        source=absolute_spec(source),  # what a run records: read alike from any folder
        variance_estimated=estimated,
        saturation=saturation,
        companions=companions.absolute(),
    )


def _with_siblings(
    companions: Companions, path: Path, has_variance: bool, has_mask: bool
) -> Companions:
    """``companions`` with a community-pipeline image's weight and mask siblings
    (:func:`~diffviewer.paths.companion_files`) where neither the file nor ``companions``
    gives that plane."""
    siblings = {name: str(path) for name, path in companion_files(path).items()}
    weight = companions.weight
    if companions.variance is None and weight is None and not has_variance:
        weight = siblings.get("weight")
    mask = companions.mask
    if mask is None and not has_mask:
        mask = siblings.get("mask")
    return Companions(mask, companions.variance, weight, companions.mask_bits)


def read_templates(
    spec: str | Sequence[str], companions: Sequence[Companions] | None = None
) -> list[Exposure]:
    """Read a template given whole or in pieces (see :func:`diffviewer.paths.template_specs`).

    Parameters
    ----------
    spec : str or sequence of str
        The template's spec, or its pieces'.
    companions : sequence of Companions, optional
        Each piece's (:func:`read_exposure`); none given for any when absent.

    Returns
    -------
    list of Exposure
        One exposure per piece, each read by :func:`read_exposure`.
    """
    specs = template_specs(spec)
    given = list(companions) if companions is not None else [NO_COMPANIONS] * len(specs)
    return pooled_saturation(
        [read_exposure(piece, companions=c) for piece, c in zip(specs, given, strict=True)]
    )


def pooled_saturation(pieces: Sequence[Exposure]) -> list[Exposure]:
    """A template's pieces, those that found no saturation level alone given the one their
    pixels show together.

    Parameters
    ----------
    pieces : sequence of Exposure
        The pieces, as read (:func:`read_exposure`).

    Returns
    -------
    list of Exposure
        The pieces; those without a level (no header card, no flat top, too few clipped
        cores of their own) with SAT set at :func:`diffviewer.saturation.pieces_plateau_level`
        of them and of the pieces whose level came from their data, together, on the flux
        scale of their zero points (:func:`diffviewer.exposure.zero_point_scales`), when
        it finds one (a coadd cut in pieces has one clip level, and its saturated stars
        may be spread one or two to a piece).
    """
    lacking = [k for k, piece in enumerate(pieces) if piece.saturation is None]
    if len(pieces) < 2 or not lacking:
        return list(pieces)
    # With the pieces whose own data showed a level (their cores count too), compared on
    # one flux scale (pieces of other zero points clip at other counts); the level found
    # is each piece's in its own units.
    pool = [
        k
        for k, piece in enumerate(pieces)
        if piece.saturation is None or piece.saturation[0] in DATA_LEVELS
    ]
    _, scales = zero_point_scales([pieces[k].zero_point for k in pool])
    level = pieces_plateau_level(
        [
            pieces[k].image * s if s != 1.0 else pieces[k].image
            for k, s in zip(pool, scales, strict=True)
        ],
        [planes_clear(pieces[k].mask, int(MaskPlane.NO_DATA)) for k in pool],
    )
    if level is None:
        return list(pieces)
    # Every piece without a level takes it, one without a broad core of its own too (a
    # GOTO quadrant: 596 of its 2,289 SAT_TEMPLATE pixels lost otherwise); a piece of
    # another exposure, unclipped, would have its brightest stars' cores above the level
    # flagged SAT as well (masked, not measured).
    own = {k: level / float(s) for k, s in zip(pool, scales, strict=True)}
    log.warning(
        "template pieces %s: no SATURATE card, and too few clipped stars in each to find "
        "its level alone, but together the broad cores of several stars pile up within "
        "%g%% of the maximum (a coadd's clip level): %s taken as their saturation levels "
        "(SAT; in each piece's units, by their zero points); give SATURATE in the pieces' "
        "headers to set it",
        ", ".join(pieces[k].source for k in lacking),
        100 * PLATEAU_WIDTH,
        ", ".join(f"{own[k]:g}" for k in lacking),
    )
    pooled = list(pieces)
    for k in lacking:
        piece = pieces[k]
        saturated = set_planes(piece.mask, piece.image >= np.float64(own[k]), MaskPlane.SAT)
        pooled[k] = piece.replace(mask=read_only(saturated), saturation=("star plateau", own[k]))
    return pooled
