"""The PSF-matching engine on real pairs from ../shared/data (issue 3's acceptance tests).

Run with ``-s`` to see the figures (noise ratios, candidate counts, the scatter against
SFFT's difference).
"""

from __future__ import annotations

import dataclasses
import glob

import numpy as np
import pytest
from astropy.io import fits

from diffviewer.config import KernelConfig
from diffviewer.engine import decorrelate, kernel, renormalise, subtract
from diffviewer.engine.diagnostics import noise_ratio
from diffviewer.engine.progress import null_reporter
from diffviewer.exposure import UNUSABLE, Exposure
from diffviewer.io import read_exposure
from diffviewer.stats import robust_std
from tests.conftest import data_path
from tests.engine.helpers import fit_kernel_to


@dataclasses.dataclass(frozen=True)
class Run:
    fit: kernel.KernelFit
    products: subtract.SubtractionProducts
    decorrelated: decorrelate.DecorrelationResult
    difference: Exposure
    renormalisation: renormalise.Renormalisation
    sky: np.ndarray

    def quadrants(self) -> list[float]:
        """:func:`quadrant_ratios` of the renormalised, decorrelated difference."""
        return quadrant_ratios(self.difference, self.decorrelated.psf, self.sky)


def run_engine(science: Exposure, template: Exposure, config: KernelConfig | None = None) -> Run:
    """Kernel fit (``config``, default the defaults), subtraction, decorrelation and the
    noise renormalisation."""
    rep = null_reporter()
    fit = fit_kernel_to(science, template, config)
    products = subtract.subtract_images(science, template, fit, rep)
    decorr = decorrelate.decorrelate(products, fit, science, template, rep)
    ny, nx = science.shape
    half = subtract.footprint_half_width(fit.solution.evaluate((nx - 1) / 2, (ny - 1) / 2))
    diff, renorm, _ = renormalise.renormalise(
        decorr.difference, decorr.psf, science, template, half, rep
    )
    sky = renormalise.sky_near(diff, decorr.psf, science, template, half)
    return Run(fit, products, decorr, diff, renorm, sky)


