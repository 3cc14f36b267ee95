"""The one empirical renormalisation of the difference's noise, measured on sky only.

The difference's variance plane is propagated from the inputs' variance planes. It
misses what they miss: noise shared by the two images (coadds built from common
frames: the GOTO pair's difference has 0.58 of its predicted per-pixel noise) and
noise correlated between neighbouring pixels (resampled stacks: a PSF flux on the
DECam demo stacks scatters 1.7 times its per-pixel prediction). Detection
thresholds, PSF-flux errors and S/N all live at the scale of the PSF, so the one
correction is measured there: the difference is filtered with its PSF and divided
by the filtered predicted noise (:func:`diffviewer.engine.zogy.al_score`, a point
source's PSF S/N at every pixel), and the robust standard deviation of that image
over *sky* is the noise scale ``s``. The variance plane is multiplied by ``s^2``
once; nothing downstream rescales again. ZOGY's score predicts its noise from the
inputs' variance planes, which the scale says are off by ``s`` at PSF scale, so it is
divided by the same ``s`` (:meth:`Renormalisation.scaled`): the same correction of the
same planes, not a second one. Its robust noise then follows the filtered difference's
(GOTO 1.029 against 1.034, pyDIA 0060 1.03 against 1.09, a synthetic pair 1.006 both;
0.76 and 0.84 before on the first two), so a source's ``score_peak`` and ``snr`` agree.

Sky is every usable pixel farther (in x or y) than the kernel's half width (of the
square holding 99 % of its absolute sum) plus two PSF FWHM from
any pixel where the science or the template shows a source (a 5 x 5 box mean above
three times that mean's robust spread: :func:`~diffviewer.engine.sky.input_sources`, found
once a run for the kernel fit too), so neither a star's subtraction residual nor a
transient enters the estimate; two passes of 4-sigma clipping remove what is left. The
same distance is kept from where a source could not be seen: unusable regions (on the
difference or either input) wide enough to hide one, a square of the PSF's FWHM (not a
cosmic ray or a bad column), and the array's border
(:meth:`~diffviewer.engine.sky.InputSources.sky`, :func:`hiding_width`): the sky of a
crowded field is otherwise the band along the edge of its data (the pyDIA pair 0120 -
0012 measured 0.936 there and its interior's sky 0.65 of the scaled errors; 0.631 and
0.96 now).
Where a crowded field leaves fewer than :data:`MIN_SKY_PIXELS` such pixels, the sky
steps in (:data:`SKY_STEPS`): two FWHM, then one, from every source, the kernel's reach
left to the clipping. A residual the clipping misses can only raise the scale, so a
scale measured there is an upper bound: one below 1 is applied (the errors then err
large at most), one above 1 is not (it cannot be told from the residuals: a template
moved by 15 px measured 2.3 there, and its bad subtraction would have hidden in the
variance). On the pyDIA frame 0016 (science FWHM 7.4 px, no pixel 29 px from a source)
the catalog's blank-sky PSF fluxes scattered by 0.65 of their errors; two FWHM out,
12,600 sky pixels measure 0.68.
The scale's standard error is measured on its sky (:func:`sky_scale_with_error`) and
recorded. Where the far sky leaves it above :data:`PRECISION`, the sky two FWHM from
the sources (beyond the PSF filter's reach) is measured too, and its scale used when
below 1 and more precise (:func:`sky_scale`): a field of stars 27 px apart keeps 0.5 %
of its pixels 22 px from them, and its threshold was off by up to 7 %.

A scale below :data:`MIN_NOISE_SCALE` is not applied: the difference then holds less
than a quarter of the predicted noise variance, so the two images share most of
their noise (an image subtracted from itself, or a template built from the science
frames); shrinking the variance would turn subtraction round-off into detections,
and even the propagated variance holds no noise the difference has: a kernel's
imperfect delta leaves residuals at bright stars of 5-40 sigma of it on GOTO
subtracted from itself. The variance is kept, and detection is not attempted
(``shared_noise``; :func:`diffviewer.engine.detect.detect_sources`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from diffviewer.engine.moments import adaptive_moments, shape_from_covariance
from diffviewer.engine.photometry import PsfModel, centre_psf
from diffviewer.engine.progress import Reporter
from diffviewer.engine.sky import InputSources, input_sources
from diffviewer.engine.subtract import read_only
from diffviewer.engine.zogy import ScoreResult, al_score
from diffviewer.exposure import Exposure
from diffviewer.stats import masked_sample, robust_std

#: Least number of sky pixels for a measured scale: a PSF-filtered image of FWHM 4-6 px
#: holds about one independent value per 20-40 px, so 2 500 px give the scale to ~8 %
#: (1 / sqrt(2 n_independent)), the 256 x 256 demo's ~10 000 to ~4 %.
MIN_SKY_PIXELS = 2_500

#: Reach of the PSF filter from a source, in FWHM: a Gaussian PSF is 2^-16 of its peak
#: there. (The decorrelated PSF's ringing wings hold 99 % of its absolute sum only
#: within 21 px on the demo, which would leave no sky; what they carry is clipped.)
PSF_REACH = 2.0

#: The sky's distances from the inputs' sources, tried in turn until one leaves
#: :data:`MIN_SKY_PIXELS`: (whether the kernel's half width is added, FWHM of the PSF).
SKY_STEPS = ((True, PSF_REACH), (False, PSF_REACH), (False, 1.0))

#: A noise scale below this is not applied (images sharing > 75 % of their noise variance).
MIN_NOISE_SCALE = 0.5

#: A noise scale outside this range is also written to the run's warnings.
NOTE_RANGE = (0.8, 1.25)

#: Clipping of the filtered sky values (robust sigma, two passes).
CLIP_SIGMA = 4.0

#: Most filtered sky values used (a regular subsampling).
MAX_SAMPLES = 1_000_000

#: The scale's standard error: the sky's pixels are grouped by squares of at least this
#: side (px) and of :data:`ERROR_BLOCK_FWHM` PSF FWHM, each square given to one of
#: :data:`ERROR_GROUPS` groups; the groups' scales spread by sqrt(ERROR_GROUPS) times it.
ERROR_BLOCK = 32
#: The squares' least side in PSF FWHM: several correlation lengths of the filtered noise.
ERROR_BLOCK_FWHM = 4.0
#: How many groups of squares the scale is measured on again (the error's own
#: uncertainty is about 1 / sqrt(2 (ERROR_GROUPS - 1)), 27 %).
ERROR_GROUPS = 8
#: Fewest sky pixels a group needs for the error to be measured.
ERROR_MIN_GROUP = 100

#: The scale's relative standard error above which nearer sky is tried (:func:`sky_scale`):
#: 2 % holds a 5 sigma threshold to 0.1 sigma, a tenth of a faint source's own scatter.
PRECISION = 0.02


@dataclasses.dataclass(frozen=True)
class Renormalisation:
    """What the one empirical correction of the difference's noise measured and did.

    Attributes
    ----------
    applied : bool
        Whether the variance plane was scaled.
    noise_scale : float
        Robust standard deviation, over sky, of the PSF-filtered difference in units
        of its predicted noise, before scaling (1: the variance plane is right at PSF
        scale); NaN when not measured.
    noise_scale_error : float
        Its standard error (:func:`sky_scale_with_error`): how far thresholds, S/N and flux
        errors may be off for want of sky; NaN when not measured.
    variance_factor : float
        Factor applied to the variance plane (``noise_scale**2``, or 1).
    n_sky_pixels : int
        Sky pixels the scale was measured on.
    sky_fraction : float
        Their fraction of the usable pixels.
    shared_noise : bool
        The scale is below :data:`MIN_NOISE_SCALE`: the images share most of their
        noise, so the difference has none of its own to detect against.
    reason : str
        One sentence: why it was (not) applied.
    warnings : tuple of str
        For the run's warnings (a scale far from 1, or not applied).
    sky_distance : float
        Least distance (px) of the sky pixels from the inputs' sources and from where one
        could not be seen (:data:`SKY_STEPS`; NaN when not recorded: a saved run of an
        older version).
    """

    applied: bool
    noise_scale: float
    variance_factor: float
    n_sky_pixels: int
    sky_fraction: float
    shared_noise: bool
    reason: str
    warnings: tuple[str, ...]
    sky_distance: float = float("nan")
    noise_scale_error: float = float("nan")

    def scaled(self, score: ScoreResult) -> ScoreResult:
        """A score whose noise is predicted from the same variance planes, divided by the
        noise scale when it was applied (the score is handed over:
        :meth:`~diffviewer.engine.zogy.ScoreResult.divided_by`)."""
        return score.divided_by(self.noise_scale) if self.applied else score

    def as_dict(self) -> dict[str, object]:
        """The record written to ``metadata.json`` (NaN as None)."""
        scale = _finite_or_none(self.noise_scale)
        return {
            "quantity": "variance plane of the difference, and the score's noise with it",
            "method": "robust std of the PSF-filtered difference over its predicted noise, "
            "on sky pixels away from every source of either input",
            "applied": self.applied,
            "noise_scale": scale,
            "noise_scale_error": _finite_or_none(self.noise_scale_error),
            "variance_factor": self.variance_factor,
            "n_sky_pixels": self.n_sky_pixels,
            "sky_fraction": self.sky_fraction,
            "sky_distance_px": self.sky_distance,
            "shared_noise": self.shared_noise,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, record: dict[str, object]) -> Renormalisation:
        """The inverse of :meth:`as_dict` (a saved run's record; its warnings are the run's)."""
        scale = record.get("noise_scale")
        return cls(
            applied=bool(record["applied"]),
            noise_scale=float("nan") if scale is None else float(scale),  # type: ignore[arg-type]
            variance_factor=float(record["variance_factor"]),  # type: ignore[arg-type]
            n_sky_pixels=int(record["n_sky_pixels"]),  # type: ignore[call-overload]
            sky_fraction=float(record["sky_fraction"]),  # type: ignore[arg-type]
            shared_noise=bool(record["shared_noise"]),
            reason=str(record["reason"]),
            warnings=(),
            sky_distance=float(record.get("sky_distance_px", float("nan"))),  # type: ignore[arg-type]
            noise_scale_error=_float_or_nan(record.get("noise_scale_error")),
        )


def _finite_or_none(value: float) -> float | None:
    """``value``, or None for JSON where it is not finite."""
    return float(value) if np.isfinite(value) else None


def _float_or_nan(value: object) -> float:
    """A recorded number, NaN where none was recorded (None, or absent: an older run)."""
    return float("nan") if value is None else float(value)  # type: ignore[arg-type]


def low_scale_cause(science: Exposure, template: Exposure) -> str:
    """What a noise scale below :data:`MIN_NOISE_SCALE` says of the inputs, and what to do.

    With variance planes given, the images share most of their noise. A variance
    estimated from an image (:func:`diffviewer.io.estimate_variance`) may instead
    overstate its noise: in a crowded field the clipped sky noise holds the blend of
    faint stars (pyDIA's bulge frames: 2-4.5 times the noise from pixel to pixel and
    from their gain), and a pair of them (0150 against 0060) measured 0.46.
    """
    shared = "the images share most of their noise (the same exposure, or a template made "
    shared += "from the science frames)"
    estimated = [e.source for e in (science, template) if e.variance_estimated]
    if not estimated:
        return shared
    return (
        f"{shared}, or the variance estimated from {' and '.join(estimated)} (no variance "
        "plane) overstates its noise, as the blend of faint stars in a crowded field does; "
        "give each image a variance plane (a VARIANCE, <NAME>_VAR or ERR extension, or a "
        "variance or weight file)"
    )


def _fwhm(psf: np.ndarray) -> float:
    """The FWHM (px) of a PSF image, from its adaptive moments."""
    return float(shape_from_covariance(adaptive_moments(np.asarray(psf, dtype=np.float64))[2])[0])


def sky_distance(psf: np.ndarray, kernel_half_width: int, step: int = 0) -> float:
    """The distance (px) of :data:`SKY_STEPS`'s ``step`` from every source of either
    input and every region where one could not be seen: the kernel's half width (step 0)
    plus FWHM of ``psf``."""
    with_kernel, reach = SKY_STEPS[step]
    return float(kernel_half_width * with_kernel + reach * _fwhm(psf))


def hiding_width(psf: np.ndarray) -> int:
    """The side (px, odd) of the square an unusable region must hold to hide a source: the
    PSF's FWHM, its core (:func:`~diffviewer.engine.sky.unseen`)."""
    fwhm = _fwhm(psf)
    return 2 * int(fwhm / 2.0) + 1 if np.isfinite(fwhm) else 1


