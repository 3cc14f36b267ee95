"""Detection of both polarities, deblending, footprint merging and growing, sky sources,
the guard."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from diffviewer.config import DetectionConfig, ScoreConfig
from diffviewer.engine import zogy
from diffviewer.engine.deblend import (
    _peak_counts,
    labelled_pixels,
    point_response,
    split_footprints,
)
from diffviewer.engine.detect import (
    DEBLEND_PROMINENCE,
    _footprint_table,
    _grow,
    _nth_set,
    _threshold,
    detect_sources,
)
from diffviewer.engine.progress import null_reporter
from diffviewer.exposure import Exposure, MaskPlane
from diffviewer.stats import FWHM_PER_SIGMA
from diffviewer.synthetic import make_pair, render_gaussians
from tests.engine.helpers import gaussian_psf

SIGMA = 10.0
SHAPE = (256, 256)
#: The PSF of :func:`difference_with`'s sources.
PSF = gaussian_psf(3.5)


def difference_with(
    sources: list[tuple[float, float, float]], seed: int = 0, fwhm: float = 3.5
) -> Exposure:
    """White-noise difference (sigma 10) holding point sources of signed flux."""
    rng = np.random.default_rng(seed)
    src = np.array(sources, dtype=float).reshape(-1, 3)
    model = render_gaussians(
        SHAPE, src[:, 0], src[:, 1], src[:, 2], np.full(len(src), fwhm / FWHM_PER_SIGMA), 12
    )
    return Exposure(
        model + rng.normal(size=SHAPE) * SIGMA,
        np.full(SHAPE, SIGMA**2),
        np.zeros(SHAPE, dtype=np.int32),
    )


def test_both_polarities_with_planes_and_no_false_detections() -> None:
    # S/N of PSF photometry for flux 3000 at FWHM 3.5 px: 3000 * 0.107 / 10 ~ 32.
    sources = [
        (60.0, 60.0, 3000.0),
        (190.0, 70.0, -3000.0),
        (120.0, 190.0, 2000.0),
        (200.0, 200.0, -2500.0),
    ]
    diff = difference_with(sources)
    det = detect_sources(
        diff, None, DetectionConfig(detect_on="difference"), null_reporter(), psf=PSF
    )
    assert det.detection_image == "difference"
    assert len(det.table) == 4, det.table
    for x, y, flux in sources:
        row = det.table[np.argmin(np.hypot(det.table["x"] - x, det.table["y"] - y))]
        assert np.hypot(row["x"] - x, row["y"] - y) <= 1.0
        assert np.sign(row["peak_value"]) == np.sign(flux)
        assert bool(row["has_positive"]) == (flux > 0) and bool(row["has_negative"]) == (flux < 0)
        plane = MaskPlane.DETECTED if flux > 0 else MaskPlane.DETECTED_NEGATIVE
        other = MaskPlane.DETECTED_NEGATIVE if flux > 0 else MaskPlane.DETECTED
        assert det.mask[int(y), int(x)] & int(plane)
        assert not det.mask[int(y), int(x)] & int(other)
        assert det.segmentation[int(y), int(x)] == row["label"]
    # Pure white noise, 65k pixels, 5 sigma, 3 connected pixels: fewer than 0.01 chance
    # detections expected, so none may appear (asserted above by the count of 4).
    assert not det.mask.flags.writeable and not det.segmentation.flags.writeable
    assert det.warnings == ()


def test_touching_lobes_merge_into_one_footprint() -> None:
    diff = difference_with([(128.0, 128.0, 4000.0), (131.0, 128.0, -4000.0)])
    det = detect_sources(
        diff, None, DetectionConfig(detect_on="difference"), null_reporter(), psf=PSF
    )
    assert len(det.table) == 1
    row = det.table[0]
    assert row["has_positive"] and row["has_negative"]


def test_a_peak_is_split_off_by_its_rise_above_the_saddle() -> None:
    # Two noiseless Gaussian bumps (sigma 2 px, heights 20 and 12, 7 px apart) on one
    # footprint: on the line joining them the profile's minimum is the saddle.
    y, x = np.mgrid[0:40, 0:40].astype(float)
    image = 20 * np.exp(-((x - 15) ** 2 + (y - 20) ** 2) / 8) + 12 * np.exp(
        -((x - 22) ** 2 + (y - 20) ** 2) / 8
    )
    kept = (image > 1.0).astype(np.int32)  # one footprint, numbered 1
    rise = 12 * 1.0 + 20 * np.exp(-49 / 8) - float(image[20, 15:23].min())
    # The bumps' own profile as the point response. The rise asked for is the given
    # prominence and what sampling a crest alone makes it rise: the response half a pixel
    # off its peak, exp(-1 / 32), short of 1, times the smaller bump's height.
    dy, dx = np.mgrid[-12:13, -12:13]
    response = np.exp(-(dx**2 + dy**2) / 8)
    bar = rise - (1 - np.exp(-1 / 32)) * float(image[20, 22])
    labels, n = split_footprints(image, kept, bar - 0.05, response, np.inf)
    assert n == 2
    assert labels[20, 15] != labels[20, 22] and (labels > 0).sum() == kept.sum()
    # Each pixel goes to the bump it climbs to: the pieces meet at the saddle.
    saddle = 15 + int(np.argmin(image[20, 15:23]))
    assert abs(int(np.argmax(labels[20] == labels[20, 22])) - saddle) <= 1
    labels, n = split_footprints(image, kept, bar + 0.05, response, np.inf)
    assert n == 1 and set(np.unique(labels)) == {0, 1}
    # With less rise, the smaller bump is still a source when what is left of it once the
    # larger is taken away as a point source reaches the threshold:
    # 12 + 20 exp(-49 / 8) - 20 exp(-49 / 8) = 12.
    assert split_footprints(image, kept, bar + 0.05, response, 11.9)[1] == 2
    assert split_footprints(image, kept, bar + 0.05, response, 12.1)[1] == 1


def test_two_peaks_of_one_height_merge_into_the_one_found_first() -> None:
    # Two peaks of one height 0.1 above their saddle: the pieces' union-find chose the
    # group that survives a merge by its peak's height alone, so between equal heights by
    # the order a set of ints is iterated in, here the peak found later; the one found
    # first then merged into a peak not yet given its owner (KeyError: a 43 x 43 float32
    # pair with scattered NaNs crashed the run so, found by test_any_shape.py). The first
    # found wins now, and the two are one piece.
    image = np.zeros((3, 10))
    image[1, 3:6] = [5.0, 4.9, 5.0]
    kept = (image > 0).astype(np.int32)
    response = np.array([[0.1, 0.2, 0.1], [0.2, 1.0, 0.2], [0.1, 0.2, 0.1]])
    labels, n = split_footprints(image, kept, 1.0, response, 10.0)
    assert n == 1 and set(np.unique(labels[kept > 0])) == {1}


def test_a_psf_whose_response_is_negative_a_pixel_off_still_splits_two_peaks() -> None:
    # A PSF measured on clipped stars (noise that swings from row to row) had a negative
    # autocorrelation a pixel off its centre: its fractional power was complex, and the
    # comparison with it crashed detection (TypeError; a 472 x 134 pair of a fuzz
    # campaign). Two peaks of 20 and 15 over a saddle of 8 are two sources all the same.
    psf = np.zeros((5, 5))
    psf[::2, 1:4], psf[1::2, 1:4] = 1.0, -0.3
    response = point_response(psf / psf.sum())
    half = response.shape[0] // 2
    assert response[half + 1, half] < 0
    image = np.zeros((20, 20))
    image[8, 8:13] = [20.0, 8.0, 8.0, 8.0, 15.0]
    labels, n = split_footprints(image, (image > 5).astype(np.int32), 3.0, response, 5.0)
    assert n == 2 and labels[8, 8] != labels[8, 12]


def test_the_nth_set_pixels_are_found_without_listing_them_all() -> None:
    # The sky sources' tries are drawn as ranks among the free pixels: their positions
    # are those of the flat indices of every free pixel (8 bytes a pixel, not listed).
    rng = np.random.default_rng(6)
    hit = rng.random((70, 90)) > 0.4
    hit[10] = False  # an empty row
    ranks = rng.choice(int(hit.sum()), size=300, replace=False)
    ty, tx = np.array(list(_nth_set(hit, ranks))).T
    want_y, want_x = np.divmod(np.flatnonzero(hit)[ranks], hit.shape[1])
    np.testing.assert_array_equal(ty, want_y)
    np.testing.assert_array_equal(tx, want_x)


def test_negative_footprints_are_those_of_the_negated_image() -> None:
    # The negative search reads the image with its sign flipped box by box (no negated
    # image-sized plane): the same groups and pieces as a search of -image.
    rng = np.random.default_rng(3)
    image = ndimage.gaussian_filter(rng.normal(size=(120, 100)), 2.0).astype(np.float32) * 8
    good = rng.random(image.shape) > 0.02
    response = point_response(gaussian_psf(2.0, 15))
    flipped, at, _ = _threshold(image, good, 1.0, 3, sign=-1)
    np.testing.assert_array_equal(flipped, _threshold(-image, good, 1.0, 3)[0])
    np.testing.assert_array_equal(at, np.flatnonzero(flipped))
    assert flipped.any()
    np.testing.assert_array_equal(
        split_footprints(image, flipped, 0.3, response, 1.0, sign=-1)[0],
        split_footprints(-image, flipped, 0.3, response, 1.0)[0],
    )


def test_the_point_response_is_the_psf_autocorrelation() -> None:
    # A Gaussian PSF filtered by itself is a Gaussian of twice its variance (that of the
    # pixel-integrated PSF: s^2 + 1 / 12 a side).
    s2 = (3.5 / FWHM_PER_SIGMA) ** 2 + 1 / 12
    response = point_response(PSF)
    half = response.shape[0] // 2
    assert response.shape[0] % 2 == 1 and response[half, half] == pytest.approx(1.0)
    r = np.arange(-5, 6)
    expected = np.exp(-(r**2) / (4 * s2))
    np.testing.assert_allclose(response[half, half - 5 : half + 6], expected, atol=1e-3)


def test_a_transient_beside_a_residual_is_its_own_source() -> None:
    # A 60-sigma residual and a 20-sigma transient 9 px apart (PSF FWHM 3.5 px; the
    # filtered image's profiles have sigma 2.1 px): between them the filtered image
    # stays near 7 sigma, so at 5 sigma their footprints merge; the transient rises ~13
    # sigma above that saddle, far more than DEBLEND_PROMINENCE, so it is a source at
    # its own peak.
    s = 3.5 / FWHM_PER_SIGMA
    flux = SIGMA * 2 * np.sqrt(np.pi) * s
    sources = [(100.0, 100.0, 60 * flux), (109.0, 100.0, 20 * flux)]
    det = detect_sources(
        difference_with(sources),
        None,
        DetectionConfig(detect_on="difference"),
        null_reporter(),
        psf=PSF,
    )
    assert len(det.table) == 2, det.table
    assert det.segmentation[100, 100] != det.segmentation[100, 109]
    groups, _ = ndimage.label(det.mask & int(MaskPlane.DETECTED), structure=np.ones((3, 3)))
    assert groups[100, 100] == groups[100, 109], "the footprints touch"
    for x, y, _ in sources:
        row = det.table[np.argmin(np.hypot(det.table["x"] - x, det.table["y"] - y))]
        assert np.hypot(row["x"] - x, row["y"] - y) <= 1.0
        assert det.segmentation[int(y), int(x)] == row["label"]
        assert det.mask[int(y), int(x)] & int(MaskPlane.DETECTED)
    # One bright source (S/N 200) is never split by its noise.
    det = detect_sources(
        difference_with([(100.0, 100.0, 200 * flux)], seed=3),
        None,
        DetectionConfig(detect_on="difference"),
        null_reporter(),
        psf=PSF,
    )
    assert len(det.table) == 1 and DEBLEND_PROMINENCE >= 2.0


def _streak(snr: float, seed: int) -> Exposure:
    """A 100 px streak of the PSF's width, peaking at ``snr`` on the filtered image."""
    xs = np.linspace(78.0, 178.0, 400)
    line = render_gaussians(
        SHAPE,
        xs,
        90 + 0.6 * (xs - 78),
        np.ones(xs.size),
        np.full(xs.size, 3.5 / FWHM_PER_SIGMA),
        15,
    )
    unit = Exposure(line, np.ones(SHAPE), np.zeros(SHAPE, dtype=np.int32))
    peak = float(
        detect_sources(unit, None, DetectionConfig(), null_reporter(), psf=PSF).image.max()
    )
    noise = difference_with([], seed=seed)
    return noise.replace(image=noise.image + snr / peak * SIGMA * line)


