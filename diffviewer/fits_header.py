"""FITS header cards: which are structural or WCS, and what a header says.

The header an exposure keeps (an extension's own cards over its primary's), its WCS,
zero point, gain and mask planes as read, and a header with another WCS for writing.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import re
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from diffviewer.exposure import MASK_DTYPE, MaskPlane

log = logging.getLogger(__name__)


#: The longest string (quotes doubled) a single 80-character card holds; longer ones
#: continue on CONTINUE cards.
CARD_STRING_MAX = 68
#: Header keywords read as the photometric zero point (AB mag of one image unit), in order.
ZERO_POINT_KEYS = ("MAGZP", "MAGZPSCI", "PHOTZP", "MAGZERO", "MAGZPT", "ZEROPT", "ZPT", "ZP")
#: Plausible zero points (mag); values outside are sentinels such as -999 or 99.
ZERO_POINT_RANGE = (5.0, 45.0)
#: Zero point of an image in nJy: 1 nJy is AB magnitude 31.4 (AB: 0 mag = 3631 Jy).
NJY_ZERO_POINT = 31.4
#: Header keywords read as the gain (electrons per image unit), in order.
GAIN_KEYS = ("GAIN", "EGAIN")

#: Cards that describe a HDU's layout, not the image: never carried from one file to another.
#: The tiled-image compression convention's cards are named one by one: a pattern of every
#: card starting with Z also took the zero points ZP, ZPT and ZEROPT away.
STRUCTURAL_KEY = re.compile(
    r"^(SIMPLE|XTENSION|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|BZERO|BSCALE|BLANK|EXTNAME|EXTVER"
    r"|EXTLEVEL|INHERIT|CHECKSUM|DATASUM|TTYPE\d+|TFORM\d+|TFIELDS|THEAP"
    r"|ZIMAGE|ZSIMPLE|ZTENSION|ZBITPIX|ZNAXIS\d*|ZTILE\d+|ZCMPTYPE|ZNAME\d+|ZVAL\d+|ZMASKCMP"
    r"|ZQUANTIZ|ZDITHER0|ZEXTEND|ZBLOCKED|ZPCOUNT|ZGCOUNT|ZHECKSUM|ZDATASUM|ZBLANK|ZSCALE|ZZERO)$"
)
#: Cards of a WCS (FITS standard, SIP, TPV, distortion tables, IRAF's LTV/LTM/WAT).
WCS_KEY = re.compile(
    r"^(WCSAXES|WCSNAME|WCSDIM|CTYPE\d|CRVAL\d|CRPIX\d|CDELT\d|CUNIT\d|CROTA\d|CD\d_\d|PC\d_\d"
    r"|PV\d_\d+|PS\d_\d+|CRDER\d|CSYER\d|LONPOLE|LATPOLE|RADESYS|RADECSYS|EQUINOX|EPOCH|MJDREF"
    r"|(A|B|AP|BP)_ORDER|(A|B|AP|BP)_\d+_\d+|(A|B)_DMAX|LTV\d|LTM\d_\d|WAT\d_\d+"
    r"|CPDIS\d|CPERR\d|DP\d|DQ\d|D2IMDIS\d|D2IMERR\d|D2IMARR)[A-Z]?$"
)

#: Cards that define a transformation: its axes' types or its linear matrix (the others
#: only qualify one: a header whose only such card is ``EPOCH`` or ``EQUINOX``, as the
#: pyDIA frames', or a lone ``CROTA2`` or ``CRPIX``, has no WCS; a Rubin cutout's CD
#: matrix without CTYPE is a pixel WCS).
#: The WCS cards that hold a number of the transformation.
WCS_NUMBER_KEY = re.compile(r"^(CRVAL\d|CRPIX\d|CDELT\d|CROTA\d|CD\d_\d|PC\d_\d)$")
WCS_DEFINING_KEY = re.compile(r"^(CTYPE\d|CD\d_\d|PC\d_\d)[A-Z]?$")


@contextlib.contextmanager
def quiet_wcs() -> Iterator[None]:
    """Neither astropy's warnings nor its log (paragraphs of INFO on a header whose SIP
    cards lack the ``-SIP`` suffix) while a WCS is read or written: what matters is said
    in one line of our own."""
    astropy_log = logging.getLogger("astropy")
    level = astropy_log.level
    astropy_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        astropy_log.setLevel(level)


def text_card(value: str, comment: str) -> tuple[str, str]:
    """A string card's ``(value, comment)``, the comment left out where the value and it do
    not share one card: astropy truncates it there with a warning (a value of 21-68
    characters with a comment of 40); a longer value continues on CONTINUE cards, which
    hold the comment whole."""
    quoted = len(value.replace("'", "''"))
    if quoted > CARD_STRING_MAX or 10 + max(quoted + 2, 10) + 3 + len(comment) <= 80:
        return value, comment
    return value, ""


def merged_header(hdul: fits.HDUList, index: int) -> fits.Header:
    """The image HDU's header, with primary-header cards it lacks (structural cards dropped)."""
    own = hdul[index].header
    merged = fits.Header([c for c in own.cards if not STRUCTURAL_KEY.match(c.keyword)])
    if index != 0:
        present = set(merged.keys())
        for card in hdul[0].header.cards:
            key = card.keyword
            if (
                key
                and key not in ("COMMENT", "HISTORY", "")
                and key not in present
                and not STRUCTURAL_KEY.match(key)
                and not WCS_KEY.match(key)
            ):
                merged.append(card)
    return merged