def sky_near(
    difference: Exposure,
    psf: np.ndarray,
    science: Exposure,
    template: Exposure,
    kernel_half_width: int,
    sources: InputSources | None = None,
    *,
    usable: np.ndarray | None = None,
    step: int = 0,
) -> np.ndarray:
    """The sky map of :func:`renormalise`: the difference's usable pixels with finite
    values (``usable``, when the caller has ``difference.usable_pixels()`` already) that
    are usable on both inputs and farther (in x or y) than :func:`sky_distance` from
    every source of either input, from every unusable region wide enough to hide one
    (:func:`hiding_width`) and from the array's border.

    Parameters
    ----------
    sources : InputSources, optional
        The inputs' sources (:func:`~diffviewer.engine.sky.input_sources`); found when not
        given.
    step : int
        Which of :data:`SKY_STEPS` (0: the kernel's half width plus :data:`PSF_REACH`
        FWHM).

    Returns
    -------
    numpy.ndarray
        Boolean sky map.
    """
    distance = sky_distance(psf, kernel_half_width, step)
    good = difference.usable_pixels() if usable is None else usable
    good = good & np.isfinite(difference.image)
    if sources is None:
        sources = input_sources(science, template)
    return sources.sky(distance, good, hiding=hiding_width(psf))


def filtered_noise_scale(
    difference: Exposure, psf: np.ndarray | PsfModel, sky: np.ndarray, reporter: Reporter
) -> float:
    """Robust std over ``sky`` of the difference filtered by its PSF over the filtered noise.

    Returns
    -------
    float
        NaN when no sky value is left.
    """
    return sky_noise_scale(al_score(difference, psf, reporter).image, sky)


