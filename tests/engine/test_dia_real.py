"""Score, detection and measurement through the full pipeline on real data.

- GOTO: PSF-shaped sources (the science PSF the engine measured) injected into
  ``goto/1.fits`` at known positions and fluxes, subtracted against ``2.fits``:
  recovery by S/N, flux pulls, and spurious detections compared with the same run
  without injections.
- ZTF and Rubin alert triplets: the survey's candidate at the cutout centre is
  detected with the survey's sign, and our difference correlates with the survey's.

The S/N of an injected source is measured against the difference's own noise
(``tests/engine/injection.py``).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage

from diffviewer.config import SubtractionConfig, from_dict
from diffviewer.engine.photometry import PsfModel, forced_psf_flux
from diffviewer.exposure import MaskPlane
from diffviewer.stats import FWHM_PER_SIGMA, robust_std
from tests.conftest import data_path
from tests.engine.injection import inject_on_blank_sky

try:  # the pipeline needs the kernel engine and the reader of the other engineers
    from diffviewer.engine.pipeline import SubtractionResult, run_subtraction
    from diffviewer.io import read_exposure
except ImportError as exc:  # pragma: no cover - only while the engine is being written
    pytest.skip(f"the full pipeline is not runnable yet ({exc})", allow_module_level=True)

pytestmark = pytest.mark.slow

#: Sky sources for the error calibration (the scale is known to ~5 %).
SKY_SOURCES = 200


@pytest.fixture(scope="module")
def goto_injection() -> dict[str, object]:
    """One run without and one with ~560 injected sources of S/N 3-30 on blank GOTO sky."""
    sci = read_exposure(data_path("goto/1.fits"))
    tmpl = read_exposure(data_path("goto/2.fits"))
    config = from_dict({"detection": {"sky_sources": SKY_SOURCES}})
    base = run_subtraction(sci, tmpl, config)
    injected = inject_on_blank_sky(base, np.random.default_rng(2024))
    assert len(injected.xy) > 300
    xy, snr, flux, scale = injected.xy, injected.snr, injected.flux, injected.scale
    result = run_subtraction(sci.replace(image=injected.image), tmpl, config)

    cat = result.diasources[~np.asarray(result.diasources["sky_source"])]
    dist = np.hypot(
        np.asarray(cat["x"])[:, None] - xy[None, :, 0],
        np.asarray(cat["y"])[:, None] - xy[None, :, 1],
    )
    nearest = np.argmin(dist, axis=0)
    found = (dist[nearest, np.arange(len(xy))] < 2.0) & (np.asarray(cat["sign"])[nearest] > 0)
    rates = {}
    for lo, hi in ((3, 5), (5, 7), (7, 10), (10, 30)):
        sel = (snr >= lo) & (snr < hi)
        rates[(lo, hi)] = (float(found[sel].mean()), int(sel.sum()))
    spurious = len(cat) - len(set(nearest[found].tolist()))
    baseline = int(np.sum(~np.asarray(base.diasources["sky_source"])))
    bright = found & (snr >= 10)
    rows = nearest[bright]
    pull = np.asarray(cat["psf_flux"])[rows] - flux[bright]
    pull /= np.asarray(cat["psf_flux_err"])[rows]
    print(
        f"\nGOTO injection: {len(xy)} sources; recovered by S/N: "
        + ", ".join(f"{lo}-{hi}: {r:.0%} of {n}" for (lo, hi), (r, n) in rates.items())
        + f"; pulls (S/N >= 10): median {np.median(pull):+.2f}, std {np.std(pull):.2f}; "
        f"scatter of blank-sky forced fluxes over their catalog errors {scale:.2f} (1: the "
        f"renormalised variance is honest; noise scale {base.renormalisation.noise_scale:.3f}"
        f", injected run {result.renormalisation.noise_scale:.3f}); kernel sum "
        f"{base.kernel.photometric_scale:.3f} -> {result.kernel.photometric_scale:.3f}; "
        f"detections not matching an injection: {spurious}, without injections: {baseline}"
    )
    return {"rates": rates, "pull": pull, "spurious": spurious, "baseline": baseline}


def test_goto_injections_are_recovered(goto_injection) -> None:
    rates = goto_injection["rates"]
    # A 5-sigma threshold on S/N >= 10 sources misses only those on a residual or a mask.
    assert rates[(10, 30)][0] >= 0.95
    # At S/N 5-7 the score peak scatters by +-1 about 5-7: about 70 % exceed 5.
    assert rates[(5, 7)][0] >= 0.5
    # Injections into blank sky must not multiply the other detections (the count is
    # printed; a broken kernel or guard would add hundreds).
    assert goto_injection["spurious"] <= 1.5 * goto_injection["baseline"] + 10


def test_goto_injected_fluxes_are_unbiased(goto_injection) -> None:
    pull = goto_injection["pull"]
    # Pulls of ~280 sources: median known to +-0.07, scatter to +-0.04.
    assert abs(float(np.median(pull))) < 0.2
    assert 0.8 <= float(np.std(pull)) <= 1.2


def _triplets(survey: str) -> list[dict[str, str]]:
    folder = data_path(f"{survey}_triplets")
    with open(Path(folder) / f"{survey}_triplets_meta.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _centre_detection(
    result: SubtractionResult, sign: int, radius: float = 3.0
) -> tuple[bool, bool]:
    """Within ``radius`` of the centre: a source of that sign; a footprint with a part of it."""
    cat = result.diasources[~np.asarray(result.diasources["sky_source"])]
    ny, nx = result.science.shape
    dx, dy = np.asarray(cat["x"]) - (nx - 1) / 2, np.asarray(cat["y"]) - (ny - 1) / 2
    near = np.hypot(dx, dy) < radius
    strict = bool(np.any(np.asarray(cat["sign"])[near] == sign))
    part = np.asarray(cat["has_positive" if sign > 0 else "has_negative"])[near]
    return strict, strict or bool(np.any(part))


def _correlation(ours: np.ndarray, theirs: np.ndarray, good: np.ndarray) -> float:
    """Pearson correlation over pixels finite and good in both."""
    ok = good & np.isfinite(theirs) & np.isfinite(ours)
    if ok.sum() < 10 or ours.shape != theirs.shape:
        return float("nan")
    return float(np.corrcoef(ours[ok], theirs[ok])[0, 1])


def _matched_snr(image: np.ndarray, variance: np.ndarray, psf: np.ndarray, sign: int) -> float:
    """Matched-filter S/N of a point source within 3 px of the centre, on the sign's side.

    The PSF (cropped to fit the cutout, sum 1) weights the pixels by their inverse
    variance: the S/N a PSF fit would give at each position; the extreme of the given
    sign near the centre is returned. NaN pixels carry no weight.
    """
    ny, nx = image.shape
    c = psf.shape[0] // 2
    h = min(c, ny // 2 - 1, nx // 2 - 1)
    kern = psf[c - h : c + h + 1, c - h : c + h + 1]
    kern = kern / kern.sum()
    ok = np.isfinite(image) & np.isfinite(variance) & (variance > 0)
    inv = np.where(ok, 1.0 / np.where(ok, variance, 1.0), 0.0)
    num = ndimage.correlate(np.where(ok, image, 0.0) * inv, kern, mode="constant")
    den = ndimage.correlate(inv, kern**2, mode="constant")
    snr = num / np.sqrt(np.where(den > 0, den, np.inf))
    yy, xx = np.indices(image.shape)
    near = np.hypot(yy - (ny - 1) / 2, xx - (nx - 1) / 2) < 3
    return float(sign * np.max(sign * snr[near]))


def _survey_difference(
    survey: str, path: str, row: dict[str, str], sign: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The survey's difference (science minus reference), its variance and its PSF.

    Rubin's triplets carry ``DIFF_VAR`` and ``DIFF_PSF``. ZTF's carry neither: its
    noise is the robust scatter of ``DIFF`` (sky-dominated cutouts) and its PSF a
    Gaussian of the alert's ``fwhm``; ZTF's DIFF is reference minus science when
    ``isdiffpos`` is 'f'.
    """
    with fits.open(path) as hdul:
        diff = np.asarray(hdul["DIFF"].data, dtype=np.float64)
        if survey == "rubin":
            var = np.asarray(hdul["DIFF_VAR"].data, np.float64)
            return diff, var, np.asarray(hdul["DIFF_PSF"].data, np.float64)
    diff = diff * sign
    var = np.full(diff.shape, robust_std(diff[np.isfinite(diff)]) ** 2)
    sigma = float(row["fwhm"]) / FWHM_PER_SIGMA
    y, x = np.mgrid[-10:11, -10:11]
    return diff, var, np.exp(-0.5 * (x * x + y * y) / sigma**2)


