"""The order of the engine's steps: the only module that knows it.

``run_subtraction`` is the seed's ``ImageDifferenceTask.run``: warp the template to
the science grid, check its coverage, measure both PSFs, select kernel stars, fit
the spatially varying Alard-Lupton kernel, subtract, decorrelate, compute the score,
detect and measure DIA sources, and gather the runDebug diagnostics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor

import numpy as np
from astropy.table import Table

from diffviewer.allocator import release_free_memory
from diffviewer.config import MeasurementConfig, SubtractionConfig
from diffviewer.engine import (
    candidates,
    decorrelate,
    detect,
    diagnostics,
    ids,
    kernel,
    lent,
    measure,
    photometry,
    psf,
    psf_field,
    renormalise,
    score_psfs,
    sky,
    source_noise,
    subtract,
    warp,
    zogy,
)
from diffviewer.engine.progress import CancelToken, ProgressCallback, Reporter, StageCallback
from diffviewer.errors import InputError
from diffviewer.exposure import (
    Exposure,
    MaskPlane,
    describe_planes,
    finite_usable,
    map_by_rows,
    unusable_everywhere,
)
from diffviewer.star_list import StarList

#: Least median variance (image units^2) of an input. Products of variances with squared
#: kernels (weights ~1e-3) must stay well inside float32's normal range (> 1.2e-38); below
#: this (a sky noise under 1e-15 image units) kernel sums are measured wrongly.
MIN_VARIANCE = 1e-30


@contextlib.contextmanager
def _step(rep: Reporter, name: str, start: float, end: float) -> Iterator[None]:
    """``rep.step``, then :func:`~diffviewer.allocator.release_free_memory`."""
    with rep.step(name, start, end):
        yield
    release_free_memory()


def check_some_usable(exposure: Exposure, name: str) -> None:
    """Raise when no pixel of an input is usable, naming the planes set on every one.

    A template piece cut wholly from a masked region, or an image whose values all
    overflowed (NO_DATA) was refused for 'a median variance of 0' (its units too small).

    Raises
    ------
    InputError
        When every pixel carries an unusable plane (:data:`~diffviewer.exposure.UNUSABLE`).
    """
    everywhere = unusable_everywhere(exposure.mask)
    if everywhere is not None:
        raise InputError(
            f"the {name} image ({exposure.source}) has no usable pixel: "
            f"{describe_planes(everywhere)} on every pixel; give an image with pixels its "
            "mask leaves usable"
        )


def check_flux_units(exposure: Exposure, name: str) -> None:
    """Raise when an input's variance is too small for single-precision arithmetic.

    Parameters
    ----------
    exposure : Exposure
        An input image.
    name : str
        'science' or 'template', for the message.

    Raises
    ------
    InputError
        When the median variance over usable pixels is below :data:`MIN_VARIANCE`
        (or no pixel has a positive variance).
    """
    good = exposure.usable_pixels()
    # The median is at least MIN_VARIANCE when more than half the values are (counted,
    # not sorted: ~0.05 s less per image on GOTO); it is computed for the message only.
    if np.count_nonzero(good & (exposure.variance >= MIN_VARIANCE)) > good.sum() // 2:
        return
    level = float(np.median(exposure.variance[good])) if good.any() else 0.0
    if not level >= MIN_VARIANCE:
        raise InputError(
            f"the {name} image ({exposure.source}) has a median variance of {level:.3g} "
            f"(image units^2), below {MIN_VARIANCE:g}: the images are in units too small "
            "for single precision (or the variance plane is empty); multiply both images "
            "by a common factor (e.g. 1e12) and any variance planes by its square"
        )


def min_image_side(config: SubtractionConfig) -> int:
    """Least side (px) of an input: room for the smallest kernel around a star, twice.

    A kernel of ``kernel.min_size`` px fitted on a star needs a stamp of about twice its
    side; smaller images give a kernel fitted on edge pixels and outputs without meaning.
    """
    return 2 * config.kernel.min_size


def check_finite(exposure: Exposure, name: str) -> None:
    """Raise when an input holds NaN or infinite values outside its NO_DATA pixels.

    The reader (:func:`diffviewer.io.read_exposure`) flags such pixels NO_DATA and gives
    them finite values; an exposure made in Python may not have, and the convolution
    spread its NaNs over the whole difference, which came out all NaN without a word.
    A sum of each plane finds any such value in one pass (4 ms a 4096^2 plane; a sum that
    overflows only costs the count); the pixels are counted only then.

    Parameters
    ----------
    exposure : Exposure
        An input image.
    name : str
        'science' or 'template', for the message.

    Raises
    ------
    InputError
        Naming how many image and variance values are not finite outside NO_DATA.
    """
    planes = {"image": exposure.image, "variance": exposure.variance}
    if all(np.isfinite(np.sum(plane)) for plane in planes.values()):
        return
    data = exposure.good_pixels(int(MaskPlane.NO_DATA))
    counts = {key: int(np.count_nonzero(~np.isfinite(p) & data)) for key, p in planes.items()}
    if not any(counts.values()):
        return
    raise InputError(
        f"the {name} image ({exposure.source}) has {counts['image']} NaN or infinite "
        f"values in its image and {counts['variance']} in its variance outside its NO_DATA "
        "pixels: the convolution would spread them over the whole difference; flag them "
        "NO_DATA with finite values (diffviewer.io.fill_no_data does both), or read the "
        "file with diffviewer.io.read_exposure"
    )


def check_image_size(exposure: Exposure, name: str, config: SubtractionConfig) -> None:
    """Raise when an input is too small to fit a kernel on a few stars.

    Parameters
    ----------
    exposure : Exposure
        An input image.
    name : str
        'science' or 'template', for the message.
    config : SubtractionConfig
        Gives the least kernel side (:func:`min_image_side`).

    Raises
    ------
    InputError
        When either side is below :func:`min_image_side`.
    """
    side = min_image_side(config)
    ny, nx = exposure.shape
    if min(ny, nx) < side:
        raise InputError(
            f"the {name} image ({exposure.source}) is {nx} x {ny} px; images must be at least "
            f"{side} x {side} px (twice kernel.min_size = {config.kernel.min_size} px) to fit a "
            "PSF-matching kernel on a few stars; give a larger cutout"
        )


def check_inputs(science: Exposure, pieces: Sequence[Exposure], config: SubtractionConfig) -> None:
    """:func:`check_image_size` of the science and of a template in one piece, and
    :func:`check_finite`, :func:`check_some_usable` and :func:`check_flux_units` of the
    science and each piece.

    A template in several pieces is checked for size once combined on the science grid
    (the science's size): a piece may be a narrow strip at a patch's edge.

    A function of its own so that no loop variable of :func:`run_subtraction` holds a
    template piece to the end of the run: the pieces as read are freed once warped
    (12.6 MB at 1024^2, 200 MB at 4096^2 when the template is warped).

    Raises
    ------
    InputError
        As those checks.
    """
    check_image_size(science, "science", config)
    for exposure, name in ((science, "science"), *((piece, "template") for piece in pieces)):
        if name == "template" and len(pieces) == 1:
            check_image_size(exposure, name, config)
        check_finite(exposure, name)
        check_some_usable(exposure, name)
        check_flux_units(exposure, name)


def same_pixels_note(science: Exposure, pieces: Sequence[Exposure]) -> str | None:
    """A note when the template (or a piece of it) is the science image itself, pixel for
    pixel: the same file and HDU given twice, or a copy of it (None otherwise).

    Such a difference is zero by construction, whatever the engine does; the other
    notes it draws (no renormalisation, as the images share their noise; no detection)
    would not name the cause. A sample of rows is compared first, so a real pair costs
    nothing.
    """
    for piece in pieces:
        if piece.shape != science.shape:
            continue
        if piece.image is science.image or (
            np.array_equal(piece.image[::97], science.image[::97])
            and np.array_equal(piece.image, science.image)
        ):
            return (
                f"the template {piece.source} holds the science image's own pixels "
                f"({science.source}): the difference is zero by construction; give a "
                "template of another epoch"
            )
    return None


def with_exposure_id(
    config: SubtractionConfig, science: Exposure, template: Exposure
) -> MeasurementConfig:
    """The measurement config with its exposure id resolved: as given, or, for -1, derived
    from the pair as the engine sees it and the config (:func:`ids.pair_exposure_id`).

    Parameters
    ----------
    config : SubtractionConfig
        The run's config (its digest enters a derived id).
    science : Exposure
        The science exposure.
    template : Exposure
        The template on the science grid (warped and combined).

    Returns
    -------
    MeasurementConfig
        ``config.measurement``, its ``exposure_id`` 0 or more.
    """
    measurement = config.measurement
    if not measurement.derives_exposure_id:
        return measurement
    derived = ids.pair_exposure_id(
        science.image, template.image, config.digest(), measurement.exposure_bits
    )
    return dataclasses.replace(measurement, exposure_id=derived)


@dataclasses.dataclass(frozen=True)
class SubtractionResult:
    """Everything a run produced, for writing, plotting and inspection.

    Attributes
    ----------
    config : SubtractionConfig
        The effective config of the run.
    science : Exposure
        The science exposure as read.
    template : warp.WarpResult
        The template on the science grid, with the warp's coverage.
    science_psf, template_psf : psf.PsfEstimate
        PSF size, shape and image of each input.
    kernel : kernel.KernelFit
        The PSF-matching kernel solution and the candidates table with per-stamp QA.
    subtraction : subtract.SubtractionProducts
        Matched image, raw difference, kernel-sum map.
    difference : Exposure
        The difference that is measured (decorrelated when configured).
    decorrelation : decorrelate.DecorrelationResult or None
        The decorrelation kernel, when decorrelation ran (its ``difference`` is
        :attr:`difference`, renormalised and with detection's mask planes).
    renormalisation : renormalise.Renormalisation
        The one empirical scale of the difference's variance, measured on sky.
    score : zogy.ScoreResult or None
        The score image, when configured.
    detections : detect.Detections
        Footprints and the difference's mask with DETECTED planes.
    diasources : astropy.table.Table
        The DIA source catalog; ``meta['exposure_id']`` is the exposure id in the high
        bits of its ids, as given or derived from the pair (:func:`with_exposure_id`).
    catalog_psf : photometry.PsfModel
        The difference's PSF the catalog measured with (a
        :class:`~diffviewer.engine.psf_field.PsfField` where it varies with the kernel).
    diagnostics : diagnostics.Diagnostics
        runDebug data: residual panels, noise ratio.
    timings : dict
        Wall-clock seconds per step.
    warnings : tuple of str
        What the user should know (deconvolution risk, few kernel stars, ...).
    """

    config: SubtractionConfig
    science: Exposure
    template: warp.WarpResult
    science_psf: psf.PsfEstimate
    template_psf: psf.PsfEstimate
    kernel: kernel.KernelFit
    subtraction: subtract.SubtractionProducts
    difference: Exposure
    decorrelation: decorrelate.DecorrelationResult | None
    renormalisation: renormalise.Renormalisation
    score: zogy.ScoreResult | None
    detections: detect.Detections
    diasources: Table
    catalog_psf: photometry.PsfModel
    diagnostics: diagnostics.Diagnostics
    timings: dict[str, float]
    warnings: tuple[str, ...]


def run_subtraction(
    science: Exposure,
    template: Exposure | Sequence[Exposure],
    config: SubtractionConfig | None = None,
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    stage: StageCallback | None = None,
    executor: Executor | None = None,
    star_list: StarList | None = None,
) -> SubtractionResult:
    """Warp, PSF-match, subtract, score, detect and measure.

    Parameters
    ----------
    science : Exposure
        The science exposure (the minuend).
    template : Exposure or sequence of Exposure
        The template (reference) exposure of the same sky, or its pieces (each
        registered on its own, warped and combined: :func:`warp.warp_template`).
    config : SubtractionConfig, optional
        Defaults when None.
    progress : callable, optional
        ``progress(step, fraction)`` as the run goes.
    cancel : CancelToken, optional
        Checked between and within steps; a cancelled run raises ``Cancelled``.
    stage : callable, optional
        ``stage(name, products)`` after the warp and subtract steps, once the difference's
        pixels are final (after decorrelation) and after the score, so a viewer shows each
        image as soon as it exists (:meth:`Reporter.stage`).
    executor : concurrent.futures.Executor, optional
        Threads lent for the independent pieces of a step (:mod:`lent`: the tiles of the
        convolutions, the chunks of kernel stamps, the batches of diagnostic stamps); the
        products are the same bits with or without. None: on the calling thread alone.
    star_list : StarList, optional
        The star list ``config.candidates.source_list`` names, when the caller read it
        already (``diffviewer run`` reads it before the images, and it is not read
        again); read by the kernel candidates' step when None.

    Returns
    -------
    SubtractionResult

    Raises
    ------
    NoWorkFound
        When the template covers too little of the science image.
    InputError
        When an input's variance is too small for single precision (:func:`check_flux_units`)
        or it holds NaN or infinite values outside NO_DATA (:func:`check_finite`).
    InsufficientKernelSources
        When no pixel is usable on both images (:func:`~diffviewer.engine.sky.input_backgrounds`;
        with too few kernel stars the kernel falls back to one from the PSFs, or a delta;
        see :mod:`diffviewer.engine.kernel`).
    Cancelled
        When ``cancel`` was set.
    """
    config = config or SubtractionConfig()
    rep = Reporter(progress, cancel, stage_callback=stage)
    notes: list[str] = []
    pieces = [template] if isinstance(template, Exposure) else list(template)
    if not pieces:
        raise InputError("no template was given; give one template, or several pieces of one")
    check_inputs(science, pieces, config)
    same = same_pixels_note(science, pieces)
    if same is not None:
        notes.append(same)

    # Independent pieces of a step on the threads the caller lends (the engine holds none).
    with lent.lend(executor):
        with _step(rep, "warp", 0.0, 0.10):
            warped = warp.warp_template(pieces, science, config.warp, rep)
        # The pieces as read are not needed again (a caller that keeps no reference frees them).
        del pieces, template
        rep.stage("warp", {"science": science.image, "template": warped.exposure.image})
        with _step(rep, "kernel candidates", 0.10, 0.20):
            cands = candidates.select_candidates(
                science,
                warped.exposure,
                config.candidates,
                rep,
                warped.science_peaks,
                warped.template_peaks,
                kernel_config=config.kernel,
                star_list=star_list,
            )
        with _step(rep, "psf", 0.20, 0.25):
            xy = cands.table["x"], cands.table["y"]
            sci_psf = psf.estimate_psf(science, *xy, bright=cands.bright, photometric=True)
            tmpl_psf = psf.estimate_psf(
                warped.exposure, *xy, bright=cands.bright, resampled=warped.warped
            )
        # Found once a run: the pixels usable on both inputs; the inputs' sources, on a first
        # estimate of each input's background, which bound the sky of the kernel fit's
        # noise terms and of the renormalisation; each input's background and noise on
        # that sky (the kernel fit's noise terms subtract it; ZOGY's score takes the noise).
        with _step(rep, "sky", 0.25, 0.27):
            usable = sky.usable_on_both(science, warped.exposure)
            mesh = config.score.background_mesh
            sources = sky.input_sources(
                science,
                warped.exposure,
                sky.input_backgrounds(science, warped.exposure, mesh, usable),
                usable,
            )
            backgrounds = sky.sky_backgrounds(
                science, warped.exposure, mesh, sources, (sci_psf.fwhm, tmpl_psf.fwhm)
            )
        with _step(rep, "kernel fit", 0.27, 0.45):
            fit = kernel.fit_kernel(
                science,
                warped.exposure,
                cands,
                sci_psf,
                tmpl_psf,
                backgrounds,
                sources,
                config.kernel,
                rep,
            )
        with _step(rep, "subtract", 0.45, 0.60):
            products = subtract.subtract_images(science, warped.exposure, fit, rep)
            # the raw difference's sky level out of its background: the fit from here on
            products = subtract.sky_corrected(
                products, sources.beyond_psfs(sci_psf.fwhm, tmpl_psf.fwhm)
            )
            fit = products.fit
        rep.stage("subtract", {"matched": products.matched_image})
        # The raw difference (SubtractionProducts.difference is made on each read) is made
        # once, for the decorrelation and the raw diagnostics.
        decorr = None
        if config.decorrelation.enabled:
            with _step(rep, "decorrelate", 0.60, 0.65):
                raw = products.difference
                decorr = decorrelate.decorrelate(
                    products, fit, science, warped.exposure, rep, raw=raw
                )
                difference, diff_psf = decorr.difference, decorr.psf
        else:
            raw = difference = products.difference
            diff_psf = products.psf
        # Its pixels are final here: renormalisation scales its variance, detection adds
        # mask planes.
        rep.stage("difference", {"difference": difference.image})
        # The raw difference's diagnostics come before the planes of the renormalisation, the
        # score and detection are held: the raw difference is dropped after them.
        with _step(rep, "diagnostics", 0.65, 0.66):
            raw_diag = diagnostics.raw_residuals(science, warped.exposure, fit, raw, rep)
        # ZOGY's score is made from the raw difference, a cell at a time, where it is usable.
        raw_usable = (
            map_by_rows(raw.shape, functools.partial(finite_usable, raw))
            if config.score.method == "zogy"
            else None
        )
        del raw
        psf_grid = score_psfs.kernel_psf_grid(fit, science.shape, config.score)
        with _step(rep, "renormalise", 0.66, 0.70):
            # The PSFs the catalog measures with, varying with the kernel: the difference
            # is filtered with the same, so that a source's S/N is its detection's.
            diff_model, sci_model = psf_field.catalog_psfs(
                fit, psf_grid, diff_psf, sci_psf.image, decorr.kernel if decorr else None
            )
            difference, renorm, filtered = renormalise.renormalise(
                difference,
                diff_model,
                science,
                warped.exposure,
                subtract.edge_half_width(fit.solution),
                rep,
                enabled=config.decorrelation.scale_variance,
                sources=sources,
            )
        # Nothing after the renormalisation looks for sky (two boolean maps, 34 MB at 4096^2).
        del sources
        if decorr is not None:
            # The decorrelated difference is the renormalised one from here on: its variance
            # before the scale (an image-sized plane) is not kept.
            decorr = dataclasses.replace(decorr, difference=difference)
        score = None
        with _step(rep, "score", 0.70, 0.78):
            method = config.score.method
            lowest = float(np.min(psf_grid.flux_ratio))
            if method == "zogy" and not lowest > 0:
                # A kernel fit that failed (the DECam demo with its template moved 15 px:
                # kernel sum -0.018) leaves ZOGY no flux ratio; the run goes on and its
                # difference shows the failure.
                notes.append(
                    f"the PSF-matching kernel's flux ratio is {lowest:.3g} in places, which "
                    "ZOGY cannot use: the score is the Alard-Lupton preconvolution score "
                    "instead (the kernel fit failed: check the registration and the kernel "
                    "stars)"
                )
                method = "al"
            if method == "zogy" and raw_usable is not None:
                # its noise comes from the inputs' variance planes: renormalised with them
                score = renorm.scaled(
                    zogy.zogy_score_grid(
                        science,
                        warped.exposure,
                        psf_grid,
                        config.score,
                        rep,
                        backgrounds,
                        usable,
                        zogy.KernelDifference(products, raw_usable),
                    )
                )
            elif method == "al":
                # the renormalisation's filtered difference is this score, when it made one
                score = (
                    filtered if filtered is not None else zogy.al_score(difference, diff_model, rep)
                )
        del usable, raw_usable
        if score is not None:
            rep.stage("score", {"score": score.image})
        with _step(rep, "detect", 0.78, 0.88):
            shared = (
                "the difference holds less than half the noise its variance predicts (its sky "
                f"noise is {renorm.noise_scale:.3g} of the predicted): "
                f"{renormalise.low_scale_cause(science, warped.exposure)}"
            )
            detections = detect.detect_sources(
                difference,
                score,
                config.detection,
                rep,
                psf=diff_model,
                refuse=shared if renorm.shared_noise else None,
                filtered=filtered,
            )
            del filtered
            difference = difference.replace(mask=detections.mask)
            if decorr is not None:
                # Nor its mask without the DETECTED planes (another plane).
                decorr = dataclasses.replace(decorr, difference=difference)
        # The final difference's diagnostics read its DETECTED planes, nothing of the catalog.
        with _step(rep, "diagnostics", 0.88, 0.90):
            diag = diagnostics.compute_diagnostics(
                science, warped.exposure, fit, raw_diag, difference, rep, renorm.variance_factor
            )
            # its residuals by the difference were rescaled into diag: not kept twice
            # (GOTO: 1.4 million float32, 6 MB, through the measurement)
            del raw_diag
        with _step(rep, "measure", 0.90, 1.0):
            diasources = measure.measure_sources(
                difference,
                science,
                warped.exposure,
                score,
                detections,
                diff_model,
                sci_model,
                with_exposure_id(config, science, warped.exposure),
                rep,
                backgrounds[0].image,
                source_noise.InputNoise.of(fit, science, warped.exposure, decorr),
            )

        notes.extend(warped.warnings)
        notes.extend(cands.warnings)  # before the kernel's: a star list's stars all rejected
        notes.extend(psf.coarse_stack_note(sci_psf))
        notes.extend(fit.warnings)
        notes.extend(renorm.warnings)
        notes.extend(detections.warnings)
        return SubtractionResult(
            config=config,
            science=science,
            template=warped,
            science_psf=sci_psf,
            template_psf=tmpl_psf,
            kernel=fit,
            subtraction=products,
            difference=difference,
            decorrelation=decorr,
            renormalisation=renorm,
            score=score,
            detections=detections,
            diasources=diasources,
            catalog_psf=diff_model,
            diagnostics=diag,
            timings=dict(rep.timings),
            warnings=tuple(notes),
        )
