"""Why a file astropy could not open as FITS cannot be read, in words anyone can act on.

astropy's own messages advise passing keyword arguments (``ignore_missing_simple=True``),
which neither a command-line nor a window user can do; :func:`unreadable_fits_reason`
looks at the file's first bytes instead and names the real cause (gone, a folder, not
readable, empty, truncated header, another file format, text, a damaged header) and what
to do.
"""

from __future__ import annotations

from pathlib import Path

#: A FITS file is a sequence of blocks of this many bytes (FITS standard 4.0, section 3.1).
BLOCK = 2880
#: Every FITS file starts with this keyword field and value indicator (standard 4.0, 4.4.1.1).
SIMPLE = b"SIMPLE  = "
#: Leading bytes of formats an image is often saved in by mistake, and what to call them.
MAGIC = (
    (b"\x89PNG", "a PNG image, not a FITS file"),
    (b"\xff\xd8\xff", "a JPEG image, not a FITS file"),
    (b"II*\x00", "a TIFF image, not a FITS file"),
    (b"MM\x00*", "a TIFF image, not a FITS file"),
    (b"%PDF", "a PDF document, not a FITS file"),
    (b"\x89HDF", "an HDF5 file, not a FITS file"),
    (b"PK\x03\x04", "a zip archive, not a FITS file"),
    (b"\x1f\x8b", "a gzip file that does not hold a FITS file (or is damaged)"),
    (b"BZh", "a bzip2 file that does not hold a FITS file (or is damaged)"),
)


def _looks_like_text(head: bytes) -> bool:
    """Whether ``head`` is printable ASCII/UTF-8 with line breaks or tabs only."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\r\n\t" for c in text)


def unreadable_fits_reason(path: Path, exc: BaseException) -> str:
    """The cause of a failed FITS open and what to do, as ``cause; what to do``.

    Parameters
    ----------
    path : Path
        The file astropy failed to open.
    exc : BaseException
        astropy's error (quoted only when the file's bytes do not tell the cause, and
        then without its advice to pass a keyword argument).

    Returns
    -------
    str
        E.g. ``it is empty (0 bytes); copy or download it again``.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(BLOCK)
    except FileNotFoundError:
        return "it does not exist; check the path"
    except IsADirectoryError:
        return "it is a folder, not a file; give a FITS file"
    except PermissionError as err:
        return f"it cannot be read ({err.strerror or err}); check its permissions"
    except OSError as err:
        return f"it cannot be read ({err.strerror or err}); copy it again, or check the disk"
    if size == 0:
        return "it is empty (0 bytes); copy or download it again"
    if head.startswith(SIMPLE):
        if size < BLOCK:
            return (
                f"it is truncated: {size} bytes, less than the {BLOCK}-byte FITS header "
                "block; copy or download it again"
            )
        return (
            f"its FITS header is damaged ({_plain(exc)}); check it with fitsverify, or "
            "copy or download it again"
        )
    kind = next((name for magic, name in MAGIC if head.startswith(magic)), None)
    if kind is None and _looks_like_text(head):
        first = head.decode("utf-8").splitlines()[0][:40] if head.strip() else ""
        kind = f"a text file (it begins {first!r}), not a FITS file"
    if kind is None:
        kind = f"not a FITS file (it begins with the bytes {head[:8]!r})"
    return (
        f"it is {kind}: a FITS file begins with the card 'SIMPLE  = T'; give a FITS "
        "image (convert it to FITS first)"
    )


def _plain(exc: BaseException) -> str:
    """astropy's message without sentences advising a keyword argument (``x=True``)."""
    text = str(exc).strip()
    sentences = [t for t in text.split(". ") if "=True" not in t and "=False" not in t]
    return ". ".join(sentences).rstrip(". ") or type(exc).__name__