def test_a_streak_is_not_shredded_into_point_sources() -> None:
    # Along a streak's ridge the filtered image barely drops between its noise peaks, and
    # what is left of each peak once the higher ones are taken away as point sources stays
    # above the threshold: split on that alone, a ridge at S/N 10 gave 13-16 footprints
    # (36 at S/N 100). That test now stands only in a footprint of point sources, which
    # the streak is not (5-10 sigma unexplained between its peaks at S/N 10), and a rise
    # counts beyond what sampling a crest makes (2.7 % of it here: at S/N 100 the ridge's
    # pixel phase alone rose 3 sigma, 4-6 pieces by rise). What is left are the ridge's
    # noise extremes, 100 px apart, that rise DEBLEND_PROMINENCE: 1-2 pieces over ten
    # seeds at S/N 10 and at S/N 100.
    for snr in (10.0, 100.0):
        for seed in range(4):
            det = detect_sources(
                _streak(snr, seed), None, DetectionConfig(sky_sources=0), null_reporter(), psf=PSF
            )
            assert 1 <= len(det.table) <= 2, (snr, seed, len(det.table))


def test_point_sources_without_a_saddle_between_them_are_still_split() -> None:
    # S/N 100 and 10 at 8 px: the fainter rises less than DEBLEND_PROMINENCE above the
    # saddle on the brighter's wing, and is split because the footprint is two point
    # sources. Their peak pixels are up to 0.7 px from the sources, which leaves up to
    # 0.14 of the brighter's peak (14 sigma) unexplained by responses centred there: each
    # response is taken as the most it reaches within a pixel of its peak.
    s = 3.5 / FWHM_PER_SIGMA
    per_snr = SIGMA * np.sqrt(4 * np.pi) * s
    for seed in range(5):
        rng = np.random.default_rng(seed)
        x, y, angle = 100 + rng.random(), 100 + rng.random(), rng.random() * np.pi
        sources = [
            (x, y, 100 * per_snr),
            (x + 8 * np.cos(angle), y + 8 * np.sin(angle), 10 * per_snr),
        ]
        det = detect_sources(
            difference_with(sources, seed=seed),
            None,
            DetectionConfig(sky_sources=0),
            null_reporter(),
            psf=PSF,
        )
        assert len(det.table) == 2, seed
        for sx, sy, _ in sources:
            assert np.min(np.hypot(det.table["x"] - sx, det.table["y"] - sy)) <= 1.0