def _inherits(header: fits.Header) -> bool:
    """Whether an extension's header says ``INHERIT = T`` (the convention of NOAO and
    STScI: the primary header's cards count for the extension unless it has its own)."""
    return header.get("INHERIT") is True


def wcs_header(hdul: fits.HDUList, index: int, source: str) -> fits.Header:
    """The header a HDU's WCS is read from: its own, or, where an extension defines no WCS
    but says ``INHERIT = T``, its own with the primary header's WCS cards.

    A primary WCS that an extension without ``INHERIT = T`` does not take is said in one
    line (a mosaic's primary WCS may describe the whole focal plane, not the extension).
    """
    own = hdul[index].header
    if index == 0 or any(WCS_DEFINING_KEY.match(k) for k in own):
        return own
    primary = [c for c in hdul[0].header.cards if WCS_KEY.match(c.keyword)]
    if not any(WCS_DEFINING_KEY.match(c.keyword) for c in primary):
        return own
    if not _inherits(own):
        log.warning(
            "%s: the image has no WCS of its own and does not say INHERIT = T, so the "
            "primary header's WCS is not used (it may describe another area); add INHERIT = T "
            "to the image's header to use it",
            source,
        )
        return own
    header = own.copy()
    present = set(own.keys())
    header.extend([c for c in primary if c.keyword not in present])
    return header


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


def _unreadable_wcs_card(header: fits.Header) -> str | None:
    """The first WCS number card (:data:`WCS_NUMBER_KEY`) whose value is not a finite
    number (:func:`unreadable_number`: ``NaN``, which FITS cannot hold and astropy cannot
    parse; a string), or None. wcslib reads such a ``CRVAL1`` or ``PC1_1`` as a default
    (0, 1) without a word."""
    found = unreadable_number(header, [key for key in header if WCS_NUMBER_KEY.match(key)])
    return None if found is None else found[0]


def _missing_reference(wcs: WCS, header: fits.Header) -> str | None:
    """The sky axes' ``CRVAL`` cards a celestial WCS lacks (wcslib reads them as 0, placing
    the image at RA 0, Dec 0), or None."""
    if not wcs.has_celestial:
        return None
    missing = [f"CRVAL{axis + 1}" for axis in (wcs.wcs.lng, wcs.wcs.lat)]
    missing = [key for key in missing if key not in header]
    return " and ".join(missing) or None


def read_wcs(header: fits.Header, source: str) -> WCS | None:
    """The WCS of a header: None without a card defining one (:data:`WCS_DEFINING_KEY`),
    or when unreadable or degenerate.

    An unreadable or degenerate WCS (a zero or singular CD matrix, which wcslib may
    accept) is reported in one log line and dropped, so the images are handled in pixel
    coordinates (registered on stars, or taken as aligned).
    """
    if not any(WCS_DEFINING_KEY.match(k) for k in header):
        return None
    unreadable = _unreadable_wcs_card(header)
    if unreadable is not None:
        log.warning(
            "%s: WCS cannot be read (%s is not a finite number); using pixel coordinates only",
            source,
            unreadable,
        )
        return None
    cd = _header_cd(header)
    why = _degenerate_matrix(cd) if cd is not None else None
    wcs = None
    if why is None:
        try:
            with quiet_wcs():
                wcs = WCS(header, naxis=2)
        except Exception as exc:  # astropy/wcslib raise many types on malformed WCS
            reason = " ".join(str(exc).split())[:200]
            log.warning("%s: WCS cannot be read (%s); using pixel coordinates only", source, reason)
            return None
        lacking = _missing_reference(wcs, header)
        if lacking is not None:
            log.warning(
                "%s: the WCS has no %s (the sky position of its reference pixel): not used, "
                "the images are registered on their stars; add the card to use the WCS",
                source,
                lacking,
            )
            return None
        if wcs.sip is not None and not any(str(t).endswith("-SIP") for t in wcs.wcs.ctype):
            log.warning(
                "%s: the WCS has SIP distortion cards (A_ORDER, B_ORDER) but CTYPE %s lacks "
                "the -SIP suffix: the distortion is applied, as astropy does; remove the "
                "cards if the image is already distortion-corrected",
                source,
                "/".join(wcs.wcs.ctype),
            )
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


def header_float(header: fits.Header, keys: Sequence[str]) -> tuple[str, float] | None:
    """The first of ``keys`` present with a finite numeric value (numeric strings accepted;
    a card astropy cannot parse, as ``NaN``, is passed over)."""
    for key in keys:
        if key in header:
            try:
                value = float(header[key])
            except (TypeError, ValueError, fits.VerifyError):
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
        found = header_float(header, (key,))
        if found is not None and lo < found[1] < hi:
            return found[1]
    if str(header.get("BUNIT", "")).strip().lower() == "njy":
        return NJY_ZERO_POINT
    return None


