"""DIA source measurement: ids, unbiased PSF fluxes, flags, dipoles, sky sources, units."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import astropy.units as u
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage

from diffviewer.config import DetectionConfig, MeasurementConfig, ScoreConfig
from diffviewer.engine import measure, zogy
from diffviewer.engine.columns import aperture_column, image_unit
from diffviewer.engine.detect import detect_sources
from diffviewer.engine.ids import make_id_factory
from diffviewer.engine.measure import measure_sources
from diffviewer.engine.photometry import PsfModel, forced_psf_flux
from diffviewer.engine.progress import null_reporter
from diffviewer.errors import ConfigError, InputError
from diffviewer.exposure import Exposure, MaskPlane
from diffviewer.stats import FWHM_PER_SIGMA
from diffviewer.synthetic import make_pair, render_gaussians, tan_wcs
from tests.engine.helpers import gaussian_psf


def run(
    diff: Exposure,
    sci: Exposure,
    tmpl: Exposure,
    psf: np.ndarray,
    *,
    tmpl_psf: np.ndarray | None = None,
    detect_on: str = "score",
    sky_sources: int = 0,
    exposure_id: int = 0,
    science_background=None,
):
    """Score (ZOGY, flux ratio 1), detect and measure; returns (table, detections)."""
    score = zogy.zogy_score(
        sci, tmpl, psf, psf if tmpl_psf is None else tmpl_psf, 1.0, ScoreConfig(), null_reporter()
    )
    det = detect_sources(
        diff,
        score,
        DetectionConfig(detect_on=detect_on, sky_sources=sky_sources),
        null_reporter(),
        psf=psf,
    )
    table = measure_sources(
        diff.replace(mask=det.mask),
        sci,
        tmpl,
        score,
        det,
        psf,
        psf,
        MeasurementConfig(exposure_id=exposure_id),
        null_reporter(),
        science_background,
    )
    return table, det


def found_on_difference(diff: Exposure, sci: Exposure, model: PsfModel):
    """Detect on the PSF-filtered difference (no sky sources) and measure, one PSF."""
    det = detect_sources(
        diff,
        None,
        DetectionConfig(detect_on="difference", sky_sources=0),
        null_reporter(),
        psf=model,
    )
    return measure_sources(
        diff, sci, diff, None, det, model, model, MeasurementConfig(exposure_id=0), null_reporter()
    )


def plain_difference(pair) -> Exposure:
    """Science minus template of a pair with equal PSFs (a valid difference)."""
    return Exposure(
        pair.science.image - pair.template.image,
        pair.science.variance + pair.template.variance,
        pair.science.mask | pair.template.mask,
        wcs=pair.science.wcs,
    )


def match(table, xs: np.ndarray, ys: np.ndarray, radius: float = 2.0):
    """Index of the nearest injected source for each row and whether it is within ``radius``."""
    dist = np.hypot(
        np.asarray(table["x"])[:, None] - xs[None, :], np.asarray(table["y"])[:, None] - ys[None, :]
    )
    j = np.argmin(dist, axis=1)
    return j, dist[np.arange(len(table)), j] < radius


def test_ids_carry_the_exposure_id_and_overflow_is_refused() -> None:
    factory = make_id_factory(1234, 20)
    ids = factory.take(1000)
    assert ids.dtype == np.uint64
    assert len(np.unique(ids)) == 1000
    assert np.all(ids >> np.uint64(44) == 1234)
    assert np.array_equal(ids & np.uint64((1 << 44) - 1), np.arange(1, 1001))
    assert next(factory) == (1234 << 44) | 1001
    # Two exposures never share an id.
    first, second = make_id_factory(1, 32).take(10), make_id_factory(2, 32).take(10)
    assert not set(first.tolist()) & set(second.tolist())
    with pytest.raises(ConfigError, match="does not fit"):
        make_id_factory(2**20, 20)
    # the field's top bit stays 0: every id within a signed 64-bit integer
    assert int(make_id_factory(2**19 - 1, 20).take(1)[0]) < 2**63
    with pytest.raises(ConfigError, match="with the top one 0"):
        make_id_factory(2**19, 20)
    with pytest.raises(ConfigError, match="asks run_subtraction to derive the id from the pair"):
        make_id_factory(-1, 20)  # measurement.exposure_id's -1, unresolved
    tiny = make_id_factory(5, 62)  # 2 bits left: ids 1..3
    tiny.take(3)
    with pytest.raises(InputError, match="do not fit"):
        tiny.take(1)


def test_psf_model_shifts_and_normalises() -> None:
    psf = gaussian_psf(3.0)
    model = PsfModel(psf)
    assert abs(model.fwhm - 3.0) < 0.1
    stamp, x0, y0 = model.stamp(50.0, 40.0)
    # At an integer position the tabulated PSF is the PSF image itself.
    inner = stamp[:25, :25]
    assert (x0, y0) == (38, 28)
    assert np.max(np.abs(inner - psf / psf.sum())) < 1e-9
    shifted, x0, y0 = model.stamp(50.3, 40.6)
    ys, xs = np.mgrid[: shifted.shape[0], : shifted.shape[1]]
    assert np.isclose(shifted.sum(), 1.0)
    # Its centroid moved by the sub-pixel shift (bilinear table at 1/8 px: < 0.01 px).
    assert abs((shifted * xs).sum() + x0 - 50.3) < 0.01
    assert abs((shifted * ys).sum() + y0 - 40.6) < 0.01


def test_psf_model_on_any_box_and_its_derivatives() -> None:
    model = PsfModel(gaussian_psf(3.0))  # 25 x 25
    x, y = 50.3, 40.6
    stamp, x0, y0 = model.shifted(x, y)
    # A box larger than the stamp holds the same PSF, and 0 beyond it; a box inside
    # the stamp the same values (the dipole fit evaluates footprint boxes).
    big = model.on_box(x, y, (x0 - 5, y0 - 7, 40, 45), derivatives=True)
    inner = big[0, 7 : 7 + stamp.shape[0], 5 : 5 + stamp.shape[1]]
    assert np.allclose(inner, stamp, rtol=0.0, atol=1e-15)
    assert np.abs(big[0]).sum() == pytest.approx(np.abs(stamp).sum(), rel=1e-12)
    part = model.on_box(x, y, (x0 + 9, y0 + 8, 6, 4))[0]
    assert np.allclose(part, stamp[8:12, 9:15], rtol=0.0, atol=1e-15)
    # d/dy and d/dx are over the offset from the centre, so moving the centre by +h moves
    # the PSF on the pixels by -h times them. Central differences of the bilinear table
    # across one table step (1/8 px) agree with the spline's derivative table to 0.3 %
    # of its peak for a 3 px FWHM (1 % allowed); a wrong sign or axis is off by 100 %.
    h = 1.0 / 8.0
    box = (x0 - 5, y0 - 7, 40, 45)
    d_dx = (model.on_box(x - h, y, box)[0] - model.on_box(x + h, y, box)[0]) / (2 * h)
    d_dy = (model.on_box(x, y - h, box)[0] - model.on_box(x, y + h, box)[0]) / (2 * h)
    for numeric, table in ((d_dy, big[1]), (d_dx, big[2])):
        assert np.max(np.abs(numeric - table)) < 0.01 * np.max(np.abs(table))
    # Beyond the table the PSF and its derivatives are 0.
    assert not model.on_box(x, y, (x0 + 100, y0, 5, 5), derivatives=True).any()


@pytest.fixture(scope="module")
def injected():
    """256 point transients of S/N 10-60 on a pair with equal PSFs (science - template is valid)."""
    rng = np.random.default_rng(21)
    grid = np.stack(np.meshgrid(np.arange(16) * 38.0 + 35, np.arange(16) * 38.0 + 35), -1)
    xy = grid.reshape(-1, 2) + rng.uniform(-0.5, 0.5, (256, 2))
    flux = rng.uniform(3000.0, 18000.0, 256)
    transients = [(x, y, f) for (x, y), f in zip(xy, flux, strict=True)]
    pair = make_pair(
        (640, 640), 60, seed=13, tmpl_fwhm=4.0, tmpl_noise_scale=0.3, transients=transients
    )
    table, det = run(
        plain_difference(pair),
        pair.science,
        pair.template,
        gaussian_psf(4.0),
        sky_sources=200,
        exposure_id=77,
    )
    return pair, table, det


def test_psf_fluxes_are_unbiased_with_honest_errors(injected) -> None:
    pair, table, _ = injected
    src = table[~table["sky_source"]]
    j, ok = match(src, pair.transient_x, pair.transient_y)
    assert ok.sum() == 256, "every injected source recovered, each once"
    assert len(np.unique(j[ok])) == 256
    truth = pair.transient_flux[j[ok]]
    pull = (np.asarray(src["psf_flux"])[ok] - truth) / np.asarray(src["psf_flux_err"])[ok]
    # 256 pulls: the median is known to +-0.08 and the scatter to +-0.05 (1 sigma); the
    # fit at the measured centroid boosts faint fluxes by ~1/SNR < 0.1. The errors come
    # from the variance plane alone: nothing in measurement rescales them.
    assert abs(float(np.median(pull))) < 0.2, np.median(pull)
    assert 0.8 <= float(np.std(pull)) <= 1.2, np.std(pull)
    assert np.all(src["sign"][ok] == 1)
    assert not np.any(src["is_dipole"])
    snr = np.asarray(src["snr"])[ok]
    assert snr.min() > 8 and snr.max() < 80
    # Centroids: sigma_x ~ FWHM / (2.35 SNR) * sqrt(2) <= 0.2 px for these sources.
    dx = np.asarray(src["x"])[ok] - pair.transient_x[j[ok]]
    dy = np.asarray(src["y"])[ok] - pair.transient_y[j[ok]]
    assert np.std(dx) < 0.2 and np.std(dy) < 0.2
    assert abs(np.median(dx)) < 0.05 and abs(np.median(dy)) < 0.05
    # Second moments of a Gaussian PSF of FWHM 4: sigma^2 = 2.885 px^2 (weight removed).
    sig2 = (4.0 / FWHM_PER_SIGMA) ** 2
    assert abs(float(np.nanmedian(src["xx"])) / sig2 - 1) < 0.1
    assert abs(float(np.nanmedian(src["yy"])) / sig2 - 1) < 0.1
    assert abs(float(np.nanmedian(src["xy"]))) < 0.1 * sig2
    # The 9 px aperture holds 99.99 % of the PSF: its median ratio to the truth is ~1.
    assert abs(float(np.median(np.asarray(src["ap_flux_9"])[ok] / truth)) - 1) < 0.03
    # The forced science flux sees the transient (plus a constant sky fitted with it).
    sci_ratio = np.asarray(src["sci_psf_flux"])[ok] / truth
    assert abs(float(np.median(sci_ratio)) - 1) < 0.05


def test_science_flux_beside_a_bright_star_is_the_light_its_psf_sees() -> None:
    # Transients 6 px from bright stars on a science image with a sky of 1000 counts.
    # The science flux is the PSF fit at the transient above the science's background:
    # the transient plus the share of the star's light the PSF sees there (both
    # computed from the rendered light, no noise). A constant sky fitted over the PSF's
    # 25 px stamp took the star's light as sky and gave 0.23-0.26 of that, less than
    # the transient alone (on GOTO 208 of 521 detections below -5 sigma).
    rng = np.random.default_rng(3)
    fwhm, side, sky = 4.0, 240, 1000.0
    psf = gaussian_psf(fwhm)
    sigma = fwhm / FWHM_PER_SIGMA
    stars = np.array([(x, y) for x in (40.0, 120.0, 200.0) for y in (40.0, 120.0, 200.0)])
    stars += rng.uniform(-0.5, 0.5, stars.shape)
    angle = rng.uniform(0.0, 2 * np.pi, len(stars))
    trans = stars + 6.0 * np.c_[np.cos(angle), np.sin(angle)]
    star_flux, trans_flux = 2e5, 5000.0

    def light(xy: np.ndarray, flux: float) -> np.ndarray:
        n = len(xy)
        return render_gaussians(
            (side, side), xy[:, 0], xy[:, 1], np.full(n, flux), np.full(n, sigma), 20
        )

    stars_light, trans_light = light(stars, star_flux), light(trans, trans_flux)
    variance = sky + stars_light + trans_light
    sci = Exposure(
        (sky + stars_light + trans_light + rng.normal(0, np.sqrt(variance))).astype(np.float32),
        variance.astype(np.float32),
        np.zeros((side, side), np.int32),
    )
    tvar = sky + stars_light
    tmpl = Exposure(
        (sky + stars_light + rng.normal(0, np.sqrt(tvar))).astype(np.float32),
        tvar.astype(np.float32),
        np.zeros((side, side), np.int32),
    )
    diff = Exposure(sci.image - tmpl.image, sci.variance + tmpl.variance, sci.mask)
    table, _ = run(
        diff,
        sci,
        tmpl,
        psf,
        detect_on="difference",
        science_background=lambda box: np.full(sci.image[box].shape, sky, np.float32),
    )
    j, ok = match(table, trans[:, 0], trans[:, 1])
    assert len(np.unique(j[ok])) == len(trans), "every transient found"
    rows = np.nonzero(ok)[0]
    model = PsfModel(psf)
    every = np.ones((side, side), dtype=bool)
    expected = np.array(
        [
            forced_psf_flux(stars_light + trans_light, variance, every, model, x, y)[0]
            for x, y in zip(table["x"][rows], table["y"][rows], strict=True)
        ]
    )
    seen = np.asarray(table["sci_psf_flux"])[rows]
    err = np.asarray(table["sci_psf_flux_err"])[rows]
    # The star's share at 6 px is 0.048 of its flux for this PSF: 9,700 counts beside
    # the transient's 5,000, measured to +-221 counts (1 sigma).
    assert np.all(expected > 2 * trans_flux)
    assert np.all(np.abs(seen - expected) < 4 * err), (seen, expected, err)
    # What the catalog says of the template is then consistent: never less than none.
    assert np.all(seen - np.asarray(table["psf_flux"])[rows] > 0)


@given(
    ny=st.integers(1, 40),
    nx=st.integers(1, 40),
    x=st.floats(-15.0, 55.0),
    y=st.floats(-15.0, 55.0),
    bad=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_a_forced_flux_above_a_background_is_the_flux_without_it(
    ny: int, nx: int, x: float, y: float, bad: float, seed: int
) -> None:
    # Any shape, any position (the PSF partly or wholly off the image), NaN and unusable
    # pixels in any share: the flux of an image with a sloped sky, that sky subtracted,
    # is the flux of the image without it, with the same error; NaN together where no
    # usable pixel is under the PSF; never a warning.
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 10.0, (ny, nx))
    variance = rng.uniform(50.0, 150.0, (ny, nx))
    usable = rng.random((ny, nx)) >= bad
    image[~usable & (rng.random((ny, nx)) < 0.5)] = np.nan
    rows, cols = np.mgrid[:ny, :nx]
    sky = 1000.0 + 3.0 * rows - 2.0 * cols

    def background(box: tuple[slice, slice]) -> np.ndarray:
        return sky[box]

    model = PsfModel(gaussian_psf(4.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = forced_psf_flux(image, variance, usable, model, x, y)
        above = forced_psf_flux(image + sky, variance, usable, model, x, y, background)
    np.testing.assert_allclose(above, plain, rtol=1e-9, atol=1e-9)


def test_fluxes_are_in_the_images_unit() -> None:
    # A Rubin cutout's pixels are nJy (BUNIT): its catalog said ct (image units) for them.
    pair = make_pair((160, 160), 20, seed=2, tmpl_fwhm=4.0, transients=[(80.0, 80.0, 2e4)])
    diff = plain_difference(pair)
    header = diff.header.copy()
    header["BUNIT"] = "nJy"
    table, _ = run(diff.replace(header=header), pair.science, pair.template, gaussian_psf(4.0))
    assert len(table) >= 1
    for name in ("psf_flux", "psf_flux_err", "sci_psf_flux", "pos_flux", "ap_flux_3_err"):
        assert table[name].unit == u.nJy, name
    assert table["snr"].unit == u.dimensionless_unscaled and table["x"].unit == u.pix
    assert [str(image_unit(b)) for b in (None, "ADU", "electron/s", "not a unit")] == [
        "ct",
        "adu",
        "electron / s",
        "ct",
    ]


def test_catalog_columns_units_ids_and_sky_sources(injected) -> None:
    pair, table, det = injected
    for name, unit in (
        ("x", u.pix),
        ("psf_flux", u.ct),
        ("ra", u.deg),
        ("xx", u.pix**2),
        ("dipole_orientation", u.deg),
        ("ap_flux_3", u.ct),
    ):
        assert table[name].unit == unit, name
    for name in table.colnames:
        assert table[name].unit is not None, f"{name} has no unit"
        assert len(table[name].description or "") > 10, f"{name} is not described"
    ids = np.asarray(table["id"])
    assert ids.dtype == np.uint64 and len(np.unique(ids)) == len(table)
    low = 64 - MeasurementConfig().exposure_bits  # the running number's bits
    assert np.all(ids >> np.uint64(low) == 77)
    # RA/Dec from the science WCS.
    ra, dec = pair.science.wcs.pixel_to_world_values(table["x"][0], table["y"][0])
    assert np.isclose(table["ra"][0], ra) and np.isclose(table["dec"][0], dec)
    sky = table[table["sky_source"]]
    assert len(sky) == 200 == len(det.sky_x)
    assert np.all(sky["sign"] == 0) and np.all(sky["label"] == 0)
    pulls = np.asarray(sky["psf_flux"]) / np.asarray(sky["psf_flux_err"])
    # Blank sky: forced fluxes are noise, pulls of zero mean (200 samples: +-0.07) and,
    # with the variance plane describing this white noise, unit scatter (+-0.05).
    assert abs(np.mean(pulls)) < 0.25
    assert np.std(pulls) == pytest.approx(1.0, abs=0.1)
    assert table.meta["diff_psf_fwhm"] == pytest.approx(4.0, rel=0.05)
    # The catalog's own summary of them (metadata.json, the GUI's A/B figures): the
    # unflagged ones, their mean pull within 3 of its errors of 0.
    check = measure.sky_source_check(table)
    kept = ~np.asarray(sky["flagged"], dtype=bool)
    assert check.n == int(kept.sum()) >= 190
    assert check.pull_std == pytest.approx(np.std(pulls[kept], ddof=1))
    assert abs(check.mean_pull) < 3 * check.mean_pull_error
    assert check.mean_pull_error == pytest.approx(check.pull_std / np.sqrt(check.n))
    # The scatter comes with how well its n pulls know it (normal: 1 / sqrt(2 (n - 1)),
    # 0.05 here), and is 1 within 3 of that.
    assert check.pull_std_error == pytest.approx(check.pull_std / np.sqrt(2 * (check.n - 1)))
    assert abs(check.pull_std - 1.0) < 3 * check.pull_std_error
    assert check.as_dict()["pull_std_error"] == pytest.approx(check.pull_std_error)
    # Each aperture's errors checked the same way (white noise: every scale's noise is the
    # variance plane's, unit scatter +-0.05); on correlated noise the renormalisation at PSF
    # scale leaves other apertures off, and this says by how much.
    radii = MeasurementConfig().aperture_radii
    assert sorted(check.aperture_pull_std) == sorted(aperture_column(r) for r in radii)
    for name, spread in check.aperture_pull_std.items():
        assert spread == pytest.approx(1.0, abs=0.15), name
    assert check.as_dict()["aperture_pull_std"] == check.aperture_pull_std
    # A catalog without two blank positions has no figures, not a made-up one.
    lone = measure.sky_source_check(table[: int(np.sum(~table["sky_source"])) + 1])
    assert lone.n <= 1 and np.isnan(lone.pull_std) and lone.as_dict()["pull_std"] is None
    assert lone.as_dict()["pull_std_error"] is None
    # A catalog saved before psf_chi2 was a column (read back by the window) still checks.
    older = measure.sky_source_check(table[[c for c in table.colnames if c != "psf_chi2"]])
    assert older.n == check.n and np.isnan(older.psf_chi2_median)


def test_no_wcs_gives_nan_coordinates() -> None:
    pair = make_pair((128, 128), 5, seed=3, tmpl_fwhm=4.0, transients=[(64.0, 64.0, 2e4)])
    diff = plain_difference(pair).replace(wcs=None)
    table, _ = run(diff, pair.science, pair.template, gaussian_psf(4.0))
    assert len(table) == 1 and np.all(np.isnan(table["ra"])) and np.all(np.isnan(table["dec"]))


def test_flags_from_mask_planes() -> None:
    sources = [
        (40.0, 40.0),
        (100.0, 40.0),
        (160.0, 40.0),
        (40.0, 120.0),
        (100.0, 120.0),
        (160.0, 120.0),
        (3.0, 180.0),
    ]
    pair = make_pair(
        (200, 200),
        1,
        seed=4,
        tmpl_fwhm=4.0,
        flux_range=(1.0, 1.1),
        transients=[(x, y, 2e4) for x, y in sources],
    )
    sci_mask = pair.science.mask.copy()
    tmpl_mask = pair.template.mask.copy()
    sci_mask[40, 100] |= int(MaskPlane.SAT)  # centre of source 1: saturated
    tmpl_mask[42, 163] |= int(MaskPlane.SAT)  # in footprint 2, off centre: template
    sci_mask[120, 40] |= int(MaskPlane.INTRP)  # centre of source 3: interpolated
    sci_mask[124, 100] |= int(MaskPlane.SUSPECT)  # footprint of 4, off centre
    sci_mask[120, 160] |= int(MaskPlane.CR)  # centre of 5: cosmic ray
    sci = pair.science.replace(mask=sci_mask)
    tmpl = pair.template.replace(mask=tmpl_mask)
    diff = Exposure(sci.image - tmpl.image, sci.variance + tmpl.variance, sci_mask | tmpl_mask)
    table, _ = run(diff, sci, tmpl, gaussian_psf(4.0), detect_on="difference")
    j, ok = match(table, np.array([s[0] for s in sources]), np.array([s[1] for s in sources]))
    assert ok.all() and sorted(j) == list(range(len(sources)))
    row = {int(k): table[i] for i, k in enumerate(j)}
    assert not row[0]["flagged"]
    assert not any(row[0][c] for c in table.colnames if c.startswith("flag_"))
    assert row[1]["flag_saturated_center"] and row[1]["flag_saturated"] and row[1]["flagged"]
    assert row[2]["flag_saturated"] and not row[2]["flag_saturated_center"]
    assert row[3]["flag_interpolated_center"] and row[3]["flagged"]
    assert row[4]["flag_suspect"] and not row[4]["flag_suspect_center"] and not row[4]["flagged"]
    assert row[5]["flag_cr_center"] and row[5]["flagged"]
    assert row[6]["flag_edge"] and row[6]["flagged"], "footprint touching the image edge"
    # The apertures say where they lost area: the cosmic ray at 5's centre and the
    # template's saturated pixel 2.9 px (its nearest corner) from 2's are in every one;
    # a suspect pixel is measured (4), and 0 is clean; 6's apertures wider than its
    # distance from the image's border (3 px, the edge at -0.5) cross it.
    radii = (3, 6, 9)
    for k, lost in ((5, True), (2, True), (4, False), (0, False)):
        assert [bool(row[k][f"ap_flux_{r}_flag"]) for r in radii] == [lost] * 3, k
    border = min(row[6]["x"], row[6]["y"]) + 0.5
    assert [bool(row[6][f"ap_flux_{r}_flag"]) for r in radii] == [r > border for r in radii]


def shifted_star_pair(shifts: list[tuple[float, float, float, float]], seed: int = 2):
    """Science and template of stars at (x, y) moved by (dx, dy) in the science; equal PSFs."""
    rng = np.random.default_rng(seed)
    shape, sky = (160, 160), 1000.0
    s = np.array(shifts, dtype=float)
    sig = np.full(len(s), 4.0 / FWHM_PER_SIGMA)
    flux = np.full(len(s), 1e5)
    sci_m = render_gaussians(shape, s[:, 0] + s[:, 2], s[:, 1] + s[:, 3], flux, sig, 15)
    tmpl_m = render_gaussians(shape, s[:, 0], s[:, 1], flux, sig, 15)
    v_s, v_t = sky + sci_m, sky + tmpl_m
    zero = np.zeros(shape, dtype=np.int32)
    sci = Exposure(sci_m + rng.normal(size=shape) * np.sqrt(v_s), v_s, zero, wcs=tan_wcs(shape))
    tmpl = Exposure(tmpl_m + rng.normal(size=shape) * np.sqrt(v_t), v_t, zero)
    diff = Exposure(sci.image - tmpl.image, v_s + v_t, zero, wcs=sci.wcs)
    return sci, tmpl, diff


def test_a_star_shifted_by_half_a_pixel_is_a_dipole() -> None:
    sci, tmpl, diff = shifted_star_pair([(50.0, 50.0, 0.5, 0.0), (110.0, 100.0, 0.0, 0.5)])
    table, _ = run(diff, sci, tmpl, gaussian_psf(4.0))
    assert len(table) == 2
    table = table[np.argsort(table["x"])]
    assert np.all(table["is_dipole"])
    for row, orientation in zip(table, (0.0, 90.0), strict=True):
        # The two-lobe fit, tied to the science image, recovers both lobes of 1e5 (each
        # known to ~1 %) 0.5 px apart; the direction points from the template's star
        # to the science's.
        assert row["pos_flux"] == pytest.approx(1e5, rel=0.05)
        assert row["neg_flux"] == pytest.approx(1e5, rel=0.05)
        assert row["dipole_separation"] == pytest.approx(0.5, abs=0.1)
        assert abs(row["dipole_orientation"] - orientation) < 10.0
        assert np.isfinite(row["pos_flux_err"]) and row["pos_flux_err"] > 0
    # The sign is the thresholded image's strongest extreme's, as for every source.
    assert np.array_equal(table["sign"], np.sign(table["peak_value"]))
    # The centroid is the midpoint of the lobes, the PSF flux there the net flux (~0:
    # equal lobes; a PSF-weighted sum of a 0.5 px dipole, below 5 % of a lobe's).
    assert table["x"][0] == pytest.approx(50.25, abs=0.1)
    assert table["y"][1] == pytest.approx(100.25, abs=0.1)
    assert np.all(np.abs(table["psf_flux"]) < 0.05 * 1e5)


def test_transient_on_a_galaxy_is_not_a_dipole() -> None:
    # A galaxy (Gaussian core of 4 px) in both images, PSFs 4 px (science) and 2.5 px
    # (template); the template is matched with the known Gaussian kernel and is 3 %
    # brighter, leaving a negative ring of galaxy light beside a positive transient.
    rng = np.random.default_rng(3)
    shape, sky = (128, 128), 1000.0
    s_sci, s_tmpl, s_gal = 4.0 / FWHM_PER_SIGMA, 2.5 / FWHM_PER_SIGMA, 4.0
    gal_sci = render_gaussians(
        shape,
        np.array([64.0]),
        np.array([64.0]),
        np.array([1e6]),
        np.array([np.hypot(s_gal, s_sci)]),
        30,
    )
    gal_tmpl = render_gaussians(
        shape,
        np.array([64.0]),
        np.array([64.0]),
        np.array([1.03e6]),
        np.array([np.hypot(s_gal, s_tmpl)]),
        30,
    )
    transient = render_gaussians(
        shape, np.array([69.3]), np.array([61.6]), np.array([2e4]), np.array([s_sci]), 15
    )
    v_s, v_t = sky + gal_sci + transient, 0.25 * (sky + gal_tmpl)
    zero = np.zeros(shape, dtype=np.int32)
    sci = Exposure(gal_sci + transient + rng.normal(size=shape) * np.sqrt(v_s), v_s, zero)
    tmpl = Exposure(gal_tmpl + rng.normal(size=shape) * np.sqrt(v_t), v_t, zero)
    s_k = np.sqrt(s_sci**2 - s_tmpl**2)
    matched = ndimage.gaussian_filter(tmpl.image.astype(float), s_k)
    k_sum2 = 1.0 / (4 * np.pi * s_k**2)  # sum of the squared normalised Gaussian kernel
    diff = Exposure(sci.image - matched, v_s + v_t * k_sum2, zero)
    table, _ = run(diff, sci, tmpl, gaussian_psf(4.0), tmpl_psf=gaussian_psf(2.5))
    near = table[np.hypot(table["x"] - 69.3, table["y"] - 61.6) < 2.0]
    assert len(near) == 1
    assert not near["is_dipole"][0]
    assert near["sign"][0] == 1 and not near["has_negative"][0]
    assert not np.any(table["is_dipole"])
    # The transient and the negative residual touch (one footprint on the score); as it
    # is no dipole, the footprint is split back into a positive and a negative source.
    assert len(table) == 2 and table["label"][0] == table["label"][1]
    assert sorted(table["sign"]) == [-1, 1]
    neg = table[table["sign"] < 0][0]
    assert np.hypot(neg["x"] - 64.0, neg["y"] - 64.0) < 3.0, "the residual sits on the galaxy"
    # The rejected two-lobe fit is not reported on the split pieces.
    assert np.all(np.isnan(table["pos_flux"])) and np.all(np.isnan(table["neg_flux"]))


def test_empty_detections_give_an_empty_catalog_with_all_columns() -> None:
    pair = make_pair((96, 96), 3, seed=1, tmpl_fwhm=4.0)
    table, det = run(plain_difference(pair), pair.science, pair.template, gaussian_psf(4.0))
    assert len(det.table) == 0 and len(table) == 0
    assert {"id", "x", "y", "psf_flux", "is_dipole", "flagged", "ap_flux_3"} <= set(table.colnames)


def test_weighted_moments_recover_an_elliptical_gaussian_exactly() -> None:
    # A Gaussian seen through a Gaussian weight: removing the weight is exact, so the
    # covariance comes back to the sampling's accuracy (sigma 2-3 px on a 61 px grid).
    cov = np.array([[6.0, 1.5], [1.5, 3.5]])
    yy, xx = np.mgrid[:61, :61].astype(float)
    d = np.stack([xx - 30.2, yy - 29.7])
    inv = np.linalg.inv(cov)
    img = np.exp(-0.5 * np.einsum("i...,ij,j...->...", d, inv, d))
    good = np.ones(img.shape, dtype=bool)
    xx_m, yy_m, xy_m = measure._weighted_moments(img, good, 30.2, 29.7, 4.0)
    np.testing.assert_allclose([xx_m, yy_m, xy_m], [6.0, 3.5, 1.5], rtol=1e-6)
    # A negative image has no moments.
    assert np.isnan(measure._weighted_moments(-img, good, 30.2, 29.7, 4.0)).all()


def test_centre_bits_read_only_pixels_on_the_image() -> None:
    planes = np.zeros((10, 12), dtype=np.int32)
    planes[0, 0] = int(MaskPlane.CR)
    planes[9, 11] = int(MaskPlane.BAD)
    planes[5, 7] = int(MaskPlane.SUSPECT)  # (x, y) = (7, 5)
    xs = np.array([0.4, 11.2, 5.0, 7.6, 30.0])
    ys = np.array([-0.6, 9.4, 5.0, 6.4, 4.0])
    bits = measure._centre_bits(planes, xs, ys)
    # Corners: the on-image part of the 3 x 3 box; (x, y) = (5, 5) misses (7, 5); (8, 6)'s box
    # holds (7, 5); off the image: NO_DATA.
    assert list(bits) == [
        int(MaskPlane.CR),
        int(MaskPlane.BAD),
        0,
        int(MaskPlane.SUSPECT),
        int(MaskPlane.NO_DATA),
    ]


def test_the_catalog_recovers_what_a_plain_matched_filter_recovers() -> None:
    # 800 point transients of PSF S/N 5-12 at random positions on 1024^2 (three times the
    # science benchmark's density: 227 lie within 12 px of another). A plain matched
    # filter (the difference filtered by its PSF, local maxima of 5 x 5 px above 5 times
    # its robust sigma) is the reference; the catalog, at the same 5 sigma, must find
    # what it finds, within the binomial error of that count (7.8). It lost 26: 10 where
    # neighbours a few px apart merged into one row (their saddle 1-2 sigma below the
    # fainter peak), 15 peaks of 5.0-5.3 sigma with fewer than 3 px above 5; now 1.
    rng = np.random.default_rng(12)
    fwhm, n, side = 3.5, 800, 1024
    psf = gaussian_psf(fwhm)
    sigma = np.sqrt(1000.0 * (1.0 + 0.5**2))  # sky noise of the science and the template
    snr = rng.uniform(5.0, 12.0, n)
    xs, ys = rng.uniform(20, side - 20, n), rng.uniform(20, side - 20, n)
    flux = snr * sigma / np.sqrt(np.sum(psf**2))
    pair = make_pair(
        shape=(side, side),
        n_stars=0,
        seed=5,
        sci_fwhm=fwhm,
        tmpl_fwhm=fwhm,
        transients=list(zip(xs.tolist(), ys.tolist(), flux.tolist(), strict=True)),
    )
    diff = plain_difference(pair)
    filtered = ndimage.correlate(diff.image.astype(np.float64), psf, mode="constant")
    mad = np.median(np.abs(filtered - np.median(filtered)))
    peaks = (filtered == ndimage.maximum_filter(filtered, size=5)) & (filtered > 5.0 * 1.4826 * mad)
    py, px = np.nonzero(peaks)
    plain = np.array([np.any(np.hypot(px - x, py - y) <= 2.0) for x, y in zip(xs, ys, strict=True)])
    table, _ = run(diff, pair.science, pair.template, psf, detect_on="difference")
    pos = table[table["sign"] > 0]
    ours = np.array(
        [np.any(np.hypot(pos["x"] - x, pos["y"] - y) <= 2.0) for x, y in zip(xs, ys, strict=True)]
    )
    p = plain.mean()
    lost = int(np.sum(plain & ~ours))
    assert lost <= np.sqrt(n * p * (1 - p)), (lost, int(plain.sum()), int(ours.sum()))
    _, near = match(pos, xs, ys)
    assert np.sum(~near) <= 1, "no more than chance false detections"


def test_score_at_is_nan_where_the_score_is_not_defined() -> None:
    image = np.arange(12, dtype=np.float32).reshape(3, 4)
    mask = np.zeros((3, 4), dtype=np.int16)
    mask[1, 2] = int(MaskPlane.SAT_TEMPLATE)
    mask[2, 3] = int(MaskPlane.DETECTED)  # not an unusable plane: the score stands
    score = SimpleNamespace(image=image, mask=mask)
    values = measure.score_at(score, np.array([0, 1, 2]), np.array([1, 2, 3]))
    np.testing.assert_array_equal(values, [1.0, np.nan, 11.0])
    assert np.isnan(measure.score_at(score, 1, 2))


def test_psf_chi2_tells_a_point_source_from_a_residual_of_another_shape() -> None:
    # On white noise the reduced chi^2 of a point source's PSF fit is 1 within its
    # spread over ~150 pixels (sqrt(2 / 150) = 0.12; 0.6-1.4 is five of it), as is the
    # sky sources' median; a core in a negative ring (the demo's transient, which its
    # apertures read 35 % below its PSF flux) and a source three times the PSF's width
    # read far above it at the same S/N (the 2026-12-07 catalog audit: no column said so).
    rng = np.random.default_rng(11)
    shape, sigma, noise = (160, 240), 2.0, 2.0
    model = PsfModel(gaussian_psf(sigma * FWHM_PER_SIGMA))
    xs, ys = np.array([40.0, 120.3, 200.6, 120.3]), np.array([80.0, 80.4, 79.7, 80.4])
    image = render_gaussians(
        shape,
        xs,
        ys,
        np.array([4000.0, 8000.0, 6000.0, -4000.0]),
        np.array([2.0, 2.0, 6.0, 4.0]),
        30,
    )
    image = (image + rng.normal(0.0, noise, shape)).astype(np.float32)
    diff = Exposure(image, np.full(shape, noise**2, np.float32), np.zeros(shape, np.int16))
    det = detect_sources(
        diff,
        None,
        DetectionConfig(detect_on="difference", sky_sources=40),
        null_reporter(),
        psf=model,
    )
    table = measure_sources(
        diff, diff, diff, None, det, model, model, MeasurementConfig(exposure_id=0), null_reporter()
    )
    j, ok = match(table, xs[:3], ys[:3], radius=3.0)
    real = ok & ~table["sky_source"]
    chi2 = {
        int(k): float(table["psf_chi2"][i])
        for i, k in zip(np.flatnonzero(real), j[real], strict=True)
    }
    assert 0.6 < chi2[0] < 1.4
    assert chi2[1] > 5.0 and chi2[2] > 5.0
    check = measure.sky_source_check(table)
    assert 0.8 < check.psf_chi2_median < 1.2


@pytest.mark.parametrize("plane", ["BAD", "CR", "BAD column"])
@pytest.mark.parametrize("centre", [(48.0, 48.0), (48.2, 47.6), (48.45, 47.7)])
def test_a_source_whose_centre_is_unusable_is_placed_and_measured_by_its_psf(
    plane: str, centre: tuple[float, float]
) -> None:
    # The detection image is 0 on unusable pixels, so its extreme beside them is no
    # centre: a BAD pixel at a source's centre once put it 1.36 px off, then (its axis
    # left unrefined) on a whole pixel, up to half a pixel off, where the forced PSF
    # flux read 8-15 % low (the catalog audit of 2026-12-07, 5-10 sigma). The position
    # is now the PSF fitted to the usable pixels: at S/N ~200 its error is ~0.02 px
    # (sigma sqrt(2) / S/N), so 0.1 px is five of them, and the flux is within 3 of its
    # errors of the truth.
    rng = np.random.default_rng(4)
    shape, sigma, noise, flux = (96, 96), 2.0, 2.0, 3000.0
    x, y = centre
    model = PsfModel(gaussian_psf(sigma * FWHM_PER_SIGMA))
    image = render_gaussians(
        shape, np.array([x]), np.array([y]), np.array([flux]), np.array([sigma]), 15
    )
    image = (image + rng.normal(0.0, noise, shape)).astype(np.float32)
    mask = np.zeros(shape, np.int16)
    if plane == "BAD column":
        mask[:, 48] = int(MaskPlane.BAD)
    else:
        mask[48, 48] = int(MaskPlane[plane])
    diff = Exposure(image, np.full(shape, noise**2, np.float32), mask)
    table = found_on_difference(diff, diff, model)
    assert len(table) == 1
    assert abs(table["x"][0] - x) <= 0.1 and abs(table["y"][0] - y) <= 0.1
    assert table["psf_flux"][0] == pytest.approx(flux, abs=3 * table["psf_flux_err"][0])
    assert table["flagged"][0]


@pytest.mark.parametrize(
    ("separation", "pos", "neg"), [(3.0, 6000.0, 4000.0), (4.7, 6000.0, 3000.0)]
)
def test_a_dipoles_psf_flux_is_its_net_flux_seen_by_one_psf_at_the_midpoint(
    separation: float, pos: float, neg: float
) -> None:
    # As the column says: one PSF fitted at the lobes' midpoint sees the net flux times
    # the PSF's overlap with itself shifted by half the separation (Gaussian:
    # exp(-d^2 / 16 sigma^2)); the lobes' fitted fluxes give the net flux itself.
    rng = np.random.default_rng(2)
    shape, sigma, noise = (128, 128), 2.0, 2.0
    model = PsfModel(gaussian_psf(sigma * FWHM_PER_SIGMA))
    xs, ys = np.array([64.0 + separation / 2, 64.0 - separation / 2]), np.array([64.0, 64.0])
    lobes = render_gaussians(shape, xs, ys, np.array([pos, -neg]), np.full(2, sigma), 15)
    source = render_gaussians(shape, xs[:1], ys[:1], np.array([pos]), np.full(1, sigma), 15)
    var = np.full(shape, noise**2, np.float32)
    mask = np.zeros(shape, np.int16)
    diff = Exposure((lobes + rng.normal(0.0, noise, shape)).astype(np.float32), var, mask)
    sci = Exposure((source + rng.normal(0.0, noise, shape)).astype(np.float32), var, mask)
    table = found_on_difference(diff, sci, model)
    assert len(table) == 1 and table["is_dipole"][0]
    row = table[0]
    net = row["pos_flux"] - row["neg_flux"]
    assert net == pytest.approx(
        pos - neg, abs=3 * np.hypot(row["pos_flux_err"], row["neg_flux_err"])
    )
    seen = np.exp(-(separation**2) / (16 * sigma**2))
    assert row["psf_flux"] == pytest.approx(seen * net, abs=3 * row["psf_flux_err"])
    assert row["psf_flux"] < 0.9 * net