def test_grow_and_min_area() -> None:
    diff = difference_with([(100.0, 100.0, 3000.0)])
    image = diff.image.copy()
    # A hot pixel of 10 sigma: filtered with the PSF it is 10 P(0) / sqrt(sum P^2) = 3.8
    # sigma (a point source of that peak would be 26 sigma), below the threshold.
    image[30, 200] = 10 * SIGMA
    diff = diff.replace(image=image)
    areas = []
    for grow in (0, 2, 4):
        det = detect_sources(
            diff,
            None,
            DetectionConfig(detect_on="difference", grow=grow, min_area=3),
            null_reporter(),
            psf=PSF,
        )
        assert len(det.table) == 1, "the hot pixel is not a point source"
        areas.append(int(det.table["npix"][0]))
    # Growing a compact footprint of radius r by g adds about 2 pi r g + pi g^2 pixels.
    assert areas[0] < areas[1] < areas[2]
    # Without growth the footprint is the pixels above threshold: min_area keeps it at
    # exactly its area and drops it one pixel above.
    for min_area, n in ((areas[0], 1), (areas[0] + 1, 0)):
        cfg = DetectionConfig(detect_on="difference", grow=0, min_area=min_area)
        assert len(detect_sources(diff, None, cfg, null_reporter(), psf=PSF).table) == n


