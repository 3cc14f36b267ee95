"""The unreadable-FITS message (issue 10 point 9): file, real cause and what to do, no
astropy keyword advice, the same on the command line and in the window."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from diffviewer.errors import InputError
from diffviewer.fits_check import unreadable_fits_reason
from diffviewer.gui.opening import image_extensions
from diffviewer.io import read_exposure


def _header_cut(path: Path) -> None:
    """A FITS file cut inside its first header block."""
    hdu = fits.PrimaryHDU(np.zeros((40, 40), np.float32))
    hdu.writeto(path.with_suffix(".full"))
    path.write_bytes(path.with_suffix(".full").read_bytes()[:1000])


CASES = {
    "empty": (lambda p: p.write_bytes(b""), r"it is empty \(0 bytes\); copy or download"),
    "text": (
        lambda p: p.write_text("SIMPLE = this is not FITS\n" * 50),
        r"it is a text file \(it begins 'SIMPLE = this is not FITS'\), not a FITS file: .*"
        r"give a FITS image",
    ),
    "gzip": (
        lambda p: p.write_bytes(b"\x1f\x8b" + b"junk" * 10),
        r"it is a gzip file that does not hold a FITS file \(or is damaged\): ",
    ),
    "png": (
        lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(3000)),
        r"it is a PNG image, not a FITS file: .*convert it to FITS",
    ),
    "binary": (
        lambda p: p.write_bytes(bytes(range(256)) * 20),
        r"it is not a FITS file \(it begins with the bytes b'\\x00\\x01",
    ),
    "header cut": (_header_cut, r"it is truncated: 1000 bytes, less than the 2880-byte FITS"),
}


# astropy warns of the header cut short before it fails: the failure is what is tested
@pytest.mark.filterwarnings("ignore::astropy.io.fits.verify.VerifyWarning")
@pytest.mark.parametrize("case", sorted(CASES))
def test_unreadable_fits_names_file_cause_and_action(tmp_path: Path, case: str) -> None:
    make, expected = CASES[case]
    path = tmp_path / "input.fits"
    make(path)
    with pytest.raises(InputError) as cli:
        read_exposure(path)
    with pytest.raises(InputError) as gui:  # File > Open multi-extension file
        image_extensions(path)
    for message in (str(cli.value), str(gui.value)):
        assert str(path) in message
        assert "=True" not in message and "ignore_missing_simple" not in message
        assert "\n" not in message  # one line
    assert str(cli.value).startswith(f"image file {path} is not a readable FITS file: ")
    assert str(gui.value).startswith(f"multi-extension file {path} is not a readable FITS file: ")
    for message in (str(cli.value), str(gui.value)):
        assert re.search(expected, message), message


def test_a_path_that_is_gone_or_a_folder_is_said_to_be_so(tmp_path: Path) -> None:
    # "it cannot be read (No such file or directory); check its permissions" was said of
    # a file gone and of a folder (repro r9): permissions were not the cause.
    error = OSError("astropy's error")
    assert (
        unreadable_fits_reason(tmp_path / "gone.fits", error) == "it does not exist; check the path"
    )
    assert unreadable_fits_reason(tmp_path, error) == "it is a folder, not a file; give a FITS file"