def sky_noise_scale(filtered: np.ndarray, sky: np.ndarray) -> float:
    """Robust std over ``sky`` of a PSF-filtered difference in units of its noise
    (:func:`~diffviewer.engine.zogy.al_score`), after two passes of clipping.

    Returns
    -------
    float
        NaN when no sky value is left.
    """
    return clipped_scale(masked_sample(filtered, sky, MAX_SAMPLES).astype(np.float64))


def clipped_scale(values: np.ndarray) -> float:
    """Robust std of ``values`` (1-D) after two passes of :data:`CLIP_SIGMA` clipping
    about their median (NaN when none is left)."""
    z = values
    for _ in range(2):
        if z.size == 0:
            return float("nan")
        centre = float(np.median(z))
        spread = robust_std(z, centre)
        z = z[np.abs(z - centre) < CLIP_SIGMA * max(spread, 1e-30)]
    return robust_std(z) if z.size else float("nan")


def sky_scale_with_error(filtered: np.ndarray, sky: np.ndarray, fwhm: float) -> tuple[float, float]:
    """:func:`sky_noise_scale` over ``sky``, and its standard error measured from the sky.

    The filtered noise is correlated over a few PSF widths, and the sky lies in patches
    between the sources, so neither the pixel count nor a formula for independent
    values gives the error (over 60 draws of filtered white noise, ``1.166 sqrt(A / n)``,
    ``A`` the correlation area, stated 1.4-2.5 times the scatter). The sky is cut into
    squares (:func:`block_groups`), each given to one of :data:`ERROR_GROUPS` groups; the
    scale is measured on each group, and the error is the groups' spread over
    sqrt(groups) (batch means: valid for a median, where a jackknife is not). Over 40
    draws of filtered white noise each (FWHM 3-6 px, sky in squares of 3-60 px,
    4,400-67,000 pixels) it stated 0.76-1.34 of the scatter.

    Parameters
    ----------
    filtered : numpy.ndarray
        The PSF-filtered difference in units of its noise
        (:func:`~diffviewer.engine.zogy.al_score`).
    sky : numpy.ndarray
        Boolean sky map, as :func:`sky_noise_scale` reads.
    fwhm : float
        The PSF's FWHM (px).

    Returns
    -------
    (float, float)
        The scale (as :func:`sky_noise_scale`), and its error: NaN when a group holds
        fewer than :data:`ERROR_MIN_GROUP` of the values.
    """
    values = masked_sample(filtered, sky, MAX_SAMPLES).astype(np.float64)
    groups = masked_sample(block_groups(sky.shape, fwhm), sky, MAX_SAMPLES)
    scales = []
    for k in range(ERROR_GROUPS):
        mine = values[groups == k]
        if mine.size < ERROR_MIN_GROUP:
            return clipped_scale(values), float("nan")
        scales.append(clipped_scale(mine))
    return clipped_scale(values), float(np.std(scales, ddof=1) / np.sqrt(ERROR_GROUPS))