def test_point_sources_are_found_at_their_psf_signal_to_noise() -> None:
    # Five sources of PSF S/N 6-12 (flux * sqrt(sum P^2) / sigma, sum P^2 = 1 / (4 pi s^2)
    # for a Gaussian of sigma s): each pixel holds only S/N * 2 sqrt(pi) s P(0) ~ 0.38 S/N
    # sigma at its peak, so thresholding pixels found none; the PSF filter finds them all.
    s = 3.5 / FWHM_PER_SIGMA
    per_snr = SIGMA * np.sqrt(4 * np.pi) * s
    snrs = (6.0, 7.5, 9.0, 10.5, 12.0)
    sources = [(40.0 + 45.0 * i, 60.0 + 30.0 * i, snr * per_snr) for i, snr in enumerate(snrs)]
    diff = difference_with(sources, seed=3)
    det = detect_sources(
        diff, None, DetectionConfig(detect_on="difference"), null_reporter(), psf=PSF
    )
    assert len(det.table) == 5
    for (x, y, _), snr in zip(sources, snrs, strict=True):
        i = int(np.argmin(np.hypot(det.table["x"] - x, det.table["y"] - y)))
        assert np.hypot(det.table["x"][i] - x, det.table["y"][i] - y) <= 1.5
        # The peak is the S/N plus unit noise (and the measured-noise scale, ~1): 3 sigma.
        assert det.table["peak_value"][i] == pytest.approx(snr, abs=3.0)