def quadrant_ratios(difference: Exposure, psf: np.ndarray, sky: np.ndarray) -> list[float]:
    """PSF-scale noise of ``difference`` (PSF ``psf``) over its variance's prediction, on
    the ``sky`` pixels of each quadrant: the one scale must hold everywhere, not on
    average."""
    ny, nx = sky.shape
    out = []
    for ys in (slice(0, ny // 2), slice(ny // 2, ny)):
        for xs in (slice(0, nx // 2), slice(nx // 2, nx)):
            quadrant = np.zeros_like(sky)
            quadrant[ys, xs] = sky[ys, xs]
            out.append(renormalise.filtered_noise_scale(difference, psf, quadrant, null_reporter()))
    return out


def good_fraction(fit: kernel.KernelFit) -> float:
    status = np.asarray(fit.candidates["status"]).astype(str)
    return float(np.sum(status == "GOOD") / max(np.sum(status != "CONTROL"), 1))


def report(name: str, run: Run) -> None:
    status = np.asarray(run.fit.candidates["status"]).astype(str)
    print(
        f"\n{name}: GOOD {np.sum(status == 'GOOD')}, BAD {np.sum(status == 'BAD')}, "
        f"CONTROL {np.sum(status == 'CONTROL')}; noise ratio raw "
        f"{noise_ratio(run.products.difference):.3f}, decorrelated "
        f"{noise_ratio(run.decorrelated.difference):.3f}; PSF-scale noise scale "
        f"{run.renormalisation.noise_scale:.3f} on {run.renormalisation.n_sky_pixels} sky px; "
        f"after it, by quadrant {[round(q, 3) for q in run.quadrants()]}; "
        f"{run.fit.solution.describe()}, spatial order {run.fit.solution.spatial_order}"
    )


@pytest.mark.slow
def test_goto_pair() -> None:
    science = read_exposure(data_path("goto/1.fits"))
    template = read_exposure(data_path("goto/2.fits"))
    run = run_engine(science, template)
    report("goto", run)
    for q in run.quadrants():
        assert 0.95 <= q <= 1.10
    assert good_fraction(run.fit) > 0.6
    # The two GOTO coadds share much of their sky noise (pixel correlation 0.62 on sky
    # pixels, 3-sigma clipped, e.g. [200:400, 200:400]; 0.58-0.62 elsewhere; 0.99 over all
    # pixels, which the stars dominate) and their variance is estimated, so the propagated
    # variance overstates the difference's noise (raw ratio ~0.59; 0.74 at PSF scale, where
    # the pixel-to-pixel correlation adds back): the one rescale must happen and be reported.
    assert noise_ratio(run.products.difference) < 0.8
    assert run.renormalisation.applied
    assert any("scaled by" in w for w in run.renormalisation.warnings)


def test_decam_single_frames() -> None:
    science = read_exposure(data_path("decam_mini/input/DEC-OBS04a.mini.fits"))
    template = read_exposure(data_path("decam_mini/input/DEC-OBS18a.mini.fits"))
    run = run_engine(science, template)
    report("decam frames a", run)
    # Independent frames: the propagated variance alone must describe the noise.
    assert 0.95 <= noise_ratio(run.products.difference) <= 1.10
    assert 0.95 <= noise_ratio(run.decorrelated.difference) <= 1.10
    assert good_fraction(run.fit) > 0.5


def test_decam_stacks_against_sfft() -> None:
    root = "decam_mini/peer_output_sfft/"
    science = read_exposure(data_path(root + "Stack-DEC-OBS04.fits"))
    template = read_exposure(data_path(root + "Stack-DEC-OBS18.fits"))
    run = run_engine(science, template)
    report("decam stacks", run)
    # The stacks' noise is correlated: per pixel the decorrelated difference has 0.88 of
    # its predicted noise, at PSF scale ~1.4. The one scale, measured at PSF scale, must
    # hold in every quadrant; each quadrant has ~1 650 sky px, ~24 independent values of
    # the filtered difference (FWHM 5.5 px: ~70 px each), so each is known to ~14 %:
    # 0.65-1.35 is 2.5 sigma. Their mean is known to ~7 %: 0.85-1.15.
    quadrants = run.quadrants()
    for q in quadrants:
        assert 0.65 <= q <= 1.35
    assert 0.85 <= float(np.mean(quadrants)) <= 1.15
    assert good_fraction(run.fit) > 0.5
    diff = run.decorrelated.difference
    inner = (slice(20, -20), slice(20, -20))
    z = diff.image / np.sqrt(diff.variance)
    box = (slice(173, 190), slice(52, 69))  # within 8 px of (x, y) = (60, 181)
    peak = float(z[box].max())
    sfft = fits.getdata(data_path(root + "FinalDifference.fits")).astype(np.float64)
    raw = run.products.difference.image.astype(np.float64)
    # Both raw differences in units of our raw difference's noise, for a like comparison.
    sigma = np.sqrt(run.products.difference.variance)
    ours_z, sfft_z = (raw / sigma)[box], (sfft / sigma)[box]
    scatter = robust_std((raw - sfft)[inner])
    noise = robust_std(sfft[inner])
    print(
        f"decam stacks: transient at (60, 181) {peak:.1f} sigma decorrelated; raw difference "
        f"there {ours_z.min():+.1f}/{ours_z.max():+.1f} sigma (SFFT {sfft_z.min():+.1f}/"
        f"{sfft_z.max():+.1f}); robust scatter of (ours - SFFT FinalDifference) {scatter:.2f} "
        f"counts against a difference noise of {noise:.2f} ({scatter / noise:.2f} of it)"
    )
    # Measured as the data README's "~49 sigma" for SFFT is (peak over the sky's robust
    # noise; SFFT's decorrelated difference gives 53 that way), the residual stands out
    # far above 20 sigma (ours: ~100). In units of our variance plane, which holds the
    # host galaxy's Poisson noise as well, it is ~15 sigma.
    sky_sigma = robust_std(diff.image[inner].astype(np.float64))
    assert float(diff.image[box].max()) / sky_sigma > 20.0
    # The transient SFFT finds there, in ours too. The peaks differ by the host's
    # residual: along the row through the transient SFFT's difference runs -15 / +17
    # sigma, a dipole across the host 5 px wide (HOTPANTS's -21 / +22), ours -6 / +22
    # with the 4, 2, 2 degrees the held-out stars choose here (-2 / +25 with 6, 4, 2 set
    # by hand, -2 / +19 with 4, 2, 2 and its own stamps): ours is held between 0.8 and
    # 1.6 of SFFT's peak (1.27 measured; 1.52 and 1.16 with those), a bound set when the
    # basis was 6, 4, 2, not re-derived: where the host's residual lies decides the peak ...
    assert peak > 10.0
    assert 0.8 <= ours_z.max() / sfft_z.max() <= 1.6
    # ... and its host galaxy subtracted at least as cleanly as SFFT does (the negative
    # lobe of a kernel fitted on 1.5 FWHM stamps was -29 sigma; SFFT leaves -16).
    assert ours_z.min() > sfft_z.min()
    # Both subtractions share the inputs' noise, so they differ far less than the noise.
    assert scatter < 0.6 * noise


def test_properimage_without_wcs() -> None:
    science = read_exposure(data_path("properimage/aligned_eso085-030-004.fit"))
    template = read_exposure(data_path("properimage/aligned_eso085-030-005.fit"))
    assert science.wcs is None and template.wcs is None
    run = run_engine(science, template)
    report("properimage", run)
    for q in run.quadrants():
        assert 0.95 <= q <= 1.10
    assert good_fraction(run.fit) > 0.6


@pytest.mark.slow
def test_tiny_alert_cutouts() -> None:
    """Rubin triplets carry PSF images: the PSF kernel takes over. ZTF's have none: a fit
    with the few stars there are, else the kernel from PSFs measured on the brightest
    compact sources or read from the header; never InsufficientKernelSources."""
    rubin = sorted(glob.glob(str(data_path("rubin_triplets") / "*.fits")))
    ztf = sorted(glob.glob(str(data_path("ztf_triplets") / "*.fits")))
    assert rubin and ztf
    for path in rubin:
        run = run_engine(read_exposure(f"{path}[SCI]"), read_exposure(f"{path}[TMPL]"))
        assert run.fit.solution.spatial_order == 0
        diff = run.decorrelated.difference
        assert np.isfinite(diff.image).all()
        # EDGE is at most a quarter of the side from each edge, so part of even a 30 px
        # cutout is usable (LSSTCam PSFs of 9-11 px FWHM call for 31-43 px kernels, whose
        # 99 % footprint covers the cutout): 0.17-0.32 of it, less the pixels a source
        # cut by the edge could move by a sigma (0.13 at least, measured).
        assert np.mean((diff.mask & int(UNUSABLE)) == 0) > 0.1
    sources: dict[str, int] = {}
    for path in ztf:
        run = run_engine(read_exposure(f"{path}[SCI]"), read_exposure(f"{path}[REF]"))
        assert np.isfinite(run.decorrelated.difference.image).all()
        for est in (run.fit.science_psf, run.fit.template_psf):
            sources[est.source] = sources.get(est.source, 0) + 1
    # Every ZTF cutout holds a bright compact source or a FWHM card (the alert's): the
    # default PSF is never needed.
    assert "default" not in sources
    print(f"\nrubin: {len(rubin)} fitted from PSF images; ztf PSFs by source: {sources}")
