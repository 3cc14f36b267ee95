"""Writing a run's outputs: the files of ``diffviewer run`` and the GUI's Save.

Every file is written atomically through :mod:`diffviewer.atomic` (temporary name,
then rename), never over an input; ``metadata.json`` records inputs, versions,
timings, coverage, what was estimated and the figures of merit.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import platform
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
from astropy.io import fits
from astropy.table import Table

from diffviewer import __version__
from diffviewer.atomic import atomic_write_text, staged_output_dir
from diffviewer.config import config_files, to_toml
from diffviewer.engine.ids import FROM_CONFIG, FROM_PAIR
from diffviewer.engine.kernel import fitted_on_stars
from diffviewer.engine.measure import sky_source_check
from diffviewer.engine.pipeline import SubtractionResult
from diffviewer.engine.progress import CancelToken, Reporter
from diffviewer.engine.register import Registration
from diffviewer.engine.zogy import ScoreResult
from diffviewer.errors import OutputError
from diffviewer.exposure import Exposure, read_only
from diffviewer.fits_header import text_card
from diffviewer.fits_write import write_exposure, write_hdulist, write_table
from diffviewer.paths import input_file_states
from diffviewer.regions import ds9_regions

VERSIONED_PACKAGES = ("numpy", "scipy", "astropy")


def package_versions() -> dict[str, str]:
    """Versions of diffviewer, Python and the scientific packages it uses."""
    versions = {"diffviewer": __version__, "python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def _finite(value: float) -> float | None:
    """A JSON-safe float: None for NaN or infinity."""
    value = float(value)
    return value if math.isfinite(value) else None


def _finite_median(values: np.ndarray) -> float | None:
    """The median of the finite values, JSON-safe: None when there is none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else None


def guard_tripped(result: SubtractionResult) -> bool:
    """Whether the bad-subtraction guard tripped (detections cover too much of the image:
    :func:`diffviewer.engine.detect.guard_limit`)."""
    return result.detections.guard_tripped


def _exposure_summary(exposure: Exposure) -> dict[str, Any]:
    """What metadata records of one input exposure."""
    return {
        "source": exposure.source,
        "shape": list(exposure.shape),
        "variance_estimated": exposure.variance_estimated,
        "has_wcs": exposure.wcs is not None,
        "celestial_wcs": exposure.has_celestial_wcs,
        "psf_given": exposure.psf is not None,
        # the planes read from other files, and the mask's bit map: what reads it again
        "companions": exposure.companions.as_dict(),
        "zero_point": exposure.zero_point,
        "saturation": (
            None
            if exposure.saturation is None
            else {"from": exposure.saturation[0], "level": exposure.saturation[1]}
        ),
    }


def registration_summary(reg: Registration) -> dict[str, Any]:
    """What metadata records of the registration (transform: science px -> template px)."""
    return {
        "method": reg.method,
        "n_science_stars": reg.n_science_stars,
        "n_template_stars": reg.n_template_stars,
        "n_matched": reg.n_matched,
        "transform_order": reg.transform.order if reg.transform is not None else None,
        "transform": reg.transform.matrix if reg.transform is not None else None,
        "transform_applied": reg.transform is not None and reg.applied,
        "rms_px": _finite(reg.rms),
        "position_error_px": _finite(reg.position_error),
        "notes": list(reg.notes),
    }