def test_detection_on_the_score_and_old_planes_cleared() -> None:
    pair = make_pair(SHAPE, 40, seed=9, transients=[(80.0, 150.0, 6000.0)])
    psf = render_gaussians(
        (25, 25),
        np.array([12.0]),
        np.array([12.0]),
        np.array([1.0]),
        np.array([4.0 / FWHM_PER_SIGMA]),
        12,
    )
    tpsf = render_gaussians(
        (25, 25),
        np.array([12.0]),
        np.array([12.0]),
        np.array([1.0]),
        np.array([2.5 / FWHM_PER_SIGMA]),
        12,
    )
    score = zogy.zogy_score(
        pair.science, pair.template, psf, tpsf, 1.0, ScoreConfig(), null_reporter()
    )
    stale = np.zeros(SHAPE, dtype=np.int32)
    stale[10:20, 10:20] = int(MaskPlane.DETECTED)
    diff = pair.science.replace(mask=stale)  # only its mask matters when detecting on the score
    det = detect_sources(diff, score, DetectionConfig(detect_on="score"), null_reporter(), psf=PSF)
    assert det.detection_image == "score"
    assert len(det.table) == 1
    assert abs(det.table["x"][0] - 80) <= 1 and abs(det.table["y"][0] - 150) <= 1
    assert not np.any(det.mask[10:20, 10:20] & int(MaskPlane.DETECTED))
    assert np.all(stale[10:20, 10:20] == int(MaskPlane.DETECTED)), "input mask untouched"


def test_masked_pixels_are_not_detected() -> None:
    diff = difference_with([(100.0, 100.0, 3000.0)])
    mask = diff.mask.copy()
    mask[90:110, 90:110] = int(MaskPlane.BAD)
    det = detect_sources(
        diff.replace(mask=mask),
        None,
        DetectionConfig(detect_on="difference"),
        null_reporter(),
        psf=PSF,
    )
    assert len(det.table) == 0