def _centre_extreme(image: np.ndarray, sign: int) -> float:
    """The extreme of the given sign within 3 px of the centre."""
    ny, nx = image.shape
    yy, xx = np.indices(image.shape)
    near = np.hypot(yy - (ny - 1) / 2, xx - (nx - 1) / 2) < 3
    return float(sign * np.max(sign * image[near]))


def _why_missed(
    result: SubtractionResult,
    ours_snr: float,
    theirs_snr: float,
    survey: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> str:
    """Why the candidate was missed, in numbers: a footprint measured elsewhere, or a
    low S/N split into our PSF flux and error at the centre over the survey's (both
    forced there with the survey's PSF), with the kernel that made our difference."""
    threshold = result.config.detection.threshold
    theirs, their_var, their_psf = survey
    ny, nx = theirs.shape
    if abs(ours_snr) >= threshold:
        yy, xx = np.indices((ny, nx))
        near = np.hypot(yy - (ny - 1) / 2, xx - (nx - 1) / 2) < 3
        labels = np.unique(result.detections.segmentation[near])
        cat = result.diasources[np.isin(result.diasources["label"], labels[labels > 0])]
        where = ", ".join(
            f"{np.hypot(r['x'] - (nx - 1) / 2, r['y'] - (ny - 1) / 2):.1f} px away (peak "
            f"{r['peak_value']:+.1f})"
            for r in cat
        )
        return (
            f"; missed: S/N {ours_snr:+.1f}, but no peak of its own: the footprint there is "
            f"measured at {where}"
            if where
            else f"; missed: S/N {ours_snr:+.1f}, but in no footprint of at least "
            f"{result.config.detection.min_area} px"
        )
    model = PsfModel(their_psf / their_psf.sum())
    diff = result.difference
    ours, our_var = diff.image.astype(np.float64), diff.variance.astype(np.float64)
    # The same pixels on both: known and of positive variance on each (our EDGE pixels,
    # within a kernel's reach of a 30 px cutout's edge, are most of it and are on the
    # survey's difference too; leaving them out of ours alone read our flux as 0.82 and
    # our error 1.26 of the survey's where the two differences agree to 0.05 sigma).
    ok = (
        np.isfinite(theirs)
        & np.isfinite(their_var)
        & (their_var > 0)
        & np.isfinite(ours)
        & np.isfinite(our_var)
        & (our_var > 0)
    )
    centre = (nx - 1) / 2, (ny - 1) / 2
    flux_t, err_t = _forced(theirs, their_var, ok, model, centre)
    flux_o, err_o = _forced(ours, our_var, ok, model, centre)
    # And on the pixels our difference vouches for (not EDGE): the survey's difference
    # there, made on the whole detector, tells whether its S/N needed the pixels a
    # cutout's kernel cannot reach.
    inner = ok & ((diff.mask & int(MaskPlane.EDGE)) == 0)
    inner_t = np.divide(*_forced(theirs, their_var, inner, model, centre))
    inner_o = np.divide(*_forced(ours, our_var, inner, model, centre))
    kernel = result.kernel
    n_stars = int(np.sum(np.asarray(kernel.candidates["status"]) == "GOOD"))
    size = kernel.solution.evaluate((nx - 1) / 2, (ny - 1) / 2).shape[0]
    return (
        f"; missed: our S/N {ours_snr:+.1f} against the threshold {threshold:g} (the "
        f"survey's {theirs_snr:+.1f}); at the centre our PSF flux is {flux_o / flux_t:.2f} "
        f"and our error {err_o / err_t:.2f} of the survey's (on the {int(inner.sum())} "
        f"pixels not EDGE, S/N {inner_o:+.1f} ours, {inner_t:+.1f} the survey's); kernel "
        f"from {n_stars} stars"
        + (
            " (none: derived from the two PSFs)"
            if n_stars < result.config.kernel.min_stamps
            else ""
        )
        + f", {size} px"
        + (
            "; the centre is EDGE (a source the cutout's edge cuts could move its PSF flux "
            "by a sigma)"
            if diff.mask[ny // 2, nx // 2] & int(MaskPlane.EDGE)
            else ""
        )
    )


def _forced(
    image: np.ndarray,
    variance: np.ndarray,
    usable: np.ndarray,
    model: PsfModel,
    at: tuple[float, float],
) -> tuple[float, float]:
    """PSF flux and error forced at ``at`` (x, y) on the usable pixels only."""
    return forced_psf_flux(
        np.where(usable, image, 0.0), np.where(usable, variance, 1.0), usable, model, *at
    )


def _run_triplets(survey: str, template_ext: str, least: int) -> None:
    """Run every triplet; print, for each candidate, our and the survey's matched-filter
    S/N at the centre (the survey's PSF filter on both differences) and why a miss was
    missed; require ``least`` detections and (Rubin) our S/N close to the survey's."""
    rows = _triplets(survey)
    strict_hits, hits, corrs = 0, 0, []
    lines, far = [], []
    for row in rows:
        path = data_path(f"{survey}_triplets/{row['file']}")
        if survey == "ztf":
            sign = 1 if row["isdiffpos"] == "t" else -1
        else:
            sign = int(np.sign(float(row["psfFlux"])))
        sci = read_exposure(f"{path}[SCI]")
        tmpl = read_exposure(f"{path}[{template_ext}]")
        result = run_subtraction(sci, tmpl, SubtractionConfig())
        strict, hit = _centre_detection(result, sign)
        theirs, their_var, their_psf = _survey_difference(survey, str(path), row, sign)
        ours = result.difference.image.astype(np.float64)
        corr = _correlation(ours, theirs, result.difference.good_pixels())
        ours_snr = _matched_snr(
            ours, result.difference.variance.astype(np.float64), their_psf, sign
        )
        theirs_snr = _matched_snr(theirs, their_var, their_psf, sign)
        # Two differences of the same science image: their S/N differ by the template
        # side's noise and the subtraction's quality, not by the science noise; our
        # S/N may fall below theirs by a 40 % loss plus 2 sigma before it is an error
        # (the Rubin HSC cutouts gave 0.4-2 against 5-6 while a background fitted over
        # the transient's own pixels ate its flux). Only Rubin gives its difference's
        # variance: ZTF's sky-only noise leaves out the sources' own, so its S/N of
        # bright transients is printed, not compared.
        if survey == "rubin" and abs(ours_snr) < 0.6 * abs(theirs_snr) - 2.0:
            far.append(row["file"])
        strict_hits += strict
        hits += hit
        corrs.append(corr)
        why = (
            "" if hit else _why_missed(result, ours_snr, theirs_snr, (theirs, their_var, their_psf))
        )
        lines.append(
            f"  {row['file']}: sign {sign:+d}, detected {hit} (as the source's sign "
            f"{strict}), S/N ours {ours_snr:+.1f} / survey's {theirs_snr:+.1f}, score "
            f"{_centre_extreme(result.score.image, sign) if result.score else float('nan'):+.1f}"
            f", correlation {corr:.2f}{why}"
        )
    print(
        f"\n{survey}: candidate detected with the survey's sign in {hits} of {len(rows)} "
        f"({strict_hits} as the source's sign); median correlation with the survey's DIFF "
        f"{np.nanmedian(corrs):.2f}\n" + "\n".join(lines)
    )
    assert not far, f"our S/N far below the survey's: {far}"
    assert hits >= least


def test_ztf_alert_candidates_are_detected_with_their_sign() -> None:
    # 23 of 24 measured since footprints are split at their significant peaks (two
    # transients had merged with neighbours' residuals and were measured at those); the
    # one miss has S/N 3.8 on our difference and 4.5 on ZTF's through the same filter.
    # The pipeline is deterministic; one may move with the platform's floating point
    # near the threshold.
    _run_triplets("ztf", "REF", 22)


def test_rubin_alert_candidates_are_detected_with_their_sign() -> None:
    # 5 of the 24 Rubin candidates have S/N > 10 in Rubin's own difference, 19 have S/N
    # 5-7, of which a new 5-sigma search finds about half (alerts are selected above 5
    # sigma, so their true S/N is lower): 5 + 9.5 expected, binomial sigma 2.2; at least
    # 10 is 2 sigma below. Measured: 14 (one may move near the threshold). Each miss
    # prints its cause: on the LSSTCam cutouts (30-36 px, science FWHM 9-11 px, no
    # star) the kernel is derived from the two PSFs, 31-43 px, and our matched-filter
    # S/N is 1.9-4.9 where Rubin's is 4.4-8.3 (benchmarks/SCIENCE.md). Five candidates
    # are below S/N 5 in Rubin's own difference through the same filter: at most 19 of
    # 24 are in reach.
    # A differential background within 3 of its standard errors of none is no longer
    # subtracted (sky.BACKGROUND_SIGNIFICANCE): 13 -> 14.
    _run_triplets("rubin", "TMPL", 11)


def test_a_richer_basis_does_not_reach_a_kernel_fitted_to_psfs_alone() -> None:
    # An LSSTCam cutout without a star: the kernel is fitted to the file's two PSF images.
    # Before the cap at 4, 2, 2 (kernel_basis.psf_only_config), the 6, 4, 2 basis
    # chased the PSF models' structure there (L2 norm 0.20 -> 0.32, half its weight
    # negative) and the survey's candidate kept 0.14 of its PSF flux against 0.51.
    path = data_path("rubin_triplets/rubin_169298432772538505.fits")
    sci, tmpl = read_exposure(f"{path}[SCI]"), read_exposure(f"{path}[TMPL]")
    default = run_subtraction(sci, tmpl, SubtractionConfig())
    lsst = run_subtraction(sci, tmpl, from_dict({"kernel": {"degrees": [4, 2, 2]}}))
    assert default.config.kernel.degrees == (6, 4, 2)
    assert any("derived from the two PSF images" in w for w in default.warnings)
    assert default.kernel.solution.degrees == (4, 2, 2)
    assert np.array_equal(default.difference.image, lsst.difference.image, equal_nan=True)