def block_groups(shape: tuple[int, int], fwhm: float) -> np.ndarray:
    """Each pixel's group (0 to :data:`ERROR_GROUPS` - 1) for the scale's error: the
    image cut into squares of :data:`ERROR_BLOCK` px and at least
    :data:`ERROR_BLOCK_FWHM` FWHM, dealt to the groups in a fixed random order (int8)."""
    block = max(ERROR_BLOCK, int(np.ceil(ERROR_BLOCK_FWHM * fwhm)))
    rows, columns = -(-shape[0] // block), -(-shape[1] // block)
    order = np.random.default_rng(0).permutation(rows * columns) % ERROR_GROUPS
    squares = order.astype(np.int8).reshape(rows, columns)
    return np.repeat(np.repeat(squares, block, axis=0), block, axis=1)[: shape[0], : shape[1]]


def _farther_text(farther: SkyScale | None) -> str:
    """What the farther sky measured, when the nearer one's scale replaced it."""
    if farther is None:
        return ""
    return (
        f"; the sky {farther.distance:.1f} px from them ({farther.n_sky} pixels) measured "
        f"{_scale_text(farther.scale, farther.error)}, and nearer, where residuals could "
        "only raise it, the scale is below 1 and more precise"
    )


def _scale_text(scale: float, error: float) -> str:
    """The scale with its standard error, in words."""
    if not np.isfinite(error):
        return (
            f"noise scale {scale:.3g} (its standard error not measured: fewer than "
            f"{ERROR_MIN_GROUP} sky pixels in one of its {ERROR_GROUPS} groups)"
        )
    return (
        f"noise scale {scale:.3g} +- {error:.2g} (its standard error on that sky: thresholds, "
        f"S/N and flux errors are uncertain by {error / scale:.1%})"
    )


@dataclasses.dataclass(frozen=True)
class SkyScale:
    """The noise scale measured on one of :data:`SKY_STEPS`' skies.

    Attributes
    ----------
    step : int
        Which sky (0: the farthest from the sources).
    n_sky : int
        Its pixels.
    distance : float
        Its least distance (px) from the inputs' sources and unseen regions.
    scale, error : float
        :func:`sky_scale_with_error` on it (NaN: fewer than :data:`MIN_SKY_PIXELS`
        pixels, not measured).
    """

    step: int
    n_sky: int
    distance: float
    scale: float = float("nan")
    error: float = float("nan")

    @property
    def measured(self) -> bool:
        """Whether the sky held :data:`MIN_SKY_PIXELS` pixels and was measured."""
        return self.n_sky >= MIN_SKY_PIXELS

    @property
    def precise(self) -> bool:
        """Whether the scale is known to :data:`PRECISION` of itself."""
        return bool(self.error <= PRECISION * self.scale)


def beyond_the_filter(step: int) -> bool:
    """Whether sky ``step`` lies beyond the PSF filter's reach (:data:`PSF_REACH`) from
    every source: nearer, the faint sources' wings enter the filtered values (on the
    crowded pyDIA pair 0120 - 0012, 1 FWHM from them, 0.668 against 0.631 at 2 FWHM)."""
    return SKY_STEPS[step][1] >= PSF_REACH


def _replaces(nearer: SkyScale, farther: SkyScale) -> bool:
    """Whether a nearer sky's scale replaces a farther one's: below 1, and more precise."""
    return bool(
        nearer.scale < 1.0 and np.isfinite(nearer.error) and not nearer.error >= farther.error
    )


def sky_scale(measure: Callable[[int], SkyScale]) -> tuple[SkyScale, SkyScale | None]:
    """Which sky's scale to use, and the farther one it replaced.

    The farthest sky that holds :data:`MIN_SKY_PIXELS` pixels is measured first. When
    its scale is known to better than :data:`PRECISION`, it is used. Otherwise nearer
    sky, still beyond the PSF filter's reach (:func:`beyond_the_filter`), is measured:
    the sources' residuals can only raise a scale measured nearer them, so a nearer
    scale below 1 that is more precise is used in its place
    (on the 1024^2 synthetic pair of ``bench_peers_science.py``, 4,900 pixels 22 px from
    every source gave 0.883-1.002 over six draws, +-0.05 to 0.11; 229,000 pixels 9 px
    from them 0.925-0.930 +- 0.006, where the whole sky of each draw reads 0.935 +-
    0.002). A nearer scale above 1 is never used: there a residual cannot be told from
    noise.

    Parameters
    ----------
    measure : callable
        ``measure(step)``: the :class:`SkyScale` of sky ``step``.

    Returns
    -------
    (SkyScale, SkyScale or None)
        The measurement used (the nearest one when no sky held enough pixels, unmeasured)
        and the farther one it replaced (None when it is the first measured).
    """
    first: SkyScale | None = None
    tried: list[SkyScale] = []
    for step in range(len(SKY_STEPS)):
        if first is not None and not beyond_the_filter(step):
            break
        tried.append(here := measure(step))
        if not here.measured:
            continue
        if first is None:
            if here.precise:
                return here, None
            first = here
        elif _replaces(here, first):
            return here, first
    return (first, None) if first is not None else (tried[-1], None)


def renormalise(
    difference: Exposure,
    psf: np.ndarray | PsfModel,
    science: Exposure,
    template: Exposure,
    kernel_half_width: int,
    reporter: Reporter,
    *,
    enabled: bool = True,
    sources: InputSources | None = None,
) -> tuple[Exposure, Renormalisation, ScoreResult | None]:
    """Measure the difference's noise scale on sky and apply it once to its variance.

    Parameters
    ----------
    difference : Exposure
        The (decorrelated) difference.
    psf : numpy.ndarray or PsfModel
        Its PSF, or its model over the image (the catalog's, which the filtering follows).
    science, template : Exposure
        The inputs on its grid (to find their sources when ``sources`` is not given).
    kernel_half_width : int
        Half width (px) of the matching kernel's footprint: how far a star's residual
        reaches (:func:`diffviewer.engine.subtract.footprint_half_width`).
    reporter : Reporter
        Progress and cancellation.
    enabled : bool
        Apply the scale (``DecorrelationConfig.scale_variance``); it is measured and
        reported either way.
    sources : InputSources, optional
        The inputs' sources (:func:`~diffviewer.engine.sky.input_sources`, made once a
        run); found when not given.

    Returns
    -------
    (Exposure, Renormalisation, ScoreResult or None)
        The difference with its variance scaled (or unchanged), the record, and that
        difference filtered by its PSF over its (scaled) filtered noise
        (:func:`~diffviewer.engine.zogy.al_score`: what detection searches, computed
        once here), or None when too few sky pixels left the scale unmeasured.
    """
    usable_map = difference.usable_pixels()
    sources = sources or input_sources(science, template)
    centred = centre_psf(psf)
    fwhm = _fwhm(centred)
    # The filtering checks for cancellation but does not report (its fractions would run
    # the step's progress back); made when a sky first holds enough pixels.
    made: list[ScoreResult] = []

    def measure(step: int) -> SkyScale:
        sky = sky_near(
            difference, centred, science, template, kernel_half_width, sources,
            usable=usable_map, step=step,
        )  # fmt: skip
        found = SkyScale(step, int(sky.sum()), sky_distance(centred, kernel_half_width, step))
        if not found.measured:
            return found
        if not made:
            made.append(al_score(difference, psf, Reporter(token=reporter.token)))
        scale, error = sky_scale_with_error(made[0].image, sky, fwhm)
        return dataclasses.replace(found, scale=scale, error=error)

    chosen, farther = sky_scale(measure)
    n_sky, distance, scale, error = chosen.n_sky, chosen.distance, chosen.scale, chosen.error
    usable = int(np.count_nonzero(usable_map))
    fraction = n_sky / usable if usable else 0.0
    reporter.update(0.3)
    if not chosen.measured:
        reason = (
            f"not applied: only {n_sky} sky pixels {distance:.1f} px or more from the "
            f"inputs' sources and unseen regions (the data's edge, wide masks; at least "
            f"{MIN_SKY_PIXELS} needed); the propagated variance is used"
        )
        return (
            difference,
            Renormalisation(False, float("nan"), 1.0, n_sky, fraction, False, reason, (), distance),
            None,
        )
    filtered = made[0]
    step = chosen.step
    reporter.update(0.9)
    notes: list[str] = []
    if step > 0 and scale > 1.0:
        reason = (
            f"not applied: too few pixels lie {sky_distance(centred, kernel_half_width):.1f} "
            f"px from the inputs' sources and unseen regions (the data's edge, wide masks), "
            f"and the sky {distance:.1f} px from them measures "
            f"{scale:.3g}, which the sources' residuals can raise: only a scale below 1 is "
            "taken from it; the propagated variance is used"
        )
        record = Renormalisation(
            False, float(scale), 1.0, n_sky, fraction, False, reason, (), distance, error
        )
        return difference, record, filtered
    if not (np.isfinite(scale) and scale >= MIN_NOISE_SCALE):
        reason = (
            f"not applied: the difference's sky noise is {scale:.3g} of what its variance "
            f"predicts at PSF scale, below {MIN_NOISE_SCALE}: {low_scale_cause(science, template)}"
        )
        notes.append(f"noise renormalisation {reason}")
        record = Renormalisation(
            False,
            float(scale),
            1.0,
            n_sky,
            fraction,
            bool(np.isfinite(scale)),
            reason,
            tuple(notes),
            distance,
            error,
        )
        return difference, record, filtered
    if not enabled:
        reason = "not applied: decorrelation.scale_variance is off"
        lo, hi = NOTE_RANGE
        if not lo <= scale <= hi:
            notes.append(
                f"the difference's sky noise is {scale:.3g} of what its variance predicts at "
                "PSF scale and decorrelation.scale_variance is off: S/N and thresholds are "
                "off by that factor"
            )
        record = Renormalisation(
            False,
            float(scale),
            1.0,
            n_sky,
            fraction,
            False,
            reason,
            tuple(notes),
            distance,
            error,
        )
        return difference, record, filtered
    factor = float(scale**2)
    reason = (
        f"applied: the variance plane was scaled by {factor:.3g} so that PSF-flux errors "
        f"match the scatter of the PSF-filtered difference on {n_sky} sky pixels "
        f"{distance:.1f} px or more from the inputs' sources and unseen regions (the data's "
        f"edge, wide masks): {_scale_text(scale, error)}{_farther_text(farther)}"
    )
    lo, hi = NOTE_RANGE
    if not lo <= scale <= hi:
        notes.append(
            f"the difference's noise at PSF scale is {scale:.3g} times what the inputs' "
            f"variance planes predict (measured on {fraction:.0%} of the image, away from "
            f"sources); its variance plane was scaled by {factor:.3g}: the inputs' "
            "variances are estimated, or their noise is correlated or shared"
        )
    result = difference.replace(variance=read_only(difference.variance * np.float32(factor)))
    record = Renormalisation(
        True, float(scale), factor, n_sky, fraction, False, reason, tuple(notes), distance, error
    )
    # The filtered noise is linear in the variance: the scaled difference's filtered
    # image is this one over the scale (to float32 rounding; no second filtering).
    return result, record, record.scaled(filtered)