def test_a_bad_column_through_a_source_leaves_one_footprint() -> None:
    # A 1-2 px BAD column through a point source of S/N 30 (PSF core 3 px wide): its
    # pixels above the threshold lie on both sides, and 8-connectivity cannot cross the
    # column, so it gave two footprints (2.0 per source). Joined across gaps no wider
    # than the core it is one, at the source, and holds none of the column's pixels.
    s = 3.5 / FWHM_PER_SIGMA
    per_snr = SIGMA * np.sqrt(4 * np.pi) * s
    for width in (1, 2):
        for seed in range(3):
            rng = np.random.default_rng(seed)
            x = 100 + width / 2 + rng.uniform(-0.5, 0.5)
            diff = difference_with([(x, 100.3, 30 * per_snr)], seed=seed)
            mask = diff.mask.copy()
            mask[:, 100 : 100 + width] = int(MaskPlane.BAD)
            det = detect_sources(
                diff.replace(mask=mask),
                None,
                DetectionConfig(detect_on="difference", sky_sources=0, grow=0),
                null_reporter(),
                psf=PSF,
            )
            assert len(det.table) == 1, (width, seed, len(det.table))
            assert not (det.segmentation[:, 100 : 100 + width]).any()
            assert np.all(np.abs(det.table["x"] - x) <= width / 2 + 1.5)


def test_sky_sources_are_far_from_footprints_and_masks() -> None:
    diff = difference_with([(60.0, 60.0, 3000.0), (190.0, 190.0, -3000.0)])
    mask = diff.mask.copy()
    mask[:, :40] = int(MaskPlane.NO_DATA)
    cfg = DetectionConfig(detect_on="difference", sky_sources=20)
    det = detect_sources(diff.replace(mask=mask), None, cfg, null_reporter(), psf=PSF)
    assert len(det.sky_x) == 20
    again = detect_sources(diff.replace(mask=mask), None, cfg, null_reporter(), psf=PSF)
    assert np.array_equal(det.sky_x, again.sky_x), "seeded: the same image gives the same positions"
    sx, sy = det.sky_x.astype(int), det.sky_y.astype(int)
    assert np.all(sx >= 40 + 8), "8 px clear of the NO_DATA strip"
    yy, xx = np.nonzero(det.segmentation)
    for x, y in zip(sx, sy, strict=True):
        assert np.min(np.hypot(xx - x, yy - y)) > 8
    sep = np.hypot(sx[:, None] - sx[None, :], sy[:, None] - sy[None, :])
    assert np.min(sep[~np.eye(len(sx), dtype=bool)]) >= 16
    # Asking for more than fits gives a warning, not an error.
    crowded = detect_sources(
        diff,
        None,
        DetectionConfig(detect_on="difference", sky_sources=2000),
        null_reporter(),
        psf=PSF,
    )
    assert len(crowded.sky_x) < 2000
    assert any("sky" in w for w in crowded.warnings)


def test_guard_warns_on_a_bad_subtraction() -> None:
    # Subtract the template without matching its 2.5 px PSF to the science's 4 px: every
    # star leaves a ring, and a 10 % flux error on top leaves residual cores.
    pair = make_pair(SHAPE, 600, seed=6, flux_range=(2e4, 3e5))
    bad = Exposure(
        pair.science.image - 0.9 * pair.template.image,
        pair.science.variance + pair.template.variance,
        pair.science.mask,
    )
    det = detect_sources(
        bad, None, DetectionConfig(detect_on="difference"), null_reporter(), psf=PSF
    )
    assert det.detected_fraction > 0.05
    assert any("bad-subtraction guard" in w for w in det.warnings)
    # The matched difference of the same pair (equal PSFs, same flux) is quiet.
    good_pair = make_pair(SHAPE, 600, seed=6, flux_range=(2e4, 3e5), tmpl_fwhm=4.0)
    good = Exposure(
        good_pair.science.image - good_pair.template.image,
        good_pair.science.variance + good_pair.template.variance,
        good_pair.science.mask,
    )
    quiet = detect_sources(
        good, None, DetectionConfig(detect_on="difference"), null_reporter(), psf=PSF
    )
    assert quiet.detected_fraction < 0.005
    assert not any("bad-subtraction guard" in w for w in quiet.warnings)


