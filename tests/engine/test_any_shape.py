"""The whole pipeline takes any image shape, dtype, NaN pattern and mask.

Property-based: hypothesis draws small pairs (odd, prime, thin and kernel-sized shapes,
integer and float dtypes, scattered or whole-row NaNs, masks with random planes), writes
them as FITS, reads them back and runs ``run_subtraction``. Every draw must either give a
result or raise one of diffviewer's own errors; a numpy/scipy exception, an IndexError or
a ZeroDivisionError is a bug. The shapes stay small so the test takes seconds.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from diffviewer.config import SubtractionConfig, apply_overrides
from diffviewer.engine.pipeline import run_subtraction
from diffviewer.errors import DiffviewerError
from diffviewer.exposure import MaskPlane
from diffviewer.io import read_exposure
from diffviewer.outputs import write_outputs
from diffviewer.results import read_saved_run
from diffviewer.stats import FWHM_PER_SIGMA
from diffviewer.synthetic import render_gaussians

#: Sides that have broken shape arithmetic before: 1-3 px, primes, odd sides around the
#: least image side (22 px with the default 11 px kernel), sides that are not multiples
#: of the 32 and 64 px boxes of the background and sky estimates.
SIDES = st.one_of(
    st.sampled_from([1, 2, 3, 5, 21, 22, 23, 24, 31, 33, 37, 41, 47, 53, 61, 64, 65, 67, 71]),
    st.integers(min_value=1, max_value=72),
)
DTYPES = st.sampled_from(["float32", "float64", "uint16", "int16", "int32"])
NAN_PATTERNS = st.sampled_from(["none", "scatter", "row", "column", "corner", "half"])
MASK_PATTERNS = st.sampled_from(["none", "scatter", "saturated_star", "block", "cosmic"])


def _field(
    shape: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions and fluxes of one star field (a star per 300 px)."""
    ny, nx = shape
    n = max(1, (ny * nx) // 300)
    return rng.uniform(0, nx - 1, n), rng.uniform(0, ny - 1, n), rng.uniform(2e3, 5e4, n)


def _seen(
    shape: tuple[int, int],
    field: tuple[np.ndarray, np.ndarray, np.ndarray],
    fwhm: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """``field`` rendered with a Gaussian PSF over a sky of 1000 counts, with noise."""
    x, y, flux = field
    model = render_gaussians(shape, x, y, flux, np.full(x.size, fwhm / FWHM_PER_SIGMA), 12)
    return 1000.0 + model + rng.normal(size=shape) * np.sqrt(1000.0 + model)


def _image(
    shape: tuple[int, int], rng: np.random.Generator, fwhm: float, shift: float
) -> np.ndarray:
    """A field of its own (:func:`_field`), shifted along x within the image, seen."""
    x, y, flux = _field(shape, rng)
    return _seen(shape, (np.clip(x + shift, 0, shape[1] - 1), y, flux), fwhm, rng)


def _with_nans(image: np.ndarray, pattern: str, rng: np.random.Generator) -> np.ndarray:
    """``image`` as float64 with NaNs in ``pattern``."""
    out = image.astype(np.float64)
    ny, nx = out.shape
    if pattern == "scatter":
        out[rng.random(out.shape) < 0.05] = np.nan
    elif pattern == "row":
        out[rng.integers(ny)] = np.nan
    elif pattern == "column":
        out[:, rng.integers(nx)] = np.nan
    elif pattern == "corner":
        out[: ny // 3, : nx // 3] = np.nan
    elif pattern == "half":
        out[:, : nx // 2] = np.nan
    return out


def _mask(shape: tuple[int, int], pattern: str, rng: np.random.Generator) -> np.ndarray | None:
    """An LSST-style mask (bit 0 BAD, 1 SAT, 4 CR) in ``pattern``, or None."""
    if pattern == "none":
        return None
    mask = np.zeros(shape, dtype=np.int32)
    ny, nx = shape
    if pattern == "scatter":
        mask[rng.random(shape) < 0.03] = 1 << int(rng.choice([0, 1, 4]))
    elif pattern == "saturated_star":
        mask[ny // 2 : ny // 2 + 3, nx // 2 : nx // 2 + 3] = 2
    elif pattern == "block":
        mask[ny // 4 : ny // 2, :] = 1
    elif pattern == "cosmic":
        mask[rng.random(shape) < 0.005] = 1 << 4
    return mask


def _spiked(image: np.ndarray, mask: np.ndarray | None, pattern: str) -> np.ndarray:
    """``image`` with its masked cosmic rays (pattern ``"cosmic"``) at 5e4 counts, as a
    cosmic ray's pixels are: a value that must not spread beyond its mask."""
    if pattern != "cosmic" or mask is None:
        return image
    return np.where(mask != 0, 5e4, image)


def _write(folder: Path, name: str, image: np.ndarray, dtype: str, mask: np.ndarray | None) -> str:
    """Write ``image`` as ``dtype`` (NaNs stay NaN for floats, become 0 for integers)."""
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        data = np.clip(np.nan_to_num(image, nan=0.0), info.min, info.max).astype(dtype)
    else:
        data = image.astype(dtype)
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(data, name="IMAGE")]
    if mask is not None:
        header = fits.Header({"MP_BAD": 0, "MP_SAT": 1, "MP_CR": 4})
        hdus.append(fits.ImageHDU(mask, header=header, name="MASK"))
    path = folder / f"{name}.fits"
    fits.HDUList(hdus).writeto(path)
    return str(path)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    ny=SIDES,
    nx=SIDES,
    dtype=DTYPES,
    nans=NAN_PATTERNS,
    masks=MASK_PATTERNS,
    template_fwhm=st.floats(min_value=1.5, max_value=6.0),
    shift=st.floats(min_value=-1.0, max_value=1.0),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_any_pair_succeeds_or_raises_our_error(
    ny: int,
    nx: int,
    dtype: str,
    nans: str,
    masks: str,
    template_fwhm: float,
    shift: float,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    shape = (ny, nx)
    science = _with_nans(_image(shape, rng, 4.0, 0.0), nans, rng)
    template = _with_nans(_image(shape, rng, template_fwhm, shift), nans, rng)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mask = _mask(shape, masks, rng)
        sci_spec = _write(folder, "science", _spiked(science, mask, masks), dtype, mask)
        tmpl_spec = _write(folder, "template", template, dtype, None)
        with warnings.catch_warnings():
            # numpy's overflow/invalid warnings from our own code are bugs too
            warnings.simplefilter("error", RuntimeWarning)
            try:
                sci = read_exposure(sci_spec)
                tmpl = read_exposure(tmpl_spec)
                result = run_subtraction(sci, tmpl, SubtractionConfig())
            except DiffviewerError as exc:
                message = str(exc)
                event(f"refused: {type(exc).__name__}")
                assert message and "\n" not in message, f"not one line: {message!r}"
                return
    event("subtracted")
    assert result.difference.shape == shape
    assert np.isfinite(result.difference.image).all()


@pytest.mark.parametrize("shape", [(1, 400), (2, 500), (5, 5), (21, 300)])
def test_images_too_small_are_refused_with_the_minimum(tmp_path: Path, shape) -> None:
    rng = np.random.default_rng(1)
    image = _image(shape, rng, 4.0, 0.0)
    spec = _write(tmp_path, "small", image, "float32", None)
    with pytest.raises(DiffviewerError, match=r"at least 22 x 22 px"):
        sci = read_exposure(spec)
        run_subtraction(sci, sci, SubtractionConfig())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ny=SIDES.filter(lambda side: side >= 22),
    nx=SIDES.filter(lambda side: side >= 22),
    dtype=DTYPES,
    nans=NAN_PATTERNS,
    masks=MASK_PATTERNS,
    template_fwhm=st.floats(min_value=1.0, max_value=8.0),
    shift=st.tuples(st.floats(-4.0, 4.0), st.floats(-4.0, 4.0)),
    mode=st.sampled_from(["auto", "template", "science"]),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_one_field_seen_twice_is_subtracted_or_refused_with_our_error(
    tmp_path_factory: pytest.TempPathFactory,
    ny: int,
    nx: int,
    dtype: str,
    nans: str,
    masks: str,
    template_fwhm: float,
    shift: tuple[float, float],
    mode: str,
    seed: int,
) -> None:
    # The same stars in both images (the test above draws two fields, which registration
    # rightly refuses half the time): the template shifted by up to 4 px, its PSF from
    # 1 px (narrower than a pixel's moments, the stamps all rejected) to 8 px, either
    # image convolved. The outputs are written and read back.
    rng = np.random.default_rng(seed)
    shape = (ny, nx)
    stars = _field(shape, rng)
    moved = (stars[0] + shift[0], stars[1] + shift[1], stars[2] * 0.8)
    science = _with_nans(_seen(shape, stars, 4.0, rng), nans, rng)
    template = _with_nans(_seen(shape, moved, template_fwhm, rng), nans, rng)
    folder = tmp_path_factory.mktemp("pair")
    mask = _mask(shape, masks, rng)
    sci_spec = _write(folder, "science", _spiked(science, mask, masks), dtype, mask)
    tmpl_spec = _write(folder, "template", template, dtype, None)
    config = apply_overrides(SubtractionConfig(), [f"kernel.mode={mode}"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            result = run_subtraction(read_exposure(sci_spec), read_exposure(tmpl_spec), config)
        except DiffviewerError as exc:
            event(f"refused: {type(exc).__name__}")
            assert str(exc) and "\n" not in str(exc), f"not one line: {exc!r}"
            return
        write_outputs(result, folder / "out", [sci_spec, tmpl_spec])
    event("subtracted")
    assert np.isfinite(result.difference.image).all()
    # pixels without data are written NaN and read back 0 (the engine leaves its
    # arithmetic's dust there, ~1e-3); the others as they were
    back = read_saved_run(folder / "out").difference.image
    no_data = (result.difference.mask & int(MaskPlane.NO_DATA)) != 0
    np.testing.assert_array_equal(back[~no_data], result.difference.image[~no_data])
    assert np.all(back[no_data] == 0)


def _drawn_twice(
    folder: Path,
    seed: int,
    side: int,
    template_fwhm: float,
    shift: tuple[float, float],
    nans: str,
    dtype: str,
    science_mask: str,
) -> Any:
    """One draw of the same-field property test, written, read and subtracted: the field
    seen with a 4 px PSF, and again (fluxes 0.8) with ``template_fwhm`` and ``shift``."""
    rng = np.random.default_rng(seed)
    shape = (side, side)
    field = _field(shape, rng)
    x, y, flux = field
    science = _with_nans(_seen(shape, field, 4.0, rng), nans, rng)
    moved = (x + shift[0], y + shift[1], flux * 0.8)
    template = _with_nans(_seen(shape, moved, template_fwhm, rng), nans, rng)
    return run_subtraction(
        read_exposure(_write(folder, "s", science, dtype, _mask(shape, science_mask, rng))),
        read_exposure(_write(folder, "t", template, dtype, None)),
    )


def test_a_field_seen_twice_in_integers_with_an_unread_half_registers(tmp_path: Path) -> None:
    # A 127 px field written as int32 with its left half 0 (NaN cannot be an integer),
    # the template's PSF 1.1 px and shifted (3.3, 2.2) px. The 0 half was read as data,
    # 1000 counts below the sky, and the sky it pulled down made 116 of the template's
    # 137 "stars" noise peaks: "the star patterns do not match". Read as fill (NO_DATA),
    # 20 of 21 are real; the pair registers.
    result = _drawn_twice(tmp_path, 13522, 127, 1.1, (3.3209, 2.2142), "half", "int32", "none")
    assert result.template.registration.method == "stars"
    assert result.template.registration.rms < 0.5


def test_a_crowded_field_with_a_broad_template_psf_registers(tmp_path: Path) -> None:
    # A 361 px field, a star per 300 px^2, the template's PSF 7.7 px against 4 px, on
    # one grid. Blends put the identity guess's 179 pairs at 1.1 px RMS, beyond the
    # 0.5 px a fit had to reach to be trusted, and star patterns then failed to match.
    # Chance gives 11 such pairs: the fit is trusted, and it finds the grids one (within
    # 0.31 px, its error 0.24 px: not warped).
    result = _drawn_twice(tmp_path, 547, 361, 7.747, (0.0, 0.0), "scatter", "uint16", "block")
    registration = result.template.registration
    assert registration.method == "stars" and registration.n_matched > 100
    assert not result.template.warped


def test_an_undersampled_template_of_a_crowded_field_registers(tmp_path: Path) -> None:
    # A 500 px field, a star per 300 px^2, the template's PSF 1.2 px (undersampled) and
    # shifted (-3.7, -3.9) px, beyond the match radius of the identity guess. Star
    # patterns are matched among each image's 60 brightest stars, ranked by their peak
    # pixel, which for a 1.2 px PSF halves as a star's centre moves from a pixel's
    # centre to its corner: the two lists shared too few stars, "the star patterns do
    # not match" (5 of 12 such draws). Ranked by the smoothed image, the pair registers
    # on 440 stars, within 0.01 px of the true shift.
    shift = (-3.6727, -3.8747)
    result = _drawn_twice(tmp_path, 0, 500, 1.2, shift, "none", "float32", "none")
    registration = result.template.registration
    assert registration.method == "stars" and registration.n_matched > 300
    assert registration.transform is not None
    tx, ty = registration.transform(np.array([250.0]), np.array([250.0]))
    assert np.hypot(tx[0] - 250.0 - shift[0], ty[0] - 250.0 - shift[1]) < 0.05


def test_a_small_field_shifted_beyond_the_match_radius_registers(tmp_path: Path) -> None:
    # An 80 px field of 14 stars, the template shifted (-3.3, 4.9) px: beyond the match
    # radius of the identity guess, and too few stars for star patterns to match. With
    # fewer than 20 stars the run took the images as one grid, 5.9 px off, with a
    # warning. The translation most star pairs agree on (register_guesses.shift_guess) pairs 11
    # of them, within 0.2 px of the true shift.
    shift = (-3.3, 4.9)
    result = _drawn_twice(tmp_path, 17, 80, 3.0, shift, "none", "float32", "none")
    registration = result.template.registration
    assert registration.method == "stars" and registration.transform is not None
    tx, ty = registration.transform(np.array([40.0]), np.array([40.0]))
    assert np.hypot(tx[0] - 40.0 - shift[0], ty[0] - 40.0 - shift[1]) < 0.3


def test_a_saved_run_whose_score_is_edge_everywhere_reads_back(tmp_path: Path) -> None:
    # A 22 x 23 px pair (the least image side): the score is EDGE on every pixel, a valid
    # product of such a cutout, which reading the run back refused as an unusable input.
    rng = np.random.default_rng(0)
    shape = (22, 23)
    stars = _field(shape, rng)
    science = _with_nans(_seen(shape, stars, 4.0, rng), "scatter", rng)
    template = _with_nans(_seen(shape, stars, 1.0, rng), "scatter", rng)
    specs = [
        _write(tmp_path, name, image, "float32", None)
        for name, image in (("s", science), ("t", template))
    ]
    result = run_subtraction(read_exposure(specs[0]), read_exposure(specs[1]), SubtractionConfig())
    assert result.score is not None and np.all(result.score.mask & int(MaskPlane.EDGE))
    write_outputs(result, tmp_path / "out", specs)
    back = read_saved_run(tmp_path / "out")
    assert back.score is not None
    np.testing.assert_array_equal(back.score.image, result.score.image)
    np.testing.assert_array_equal(back.difference.mask, result.difference.mask)
    # an input with no usable pixel is still refused
    with pytest.raises(DiffviewerError, match="every pixel is masked"):
        read_exposure(str(tmp_path / "out" / "score.fits"))