def build_metadata(
    result: SubtractionResult,
    timings: Mapping[str, float] | None = None,
    read_notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The contents of ``metadata.json`` for a run.

    Parameters
    ----------
    result : SubtractionResult
        The run.
    timings : mapping of str to float, optional
        Wall-clock seconds around the engine, recorded beside its steps' under
        ``timings_s``: ``import`` (loading the engine's modules), ``read`` (reading the
        inputs), ``total`` (the engine, from the read exposures to the result).
    read_notes : sequence of str
        What reading the inputs warned of (a saturation level taken from the data, an
        unreadable WCS, which image of a file was read): ``warnings`` lists them after the
        engine's, as the window's banner does (the run's own judge its result).

    Returns
    -------
    dict
        JSON-serialisable metadata.
    """
    fit = result.kernel
    sol = fit.solution
    status = np.asarray(fit.candidates["status"]).astype(str)
    sums = result.subtraction.kernel_sum_map
    sign = np.asarray(result.diasources["sign"])
    real = ~np.asarray(result.diasources["sky_source"], dtype=bool)
    decorr = result.decorrelation
    return {
        "diffviewer": package_versions(),
        "config_digest": result.config.digest(),
        "inputs": {
            "science": _exposure_summary(result.science),
            "template": _exposure_summary(result.template.exposure),
            # a rerun tells a replaced input by these (diffviewer.results.incomplete_reason),
            # the star list the config names too (its digest holds the path alone)
            "files": input_file_states(
                [
                    result.science.source,
                    *(
                        [p.source for p in result.template.pieces]
                        or [result.template.exposure.source]
                    ),
                    *result.science.companions.specs,
                    *(s for p in result.template.pieces for s in p.companions.specs),
                    *config_files(result.config),
                ]
            ),
        },
        "warp": {
            "warped": result.template.warped,
            "max_offset_px": _finite(result.template.max_offset),
            "coverage_fraction": result.template.coverage,
            "registration": registration_summary(result.template.registration),
            # the warp correlates the template's noise between pixels: its variance plane
            # is the per-pixel one times covariance_factor (its noise at PSF scale)
            "noise_correlated": result.template.covariance_factor > 1.0 + 1e-6,
            "covariance_factor": result.template.covariance_factor,
            "pieces": [
                {
                    "source": piece.source,
                    "companions": piece.companions.as_dict(),
                    "coverage_fraction": piece.coverage,
                    "registration": registration_summary(piece.registration),
                    # its own zero point, the factor that put it on the template's, and
                    # the offset then subtracted to match its sky to its neighbours'
                    "zero_point": piece.zero_point,
                    "flux_scale": piece.flux_scale,
                    "sky_offset": piece.sky_offset,
                    "sky_offset_error": piece.sky_offset_error,
                    "warped": piece.warped,
                    "fwhm_px": _finite(piece.fwhm),
                }
                for piece in result.template.pieces
            ],
        },
        "psf": {
            "science": {
                "fwhm_px": result.science_psf.fwhm,
                "ellipticity": result.science_psf.ellipticity,
                "n_stars": result.science_psf.n_stars,
                "source": result.science_psf.source,
                "reason": result.science_psf.reason,
                "enclosed_fraction": result.science_psf.enclosed,
            },
            "template": {
                "fwhm_px": result.template_psf.fwhm,
                "ellipticity": result.template_psf.ellipticity,
                "n_stars": result.template_psf.n_stars,
                "source": result.template_psf.source,
                "reason": result.template_psf.reason,
            },
        },
        "kernel": {
            "convolved": fit.convolved,
            "direction": {
                "requested": fit.direction.requested,
                "why": fit.direction.reason,
                "expected_noise_template_convolved": _finite(
                    fit.direction.noise_template_convolved
                ),
                "expected_noise_science_convolved": _finite(fit.direction.noise_science_convolved),
            },
            "size_px": int(sol.basis.shape[-1]),
            "basis": sol.describe(),
            "n_basis": int(sol.basis.shape[0]),
            "spatial_order": sol.spatial_order,
            "background_order": sol.background_order,
            "candidates": {
                "good": int(np.sum(status == "GOOD")),
                "bad": int(np.sum(status == "BAD")),
                "control": int(np.sum(status == "CONTROL")),
                # chi^2 per degree of freedom of the stars against kernels fitted without
                # them (cross-validation, or the spatial model for control stars)
                "held_out_chi2_median": _finite_median(fit.candidates["held_out_chi2"]),
                # why each BAD stamp was not fitted or was rejected, most frequent first
                "bad_by_reason": dict(
                    Counter(
                        np.asarray(fit.candidates["reason"])[status == "BAD"].astype(str)
                    ).most_common()
                ),
            },
            "kernel_sum": {
                "mean": float(np.mean(sums, dtype=np.float64)),
                "min": float(np.min(sums)),
                "max": float(np.max(sums)),
                # The mean's standard error over the kernel stars (a jackknife over the
                # cross-validation's folds, each refitted without one), with a wing
                # fixed by the PSFs that of its profiles' fits too (KernelFit).
                "error": _finite(fit.kernel_sum_error),
                # Whether it was fitted on kernel stars, or set with a kernel derived from
                # the PSFs (from the stars' aperture fluxes, or 1: the warnings say).
                "fitted": fitted_on_stars(int(np.sum(status == "GOOD")), result.config.kernel),
            },
            "photometric_scale": fit.photometric_scale,
            # The Moffat wing of the kernel (engine.kernel_basis): weight null when the
            # stamps fitted its amplitude, else its amplitude per unit kernel sum as the
            # two PSFs fixed it with too few stamps (engine.kernel_spread); null without.
            "wing": None if fit.solution.wing is None else dataclasses.asdict(fit.solution.wing),
            # The roughness prior's strength, in mean stamps (engine.kernel_prior).
            "regularization": _finite(fit.regularization),
            # The two images' noise on sky and the kernel fit's allowance for it
            # (engine.kernel_noise).
            "shared_noise": fit.shared_noise.as_dict() if fit.shared_noise else None,
            # The basis degrees the held-out kernel stars chose (engine.kernel_degrees).
            "degree_choice": fit.degree_choice.as_dict() if fit.degree_choice else None,
            # The fit region the held-out kernel stars chose (engine.kernel_region).
            "region_choice": fit.region_choice.as_dict() if fit.region_choice else None,
            # The kernel sum's spatial order the held-out kernel stars chose
            # (engine.kernel_sum_order).
            "sum_order_choice": fit.sum_order_choice.as_dict() if fit.sum_order_choice else None,
            # The raw difference's level on sky (a clipped mean), taken out of the
            # background when significant (engine.subtract.sky_corrected).
            "sky_level": fit.sky_level.as_dict() if fit.sky_level else None,
        },
        "difference": {
            "decorrelated": result.decorrelation is not None,
            # As the engine measured them (diagnostics.noise_ratio of the two differences).
            "noise_ratio": _finite(result.diagnostics.noise_ratio),
            "noise_ratio_propagated": _finite(result.diagnostics.noise_ratio_raw),
            "decorrelation_variance_factor": (
                decorr.variance_factor if decorr is not None else None
            ),
        },
        # The one empirical correction of the variance, always stated with its value and why
        # (the background's is kernel.sky_level).
        "renormalisation": result.renormalisation.as_dict(),
        "score": _score_record(result.score),
        "detection": {
            # What was searched and how deep (config.toml says the same; quoted here so a
            # catalog's completeness can be read with its threshold).
            "detect_on": result.config.detection.detect_on,
            "threshold_sigma": result.config.detection.threshold,
            "n_sources": int(np.sum(real)),
            "n_positive": int(np.sum(real & (sign > 0))),
            "n_negative": int(np.sum(real & (sign < 0))),
            "n_dipoles": int(np.sum(np.asarray(result.diasources["is_dipole"], dtype=bool))),
            "n_sky_sources": int(np.sum(~real)),
            # Their PSF-flux pulls: scatter 1 (honest errors), mean 0 (no level left).
            "sky_sources": sky_source_check(result.diasources).as_dict(),
            "detected_fraction": result.detections.detected_fraction,
            "max_detected_fraction": result.config.detection.max_detected_fraction,
            "guard_tripped": guard_tripped(result),
            # The forced PSF fluxes' PSF: blended from this many grid nodes (1: constant).
            "catalog_psf_nodes": int(result.diasources.meta.get("psf_nodes", 1)),
        },
        # The exposure id in the high bits of the catalog's ids, and whether the config gave
        # it or it was derived from the pair (engine.ids.pair_exposure_id).
        "measurement": {
            "exposure_id": int(result.diasources.meta["exposure_id"]),
            "exposure_bits": int(result.diasources.meta["exposure_bits"]),
            "exposure_id_from": (
                FROM_PAIR if result.config.measurement.derives_exposure_id else FROM_CONFIG
            ),
        },
        "timings_s": {
            **{k: round(v, 4) for k, v in result.timings.items()},
            **{k: round(v, 4) for k, v in (timings or {}).items()},
        },
        "warnings": [*result.warnings, *read_notes],
    }


def _score_record(score: ScoreResult | None) -> dict[str, object]:
    """``metadata.json``'s score: its method, PSF nodes, the renormalisation's noise scale
    it was divided by (1: none) and its robust noise over its valid pixels after that."""
    if score is None:
        return {"method": "none", "psf_nodes": 0}
    return {
        "method": score.method,
        "psf_nodes": score.n_psf_nodes,
        "noise_scale": score.noise_scale,
        "noise_std": _finite(score.noise_std),
    }


#: How kernel.fits' BASIS, COEFFS and BGCOEFFS make the kernel and background at a
#: position (COMMENT cards of COEFFS; the README's kernel.fits entry says the same).
KERNEL_MODEL = (
    "K(x, y) = sum_k a_k(x, y) BASIS[k], a_k = sum_s COEFFS[k, s] P_s(x, y); background",
    "= sum_t BGCOEFFS[t] P_t(x, y). P_s = T_i(u) T_j(v), Chebyshev, s over total degree",
    "d = i + j = 0..SPORDER (BGORDER), j = 0..d within a degree: 1, u, v, u^2, u v, v^2;",
    "u = 2 x / (IMNX - 1) - 1, v = 2 y / (IMNY - 1) - 1, x, y 0-based px. The image",
    "CONVOLV names is convolved (true convolution, kernel centre at pixel [KSIZE // 2]);",
    "a convolved science is then multiplied by PHOTSCAL, the science/template flux",
    "ratio (so is matched_template.fits), which is 1 / the mean kernel sum then.",
)


def kernel_hdus(result: SubtractionResult, n_grid: int = 7) -> fits.HDUList:
    """``kernel.fits``: the kernel realised on a grid, the basis and the spatial coefficients.

    Parameters
    ----------
    result : SubtractionResult
        The run.
    n_grid : int
        Grid points per axis.

    Returns
    -------
    astropy.io.fits.HDUList
        PRIMARY (the mosaic of kernels, ``n_grid`` x ``n_grid`` tiles), GRID (tile centres),
        BASIS (the basis images, with the Gaussian widths and degrees), COEFFS (the spatial
        coefficients), and what :func:`diffviewer.results.read_saved_run` needs to rebuild
        the fit: BGCOEFFS (background), OWNCOEFS (each stamp's own fit; on the basis
        OWNBASIS when the kernel fell back to one derived from the PSFs), SCI_PSF and
        TMPL_PSF (the PSFs the fit used), SUB_PSF (the difference's PSF) and, when
        decorrelated, DIFF_PSF (the decorrelated difference's, with the variance rescale),
        KSUMMAP (the kernel-sum map on its grid).
    """
    sol = result.kernel.solution
    ny, nx = result.science.shape
    xs = np.linspace(0, nx - 1, n_grid)
    ys = np.linspace(0, ny - 1, n_grid)
    size = sol.basis.shape[-1]
    mosaic = np.zeros((n_grid * size, n_grid * size), dtype=np.float32)
    rows = []
    for j, y in enumerate(ys):
        for i, x in enumerate(xs):
            k = sol.evaluate(float(x), float(y))
            mosaic[j * size : (j + 1) * size, i * size : (i + 1) * size] = k
            rows.append((i, j, x, y, float(k.sum())))
    primary = fits.PrimaryHDU(mosaic)
    primary.header["NGRID"] = (n_grid, "kernels per axis in the mosaic")
    primary.header["KSIZE"] = (size, "kernel side [px]")
    primary.header["CONVOLV"] = (result.kernel.convolved, "which image was convolved")
    primary.header["PHOTSCAL"] = (
        _finite(result.kernel.photometric_scale),
        "science/template flux ratio",
    )
    primary.header["KSUMERR"] = (
        _finite(result.kernel.kernel_sum_error),
        "std error of the mean kernel sum (jackknife)",
    )
    rec = np.array(
        rows, dtype=[("i", "i4"), ("j", "i4"), ("x", "f8"), ("y", "f8"), ("kernel_sum", "f8")]
    )
    grid = fits.BinTableHDU(rec, name="GRID")
    basis = fits.ImageHDU(np.asarray(sol.basis, dtype=np.float64), name="BASIS")
    for i, (sigma, degree) in enumerate(zip(sol.sigmas, sol.degrees, strict=True)):
        basis.header[f"SIGMA{i}"] = (_finite(sigma), f"width of Gaussian {i} [px]")
        basis.header[f"DEGREE{i}"] = (int(degree), f"polynomial degree of Gaussian {i}")
    if sol.wing is not None:
        basis.header["WALPHA"] = (sol.wing.alpha, "Moffat wing's core width [px]")
        basis.header["WBETA"] = (sol.wing.beta, "Moffat wing's index")
        if sol.wing.weight is not None:
            basis.header["WWEIGHT"] = (sol.wing.weight, "wing fixed by the PSFs, per unit sum")
    coeffs = fits.ImageHDU(np.asarray(sol.coefficients, dtype=np.float64), name="COEFFS")
    coeffs.header["SPORDER"] = (sol.spatial_order, "spatial order of the kernel coefficients")
    coeffs.header["BGORDER"] = (sol.background_order, "spatial order of the background")
    coeffs.header["IMNY"] = (sol.shape[0], "image rows that scale y to [-1, 1]")
    coeffs.header["IMNX"] = (sol.shape[1], "image columns that scale x to [-1, 1]")
    for line in KERNEL_MODEL:
        coeffs.header.add_comment(line)
    bg = fits.ImageHDU(np.asarray(sol.bg_coefficients, dtype=np.float64), name="BGCOEFFS")
    own = fits.ImageHDU(np.asarray(result.kernel.own_coefficients, np.float64), name="OWNCOEFS")
    own.header["FITHALF"] = (result.kernel.fit_half, "half-width of the stamps fitted [px]")
    own_basis = []
    if not np.array_equal(result.kernel.stamp_basis, sol.basis):
        # The spatial fit's degrees were lowered, or the kernel fell back to one derived
        # from the PSFs, on a basis of its own.
        own_basis.append(
            fits.ImageHDU(np.asarray(result.kernel.stamp_basis, np.float64), name="OWNBASIS")
        )
    psfs = []
    for name, est in (
        ("SCI_PSF", result.kernel.science_psf),
        ("TMPL_PSF", result.kernel.template_psf),
    ):
        hdu = fits.ImageHDU(np.asarray(est.image, dtype=np.float64), name=name)
        hdu.header["FWHM"] = (_finite(est.fwhm), "[px] 2.3548 det(M)^1/4, M adaptive moments")
        hdu.header["ELLIP"] = (_finite(est.ellipticity), "1 - b/a of the adaptive moments")
        hdu.header["NSTARS"] = (est.n_stars, "stars measured")
        hdu.header["PSFSRC"] = text_card(est.source, "where the PSF came from")
        hdu.header["PSFWHY"] = text_card(est.reason, "why that source")
        psfs.append(hdu)
    sub_psf = fits.ImageHDU(np.asarray(result.subtraction.psf, np.float64), name="SUB_PSF")
    decorr = result.decorrelation
    if decorr is not None:
        diff_psf = fits.ImageHDU(np.asarray(decorr.psf, np.float64), name="DIFF_PSF")
        psfs += [sub_psf, diff_psf]
    else:
        psfs.append(sub_psf)
    ksum = fits.ImageHDU(np.asarray(result.subtraction.kernel_sum_map), name="KSUMMAP")
    step = result.subtraction.kernel_sum_step
    ksum.header["STEP"] = (step, "grid step of the map [px]")
    ksum.header["SAMPLE0"] = (step / 2.0, "x, y of sample [0, 0] [px, 0-based]")
    ksum.header.add_comment(
        "sample [j, i] is the kernel sum at (i STEP + SAMPLE0, j STEP + SAMPLE0), each "
        "clamped to the image's last column and row; metadata.json kernel_sum mean/min/max "
        "are over these samples"
    )
    return fits.HDUList(
        [primary, grid, basis, coeffs, bg, own, *own_basis, *psfs, ksum, catalog_psf_hdu(result)]
    )


def catalog_psf_hdu(result: SubtractionResult) -> fits.ImageHDU:
    """``CAT_PSF``: the difference's PSFs the catalog's PSF fluxes were fitted with.

    A cube ``[row, column, y, x]`` of node PSFs (each of sum ``ENCLOSED``), the nodes'
    columns and rows in ``NODEX<i>`` and ``NODEY<j>`` (0-based px); the PSF at a position
    is the bilinear blend of the four nodes around it (the outer nodes' beyond them),
    interpolated to the sub-pixel position. One node: the same PSF everywhere.
    """
    xs, ys, images = result.catalog_psf.nodes()
    hdu = fits.ImageHDU(np.asarray(images, dtype=np.float64), name="CAT_PSF")
    hdu.header["ENCLOSED"] = (result.catalog_psf.enclosed, "share of a star's flux in a node PSF")
    for i, x in enumerate(xs, 1):
        hdu.header[f"NODEX{i}"] = (x, f"column of node column {i} [px, 0-based]")
    for j, y in enumerate(ys, 1):
        hdu.header[f"NODEY{j}"] = (y, f"row of node row {j} [px, 0-based]")
    return hdu


#: The residual samples of the runDebug histograms, as HDUs of ``diagnostics.fits``.
DIAGNOSTIC_SAMPLES = (
    "own_by_difference",
    "own_by_input",
    "spatial_by_difference",
    "spatial_by_input",
    "control_by_difference",
    "control_by_input",
    "image_by_difference",
    "image_by_input",
)


def diagnostics_hdus(result: SubtractionResult) -> fits.HDUList:
    """``diagnostics.fits``: the residual samples behind the four runDebug histograms.

    Parameters
    ----------
    result : SubtractionResult
        The run.

    Returns
    -------
    astropy.io.fits.HDUList
        PRIMARY (the noise ratios as cards) and one 1-D float32 HDU per sample set of
        :data:`DIAGNOSTIC_SAMPLES` (normalised residuals, no unit), named in capitals.
    """
    diag = result.diagnostics
    primary = fits.PrimaryHDU()
    primary.header["NOISERAT"] = (_finite(diag.noise_ratio), "measured / predicted noise")
    primary.header["NOISERAW"] = (_finite(diag.noise_ratio_raw), "the same before decorrelation")
    hdus = [
        fits.ImageHDU(np.asarray(getattr(diag, n), dtype=np.float32), name=n.upper())
        for n in DIAGNOSTIC_SAMPLES
    ]
    return fits.HDUList([primary, *hdus])


#: Every file a run can write, in writing order: ``score.fits`` only with a score,
#: ``warped_template.fits`` only when the template was warped (otherwise it is the input);
#: ``metadata.json`` last, so its ``timings_s.write`` times every other file.
OUTPUT_NAMES = (
    "warped_template.fits",
    "matched_template.fits",
    "difference.fits",
    "score.fits",
    "kernel.fits",
    "kernel_candidates.ecsv",
    "diagnostics.fits",
    "diasources.ecsv",
    "diasources.fits",
    "diasources.reg",
    "config.toml",
    "metadata.json",
)

#: The products a run can be asked for: ``full`` writes every file of :data:`OUTPUT_NAMES`
#: that applies; ``minimal`` only the difference, its catalog, the config and the metadata.
PRODUCTS = {
    "full": OUTPUT_NAMES,
    "minimal": ("difference.fits", "diasources.ecsv", "config.toml", "metadata.json"),
}

Payload: TypeAlias = Exposure | fits.HDUList | Table | str


def output_names(result: SubtractionResult, products: str) -> list[str]:
    """The files a run writes for a choice of products, in :data:`OUTPUT_NAMES` order.

    Parameters
    ----------
    result : SubtractionResult
        The run.
    products : str
        A key of :data:`PRODUCTS`.

    Returns
    -------
    list of str
        File names; never ``warped_template.fits`` when nothing was warped (the input
        template is that file) nor ``score.fits`` without a score.

    Raises
    ------
    OutputError
        When ``products`` is not a key of :data:`PRODUCTS`.
    """
    if products not in PRODUCTS:
        raise OutputError(f"unknown products {products!r}; choose one of {', '.join(PRODUCTS)}")
    absent = {
        "warped_template.fits": result.template.is_input,
        "score.fits": result.score is None,
    }
    return [name for name in PRODUCTS[products] if not absent.get(name, False)]


def _outputs_metadata(
    result: SubtractionResult, names: Sequence[str], products: str, compress: bool
) -> dict[str, Any]:
    """What ``metadata.json`` records of the files written (its ``outputs`` key)."""
    skipped_warp = result.template.is_input and "warped_template.fits" in PRODUCTS[products]
    return {
        "products": products,
        "files": list(names),
        "warped_template": (
            "not written: the template was not warped, the input template is that image"
            if skipped_warp
            else ("written" if "warped_template.fits" in names else "not asked for")
        ),
        "compression": "MASK planes tile-compressed (RICE_1, lossless)" if compress else "none",
    }


def _score_exposure(result: SubtractionResult) -> Exposure:
    """``score.fits``: the score image with unit variance on the difference's grid."""
    score = result.score
    if score is None:
        raise ValueError("score.fits asked for a run without a score")
    # S/N, not the difference's counts: none of its photometric cards
    header = result.difference.header.copy()
    for key in ("BUNIT", "GAIN", "SATURATE"):
        header.remove(key, ignore_missing=True, remove_all=True)
    return result.difference.replace(
        image=score.image,
        variance=read_only(np.ones_like(score.image)),
        mask=read_only(score.mask | result.difference.mask),
        header=header,
        zero_point=None,
        source=f"score ({score.method}) of the difference",
    )


def _payload(name: str, result: SubtractionResult, metadata: dict[str, Any]) -> Payload:
    """What goes into the output file ``name`` (built only when that file is written)."""
    builders: dict[str, Callable[[], Payload]] = {
        "warped_template.fits": lambda: result.template.exposure,
        "matched_template.fits": lambda: result.subtraction.matched,
        "difference.fits": lambda: result.difference,
        "score.fits": lambda: _score_exposure(result),
        "kernel.fits": lambda: kernel_hdus(result),
        "kernel_candidates.ecsv": lambda: result.kernel.candidates,
        "diagnostics.fits": lambda: diagnostics_hdus(result),
        "diasources.ecsv": lambda: result.diasources,
        "diasources.fits": lambda: result.diasources,
        "diasources.reg": lambda: ds9_regions(result.diasources),
        "config.toml": lambda: to_toml(result.config),
        "metadata.json": lambda: json.dumps(metadata, indent=2) + "\n",
    }
    return builders[name]()


def _write(
    path: Path, payload: Payload, protect: Sequence[str | Path], *, compress: bool = False
) -> Path:
    """Write one output file, by the type of what it holds, atomically."""
    if isinstance(payload, Exposure):
        return write_exposure(path, payload, protect=protect, compress_mask=compress)
    if isinstance(payload, fits.HDUList):
        return write_hdulist(path, payload, protect=protect)
    if isinstance(payload, Table):
        return write_table(path, payload, protect=protect)
    return atomic_write_text(path, payload, protect=protect)


def write_outputs(
    result: SubtractionResult,
    out_dir: str | Path,
    inputs: Sequence[str | Path],
    *,
    overwrite: bool = False,
    timings: Mapping[str, float] | None = None,
    cancel: CancelToken | None = None,
    products: str = "full",
    compress: bool = False,
    read_notes: Sequence[str] = (),
) -> list[Path]:
    """Write the outputs of a run into ``out_dir``, all or nothing.

    The files are written into a staging folder beside ``out_dir`` and moved into place
    only when all are written (:func:`diffviewer.atomic.staged_output_dir`), so a failure or
    a cancel leaves ``out_dir`` as it was.

    Parameters
    ----------
    result : SubtractionResult
        The finished run.
    out_dir : str or Path
        Output folder (created when missing).
    inputs : sequence of str or Path
        The input files (and any other file the run read: config, source list), which
        are never written over.
    overwrite : bool
        Allow writing into a non-empty folder; outputs of an earlier run that this run
        does not write (e.g. ``score.fits`` when the score is off) are removed.
    timings : mapping of str to float, optional
        Seconds around the engine (import, read, total), for the metadata
        (:func:`build_metadata`); ``write``, the seconds writing every other file, is
        added to ``metadata.json``'s ``timings_s``, which is written last (the flushes
        to disk still pending then, and the move into place, come after it).
    cancel : CancelToken, optional
        Checked before each file; a cancel raises ``Cancelled`` and writes nothing.
    products : str
        ``full`` (every file that applies) or ``minimal`` (difference, catalog, config
        and metadata); see :data:`PRODUCTS`.
    compress : bool
        Tile-compress the MASK planes of the FITS images (RICE_1, lossless: ~100x
        smaller). The IMAGE and VARIANCE planes are never compressed: lossless float
        compression saves ~20 % at ~3.5 s per 1850 x 1850 plane, quantising changes pixels.
    read_notes : sequence of str
        What reading the inputs warned of, for ``metadata.json`` (:func:`build_metadata`).

    Returns
    -------
    list of Path
        The files written, in ``out_dir``.

    Raises
    ------
    OutputError
        When ``products`` is unknown or writing fails.
    """
    protect = list(inputs)
    reporter = Reporter(token=cancel)
    names = output_names(result, products)
    t0 = time.perf_counter()
    metadata = build_metadata(result, timings, read_notes)
    metadata["outputs"] = _outputs_metadata(result, names, products, compress)
    out = Path(out_dir).expanduser().resolve()
    with staged_output_dir(out, protect, overwrite, OUTPUT_NAMES) as stage:
        for name in names:
            reporter.check()
            if name == "metadata.json":
                metadata["timings_s"]["write"] = round(time.perf_counter() - t0, 4)
            _write(stage / name, _payload(name, result, metadata), protect, compress=compress)
    return [out / name for name in names]