def test_one_transient_on_a_cutout_does_not_trip_the_guard() -> None:
    # A 32 px cutout of noise with one transient of S/N ~50 at its centre: its
    # footprint covers far more than 5 % of the pixels, and the fraction alone called
    # it a bad subtraction (as on every Rubin cutout with a detection). The guard allows
    # the footprints of three point sources; four bright ones trip it.
    rng = np.random.default_rng(1)
    shape = (32, 32)
    sigma = np.full(1, 4.0 / FWHM_PER_SIGMA)

    def cutout(xs: list[float], ys: list[float]) -> Exposure:
        n = len(xs)
        image = render_gaussians(
            shape, np.array(xs), np.array(ys), np.full(n, 3000.0), np.repeat(sigma, n), 12
        )
        noisy = image + rng.normal(0, 10, shape)
        return Exposure(noisy, np.full(shape, 100.0), np.zeros(shape, np.int32))

    config = DetectionConfig(detect_on="difference")
    one = detect_sources(cutout([15.5], [15.5]), None, config, null_reporter(), psf=PSF)
    assert len(one.table) == 1 and one.detected_fraction > 0.05 and not one.guard_tripped
    four = cutout([7.5, 23.5, 7.5, 23.5], [7.5, 7.5, 23.5, 23.5])
    many = detect_sources(four, None, config, null_reporter(), psf=PSF)
    assert len(many.table) == 4 and many.guard_tripped
    assert any("bad-subtraction guard" in w for w in many.warnings)


def test_a_wrong_variance_is_shown_not_hidden() -> None:
    # Variance maps nine times too small: the difference's noise is 3 predicted sigma.
    # Detection makes no correction of its own (the one renormalisation happens on sky,
    # before it): a 5-sigma threshold is then 1.7 true sigma, hundreds of noise peaks
    # are found, and the measured noise is reported.
    diff = difference_with([(128.0, 128.0, 6000.0)])
    wrong = diff.replace(variance=diff.variance / 9.0)
    det = detect_sources(
        wrong, None, DetectionConfig(detect_on="difference"), null_reporter(), psf=PSF
    )
    # ~65 000 filtered pixels, of which ~1/25 independent: the robust std to ~2 %.
    assert 2.85 < det.noise_std < 3.15
    assert len(det.table) > 50
    assert any("robust noise of 3.0" in w and "off by that factor" in w for w in det.warnings)
    right = detect_sources(
        diff, None, DetectionConfig(detect_on="difference"), null_reporter(), psf=PSF
    )
    assert len(right.table) == 1 and 0.95 < right.noise_std < 1.05
    assert not any("robust noise" in w for w in right.warnings)