def unreadable_number(header: fits.Header, keys: Sequence[str]) -> tuple[str, object] | None:
    """The first of ``keys`` present whose value is not a finite number (a card
    :func:`header_float` passes over), with that value; None when there is none."""
    for key in keys:
        if key in header and header_float(header, (key,)) is None:
            try:
                return key, header[key]
            except fits.VerifyError:
                return key, "(unparsable)"
    return None


def header_gain(header: fits.Header, source: str) -> tuple[str, float] | None:
    """The gain card and its value (electrons per image unit), or None when absent; a
    value that is not a finite positive number is ignored with a warning naming it."""
    found = header_float(header, GAIN_KEYS)
    if found is not None and found[1] > 0:
        return found
    bad = found or unreadable_number(header, GAIN_KEYS)
    if bad is not None:
        log.warning(
            "%s: %s = %r is not a positive number of electrons per image unit: ignored, as "
            "if the card were absent; fix or remove it",
            source,
            *bad,
        )
    return None


def names_planes(header: fits.Header) -> bool:
    """Whether a mask's header names its planes (``MP_<NAME> = bit`` cards, as LSST's)."""
    return any(key.startswith("MP_") for key in header)


def mask_from_planes(
    raw: np.ndarray,
    header: fits.Header,
    source: str,
    mask_bits: Sequence[tuple[int, str]] = (),
) -> np.ndarray:
    """Translate a mask read from a file into :class:`MaskPlane` bits.

    Parameters
    ----------
    raw : numpy.ndarray
        Integer mask as stored.
    header : astropy.io.fits.Header
        Its header; ``MP_<NAME> = bit`` cards (as LSST writes them) map each named
        plane onto the plane of the same name here.
    source : str
        The mask's file, for the warning.
    mask_bits : sequence of (int, str)
        For a mask without ``MP_*`` cards, each bit that masks and the plane it sets
        (:class:`diffviewer.companions.Companions`); without them every nonzero pixel
        becomes ``BAD`` (as for a data-quality file). Bits a map leaves out, and planes
        the cards name that are not known here, are dropped, those set on some pixel
        named in a warning.

    Returns
    -------
    numpy.ndarray
        mask (``MASK_DTYPE``).
    """
    values = np.asarray(raw).astype(np.int64)
    if names_planes(header):
        named = [(header[k], k[3:]) for k in header if k.startswith("MP_")]
        planes = [(b, n) for b, n in named if isinstance(b, int) and 0 <= b < 63]
    elif mask_bits:
        planes = list(mask_bits)
        given = 0
        for bit, _ in planes:
            given |= 1 << bit
        rest = int(np.bitwise_or.reduce(values & ~given, axis=None)) if values.size else 0
        planes += [(bit, "unmapped") for bit in range(63) if rest >> bit & 1]
    else:
        return np.where(values != 0, int(MaskPlane.BAD), 0).astype(MASK_DTYPE)
    out = np.zeros(values.shape, dtype=MASK_DTYPE)
    dropped = []
    for bit, name in planes:
        where = (values & (1 << bit)) != 0
        if name in MaskPlane.__members__:
            out[where] |= MASK_DTYPE(int(MaskPlane[name]))
        elif where.any():
            dropped.append(f"{name} (bit {bit}, {np.count_nonzero(where)} px)")
    if dropped:
        log.warning(
            "%s: mask planes not used, their pixels counted as good unless another plane "
            "masks them: %s",
            source,
            ", ".join(dropped),
        )
    return out


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
            if not STRUCTURAL_KEY.match(c.keyword) and not WCS_KEY.match(c.keyword)
        ]
    )
    if wcs is not None:
        with quiet_wcs():
            cards = wcs.to_header(relax=True).cards
        for card in cards:
            if WCS_KEY.match(card.keyword):
                out[card.keyword] = (card.value, card.comment)
    return out


def common_header(headers: Sequence[fits.Header], sources: Sequence[str]) -> fits.Header:
    """The header of a combination of exposures: the cards all of ``headers`` agree on
    (an exposure's own, such as its date, seeing or zero point, differ and are left
    out), and one ``PIECEn`` card naming each exposure.

    Parameters
    ----------
    headers : sequence of astropy.io.fits.Header
        The exposures' headers, in order (not modified).
    sources : sequence of str
        Where each exposure came from.

    Returns
    -------
    astropy.io.fits.Header
    """
    first = headers[0]
    out = fits.Header()
    for card in first.cards:
        key = card.keyword
        if key in ("", "COMMENT", "HISTORY") or key in out:
            continue
        if all(key in h and h[key] == card.value for h in headers[1:]):
            # a copy of the card, HIERARCH as read (set by its keyword, a long one is
            # re-made with a VerifyWarning: 90 of them on GOTO's SExtractor cards)
            out.append(copy.copy(card))
    for k, source in enumerate(sources):
        out[f"PIECE{k + 1}"] = (source, f"template piece {k + 1} of {len(sources)}")
    return out