def test_a_refused_search_detects_nothing_and_says_why() -> None:
    diff = difference_with([(128.0, 128.0, 6000.0)])
    det = detect_sources(
        diff,
        None,
        DetectionConfig(detect_on="difference", sky_sources=10),
        null_reporter(),
        psf=PSF,
        refuse="the images share their noise",
    )
    assert len(det.table) == 0 and det.detected_fraction == 0.0
    assert not np.any(det.mask & int(MaskPlane.DETECTED | MaskPlane.DETECTED_NEGATIVE))
    assert det.warnings[0] == "no detection: the images share their noise"
    assert len(det.sky_x) == 10


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 40),
    st.integers(1, 40),
    st.integers(0, 2**32 - 1),
    st.floats(0.0, 2.0),
)
def test_labelled_pixels_and_footprint_stats_match_the_boxes(
    ny: int, nx: int, seed: int, level: float
) -> None:
    # Any label map: the pixels by label give each label's box (find_objects), its
    # local maxima (a 3 x 3 maximum filter over the label's box) and its table row (the
    # first largest |value| over the thresholded pixels, read on the box).
    rng = np.random.default_rng(seed)
    image = (rng.normal(size=(ny, nx)) * 2).astype(np.float32)
    image[rng.random((ny, nx)) < 0.2] = 1.0  # ties
    groups, _ = ndimage.label(np.abs(image) > level, structure=np.ones((3, 3), dtype=bool))
    rows, cols, present, starts = found = labelled_pixels(groups)
    np.testing.assert_array_equal(labelled_pixels(groups, np.flatnonzero(groups))[0], rows)
    counts = _peak_counts(image, groups, found, 1)
    boxes = ndimage.find_objects(groups)
    np.testing.assert_array_equal(present, [k + 1 for k, b in enumerate(boxes) if b is not None])
    pos, neg = image > level + 0.5, image < -level - 0.5
    table = _footprint_table(image, groups, pos, neg)
    assert len(table) == len(boxes)
    for g, k in enumerate(present.tolist()):
        box = boxes[k - 1]
        inside = groups[box] == k
        sel = slice(starts[g], starts[g + 1] if g + 1 < len(starts) else None)
        assert (rows[sel].min(), rows[sel].max() + 1) == (box[0].start, box[0].stop)
        assert (cols[sel].min(), cols[sel].max() + 1) == (box[1].start, box[1].stop)
        values = np.where(inside, image[box], -np.inf)
        peaks = inside & (values >= ndimage.maximum_filter(values, footprint=np.ones((3, 3))))
        assert counts[g] == np.count_nonzero(peaks)
        core = inside & (pos[box] | neg[box])
        at = np.where(core, np.abs(image[box]), -np.inf)
        iy, ix = np.unravel_index(int(np.argmax(at)), at.shape)
        row = table[g]
        assert (row["y"], row["x"]) == (box[0].start + iy, box[1].start + ix)
        assert row["peak_value"] == image[box][iy, ix]
        assert row["npix"] == inside.sum()
        assert row["has_positive"] == bool((inside & pos[box]).any())
        assert row["has_negative"] == bool((inside & neg[box]).any())
        assert (row["bbox_xmin"], row["bbox_xmax"]) == (box[1].start, box[1].stop - 1)


def test_a_pixel_grows_into_the_disk_of_its_radius() -> None:
    # Grown by r, one pixel covers the pixels with dx^2 + dy^2 <= r^2 + r: the 3 x 3
    # square at r = 1 (9 px), 69 px at r = 4. Squaring the distance transform's float
    # distance put the rim, at exactly r^2 + r, out of reach (5 and 61 px).
    yy, xx = np.mgrid[-10:11, -10:11]
    for radius in range(1, 9):
        pieces = np.zeros((21, 21), dtype=np.int32)
        pieces[10, 10] = 1
        grown, _ = _grow(pieces, radius, np.flatnonzero(pieces))
        np.testing.assert_array_equal(grown > 0, xx**2 + yy**2 <= radius * radius + radius)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(0, 2**32 - 1), st.integers(0, 3))
def test_grown_pieces_take_the_nearest_label_within_reach(
    ny: int, nx: int, seed: int, radius: int
) -> None:
    # Any pieces: every pixel within sqrt(r^2 + r) of a piece takes the label of one of
    # the nearest piece pixels, no other pixel is labelled, and the grown map's pixels
    # come back with it.
    rng = np.random.default_rng(seed)
    pieces, _ = ndimage.label(rng.random((ny, nx)) < 0.08)
    pieces = pieces.astype(np.int32)
    grown, at = _grow(pieces, radius, np.flatnonzero(pieces))
    np.testing.assert_array_equal(at, np.flatnonzero(grown))
    np.testing.assert_array_equal(grown[pieces > 0], pieces[pieces > 0])
    py, px = np.nonzero(pieces)
    for y, x in zip(*np.nonzero(pieces == 0), strict=True):
        d2 = (py - y) ** 2 + (px - x) ** 2
        if py.size and d2.min() <= radius * radius + radius:
            assert grown[y, x] in set(pieces[py, px][d2 == d2.min()].tolist())
        else:
            assert grown[y, x] == 0
