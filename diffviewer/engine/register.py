"""Register the template to the science image on its stars (the seed's fitAstrometry/register).

Stars are found on both images (:mod:`~diffviewer.engine.register_stars`). Without a
usable WCS the two star lists are matched by the identity (images of one shape), then by
the translation most star pairs agree on, then by their patterns
(:mod:`~diffviewer.engine.register_guesses`: the similarity most triangles of
neighbouring stars vote for; a flip is tried as the mirrored list). A first mapping is
refined on every star it brings within the match radius of a template star: a
least-squares affine (or, with ``warp.transform_order = 2``, quadratic) fit from science
to template pixels, sigma-clipped, matched again with the fit
(:mod:`~diffviewer.engine.register_fit`). A fit is kept when its pairs are far beyond
chance (:mod:`~diffviewer.engine.register_trust`); stars on a line fix a mapping along
the line only (:mod:`~diffviewer.engine.register_line`).

With a WCS on both images the WCS mapping is checked the same way: science stars
are mapped through the WCSs and matched to template stars (a WCS off by more than the
match radius is sought by the translation the star pairs agree on after the WCS's own
rotation and scale, then by star patterns); when the star fit and the WCS mapping
differ by more than ``warp.wcs_tolerance`` px anywhere on the image, the star fit
replaces the WCS mapping and a note says so. A fit that is not trusted (its pairs may
be chance) neither confirms nor replaces a WCS: the WCS is used, and a note says it
was not confirmed.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from diffviewer.engine.peaks import Peaks
from diffviewer.engine.register_fit import (
    IMPROVEMENT_P_VALUE,
    MATCH_RADIUS,
    MIN_STARS,
    Mapping,
    Points,
    PolynomialTransform,
    StarFit,
    covered_points,
    f_tail,
    fit_transform,
    identity,
    image_grid,
    improves_on,
    jacobian,
    match_nearest,
    max_difference,
    refine,
    rms_about,
)
from diffviewer.engine.register_guesses import pattern_guesses, shift_guess
from diffviewer.engine.register_line import corrected_along_line, on_a_line, similarity_through
from diffviewer.engine.register_stars import MAX_STARS, STAR_THRESHOLD, find_stars
from diffviewer.engine.register_trust import TRUSTED_RMS, better_fit, near_footprint, trusted
from diffviewer.errors import RegistrationError
from diffviewer.exposure import Exposure

#: With fewer stars than this on one image of the same shape as the other, and no match,
#: register = 'auto' takes the images as already aligned (with a warning) rather than
#: refusing: cutouts of a few dozen pixels hold a handful of stars.
FEW_STARS = 20
#: Farthest (px) a template star may lie outside the science image's footprint under a
#: WCS mapping to vote for that mapping's translation (:func:`check_wcs_on_stars`): how
#: far off a WCS can be found.
WCS_SEARCH = 50.0
#: Template area, in science image areas, above which a failed registration's message
#: says that the science image's stars may not be among the template's listed (when
#: :data:`~diffviewer.engine.register_stars.MAX_STARS` of them are).
LARGER_AREA = 4.0


@dataclasses.dataclass(frozen=True)
class Registration:
    """How the template was put on the science grid.

    Attributes
    ----------
    method : str
        'wcs' (the WCSs, confirmed or unchecked by stars), 'wcs refined on stars',
        'stars' (pattern match, no usable WCS), 'none' (pixel grids taken as one).
    transform : PolynomialTransform or None
        Science px -> template px fitted on stars, or, for stars on a line
        (:func:`~diffviewer.engine.register_line.on_a_line`), the WCS mapping (without a
        WCS, the similarity through the pairs) corrected along the line
        (:func:`~diffviewer.engine.register_line.corrected_along_line`); None when no fit
        was made.
    n_science_stars, n_template_stars : int
        Stars found on each image.
    n_matched : int
        Matched pairs kept by the fit.
    rms : float
        Residual RMS of the matched stars (the ``n_matched`` pairs) about the mapping
        used (px); NaN without a fit.
    position_error : float
        Largest 1-sigma error (px) of a position mapped by ``transform`` (from its
        residuals and the stars' spread) over the image, or, for a WCS checked on stars,
        where the template lies on it (for stars on a line, the correction's error at the
        ends of the line); NaN without a fit.
    notes : tuple of str
        What the user should know.
    applied : bool
        Whether ``transform`` is the mapping used: False for the star fit that checked a
        WCS kept ('wcs') and for a star fit no better than one pixel grid ('stars' on
        images of one shape, :func:`register_on_stars`).
    """

    method: str
    transform: PolynomialTransform | None
    n_science_stars: int
    n_template_stars: int
    n_matched: int
    rms: float
    position_error: float = math.nan
    notes: tuple[str, ...] = ()
    applied: bool = True


def pattern_fit(
    science: np.ndarray,
    template: np.ndarray,
    order: int,
    shapes: tuple[tuple[int, int], tuple[int, int]],
    listed: np.ndarray | None = None,
    area_ratio: float = 1.0,
) -> StarFit | None:
    """The fit that star patterns lead to: each of
    :func:`~diffviewer.engine.register_guesses.pattern_guesses` refined on every star
    (:func:`~diffviewer.engine.register_fit.refine`) in turn, the first trusted
    (:func:`~diffviewer.engine.register_trust.trusted`), else the first found (None: none).

    Parameters
    ----------
    science, template : numpy.ndarray
        Star positions, ``(n, 2)`` each, brightest first
        (:func:`~diffviewer.engine.register_stars.find_stars`).
    order : int
        Order of the fitted polynomial.
    shapes : ((int, int), (int, int))
        The science and template images' shapes.
    listed : numpy.ndarray, optional
        The template stars the patterns are sought among (all of ``template`` by default).
    area_ratio : float
        The area ``listed`` covers over the science image's.

    Returns
    -------
    StarFit or None
    """
    among = template if listed is None else listed
    first = None
    for guess in pattern_guesses(science, among, shapes[0], area_ratio):
        fit = refine(science, template, guess, order)
        if trusted(fit, science, template, *shapes):
            return fit
        first = first or fit
    return first


def _what_to_try(n_sci: int, n_tmpl: int, area_ratio: float) -> str:
    """Advice for a failed star registration (``area_ratio``: the template's area over
    the science image's)."""
    larger = (
        f"the template covers {area_ratio:.0f} times the science image's area, and of its "
        f"stars only the brightest {MAX_STARS} are listed, which may leave out the science "
        "image's: crop it to the science field, or "
        if area_ratio > LARGER_AREA and n_tmpl >= MAX_STARS
        else "check that both images show the same field, "
    )
    return (
        f"{n_sci} stars were found on the science image and {n_tmpl} on the template "
        f"(at least {MIN_STARS} each, {STAR_THRESHOLD:g} sigma peaks); {larger}give both a "
        "celestial WCS, or, when the images are already on one pixel grid, set "
        "warp.register = none"
    )


def _area_ratio(science: Exposure, template: Exposure) -> float:
    """The template's area in pixels over the science image's."""
    return float(np.prod(template.shape)) / float(np.prod(science.shape))


def register_on_stars(
    science: Exposure,
    template: Exposure,
    order: int,
    guess: Mapping | None = None,
    science_peaks: Peaks | None = None,
    template_peaks: Peaks | None = None,
    linear: np.ndarray | None = None,
) -> Registration:
    """Find the science -> template pixel transform from the stars alone.

    Parameters
    ----------
    science, template : Exposure
        The two images (no WCS needed).
    order : int
        Order of the fitted polynomial (1 affine, 2 quadratic).
    guess : callable, optional
        A first mapping to try (e.g. the identity for images of one shape), beside the
        translation most star pairs agree on
        (:func:`~diffviewer.engine.register_guesses.shift_guess`): of the fits they lead
        to, the trusted one (:func:`~diffviewer.engine.register_trust.trusted`) on more
        pairs is kept; then star patterns (:func:`pattern_fit`) are tried, also when that
        fit is trusted for its pairs' number only. Stars on a line give a similarity
        (:func:`_stars_on_a_line`).
    science_peaks, template_peaks : Peaks, optional
        Each image's peaks, when found already
        (:func:`~diffviewer.engine.register_stars.find_stars`).
    linear : numpy.ndarray, optional
        The 2x2 linear part the translation is sought after
        (:func:`~diffviewer.engine.register_guesses.shift_guess`).

    Returns
    -------
    Registration
        Method 'stars'.

    Raises
    ------
    RegistrationError
        When too few stars are found or their patterns do not match (the message
        says how many stars each image had and what to try).
    """
    sci, tmpl = find_stars(science, peaks=science_peaks), find_stars(template, peaks=template_peaks)
    n_sci, n_tmpl = len(sci), len(tmpl)
    area_ratio = _area_ratio(science, template)
    advice = _what_to_try(n_sci, n_tmpl, area_ratio)
    if min(n_sci, n_tmpl) < MIN_STARS:
        raise RegistrationError(
            f"cannot register template {template.source} to science {science.source} on "
            f"stars: too few stars; {advice}",
            n_sci,
            n_tmpl,
        )
    shapes = (science.shape, template.shape)
    fit = refine(sci, tmpl, guess, order) if guess is not None else None
    # The translation most pairs agree on is tried too, and the fit on more pairs kept:
    # on a strip 41 px across, the identity 3 px off paired 22 of 49 stars at 0.33 px
    # into a fit 0.94 px wrong and trusted, where the translation pairs 39 at 0.08 px.
    shifted = refine(sci, tmpl, shift_guess(sci, tmpl, linear, area_ratio), order)
    fit = better_fit(fit, shifted, lambda f: trusted(f, sci, tmpl, *shapes))
    if fit is None or not trusted(fit, sci, tmpl, *shapes) or fit.rms > TRUSTED_RMS:
        # A fit trusted for its many pairs alone may hold them in a band of a rotated
        # field, bent to them (a third of a field turned 4 degrees: 19 pairs at 1.2 px,
        # 6 px off, where its patterns pair 39 at 0.13 px): patterns are tried too.
        patterned = pattern_fit(sci, tmpl, order, shapes, area_ratio=area_ratio)
        fit = better_fit(fit, patterned, lambda f: trusted(f, sci, tmpl, *shapes))
    if fit is None:
        raise RegistrationError(
            f"cannot register template {template.source} to science {science.source}: the "
            f"star patterns do not match; {advice}",
            n_sci,
            n_tmpl,
        )
    if on_a_line(fit):
        return _stars_on_a_line(fit, (sci, tmpl), shapes, order, (n_sci, n_tmpl))
    grid = image_grid(science.shape)
    error = fit.position_error(grid)
    if science.shape == template.shape and not improves_on(fit, identity):
        note = (
            f"the star fit departs from one pixel grid by up to "
            f"{max_difference(fit.transform, identity, grid):.2f} px over the image, but "
            f"fits its {fit.n_matched} stars no better than one grid does: the template was "
            "not resampled"
        )
        return Registration(
            "stars",
            fit.transform,
            n_sci,
            n_tmpl,
            fit.n_matched,
            rms_about(fit, identity),
            error,
            (note,),
            applied=False,
        )
    return Registration("stars", fit.transform, n_sci, n_tmpl, fit.n_matched, fit.rms, error)


def _stars_on_a_line(
    fit: StarFit,
    stars: tuple[np.ndarray, np.ndarray],
    shapes: tuple[tuple[int, int], tuple[int, int]],
    order: int,
    counts: tuple[int, int],
) -> Registration:
    """:func:`register_on_stars` for stars on a line
    (:func:`~diffviewer.engine.register_line.on_a_line`), without a WCS.

    A line of stars fixes a shift, and a rotation and a scale along it (with order 2 a bend
    along it), which a similarity carries across; an affine fit's terms across the line
    follow the centroids' scatter (7-8 px off across 24 px strips). Its mirror image across
    the line fits the stars as well but for their spread across it: it is taken only when it
    fits them significantly better (an F-test at
    :data:`~diffviewer.engine.register_fit.IMPROVEMENT_P_VALUE` on the same pairs), and said
    when it cannot be told. The model is made again on every star it pairs (a first guess
    may pair a part of the line only: 25 of 86 stars on a 27 x 1381 strip, 1.9 px off at its
    end). Frames of one shape keep one grid unless the model maps the stars significantly
    better (the same F-test, as :func:`~diffviewer.engine.register_fit.improves_on`).

    Parameters
    ----------
    fit : StarFit
        The trusted fit, its stars on a line.
    stars : (numpy.ndarray, numpy.ndarray)
        The science and template star lists (:func:`~diffviewer.engine.register_stars.find_stars`).
    shapes : ((int, int), (int, int))
        The science and template images' shapes.
    order : int
        Order of the transform returned.
    counts : (int, int)
        Stars found on each image.

    Returns
    -------
    Registration
    """
    science, template = stars
    n_sci, n_tmpl = counts
    tiny = 1e-300  # for noise-free positions
    seen, mirrored = (
        corrected_along_line(fit, similarity_through(fit, flip), shapes[0], order)
        for flip in (1.0, -1.0)
    )
    dof = 2 * fit.n_matched - seen.parameters
    flip, notes = 1.0, []
    if dof > 0:
        ratio = max(seen.residuals, tiny) / max(mirrored.residuals, tiny)
        if f_tail(ratio, dof, dof) < IMPROVEMENT_P_VALUE:
            flip = -1.0
        elif f_tail(1.0 / ratio, dof, dof) >= IMPROVEMENT_P_VALUE:
            notes.append(
                f"the {fit.n_matched} stars matched lie on a line, which its mirror image "
                "across the line fits as well: the template was taken as not mirrored"
            )
    model = (seen, mirrored)[flip < 0]
    si, ti = match_nearest(science, template, model.moved, MATCH_RADIUS)
    if len(si) >= MIN_STARS:
        fit = fit_transform(science[si], template[ti], 1)
        model = corrected_along_line(fit, similarity_through(fit, flip), shapes[0], order)
    dof = 2 * fit.n_matched - model.parameters
    if shapes[0] == shapes[1] and dof > 0:
        about_grid = float(np.sum((fit.target - fit.source) ** 2))
        ours = max(model.residuals, tiny)
        statistic = (about_grid - ours) / model.parameters / (ours / dof)
        if f_tail(statistic, model.parameters, dof) >= IMPROVEMENT_P_VALUE:
            departs = max_difference(model.moved, identity, image_grid(shapes[0]))
            notes.append(
                f"the {fit.n_matched} stars matched lie on a line; moved and stretched along "
                f"it as they agree, the mapping departs from one pixel grid by up to "
                f"{departs:.2f} px over the image, but fits them no better than one grid "
                "does: the template was not resampled"
            )
            kept = rms_about(fit, identity)
            return Registration(
                "stars", model.moved, n_sci, n_tmpl, fit.n_matched, kept, model.error,
                tuple(notes), applied=False,
            )  # fmt: skip
    rms = rms_about(fit, model.moved)
    return Registration(
        "stars", model.moved, n_sci, n_tmpl, fit.n_matched, rms, model.error, tuple(notes)
    )


def check_wcs_on_stars(
    science: Exposure,
    template: Exposure,
    wcs_mapping: Mapping,
    order: int,
    tolerance: float,
    science_peaks: Peaks | None = None,
    template_peaks: Peaks | None = None,
) -> Registration:
    """Check the WCS mapping on matched stars; replace it by the star fit when they disagree.

    Parameters
    ----------
    science, template : Exposure
        The two images with celestial WCSs.
    wcs_mapping : callable
        Science px -> template px through the two WCSs.
    order : int
        Order of the star fit.
    tolerance : float
        Largest disagreement (px) between the WCS mapping and the star fit where the
        template lies on the science image
        (:func:`~diffviewer.engine.register_fit.covered_points`), beyond three times the
        fit's own error there, for which the WCS mapping is kept. It is kept as well when
        the fit does not map the stars significantly better
        (:func:`~diffviewer.engine.register_fit.improves_on`). Stars on a line
        (:func:`~diffviewer.engine.register_line.on_a_line`) judge the WCS mapping corrected
        along the line instead of their fit (:func:`_along_line`).
    science_peaks, template_peaks : Peaks, optional
        Each image's peaks, when found already
        (:func:`~diffviewer.engine.register_stars.find_stars`).

    Returns
    -------
    Registration
        'wcs' (kept: confirmed by stars, or, with a note, not checked: too few stars, or no
        fit that chance cannot give) or 'wcs refined on stars' (the star fit, or, for stars
        on a line, the WCS mapping corrected along it:
        :func:`~diffviewer.engine.register_line.corrected_along_line`).
    """
    sci, tmpl = find_stars(science, peaks=science_peaks), find_stars(template, peaks=template_peaks)
    n_sci, n_tmpl = len(sci), len(tmpl)
    if min(n_sci, n_tmpl) < MIN_STARS:
        note = (
            f"the WCS mapping was not checked on stars ({n_sci} on the science image, "
            f"{n_tmpl} on the template; {MIN_STARS} needed)"
        )
        return Registration("wcs", None, n_sci, n_tmpl, 0, math.nan, notes=(note,))
    fit = _wcs_star_fit(sci, tmpl, wcs_mapping, order, science.shape, template.shape)
    if fit is None or not trusted(fit, sci, tmpl, science.shape, template.shape):
        found = (
            "no star pairs"
            if fit is None
            else (f"{fit.n_matched} star pairs at {fit.rms:.2f} px RMS, which chance can give")
        )
        note = (
            f"the WCS mapping was used unchecked: neither it, nor the translation the stars "
            f"agree on, nor star patterns paired the stars ({n_sci} on the science image, "
            f"{n_tmpl} on the template: {found}); look at the difference for dipoles at "
            "every star, and set warp.register = stars when the WCSs are wrong"
        )
        return Registration("wcs", None, n_sci, n_tmpl, 0, math.nan, notes=(note,))
    # Judged where the template (or this piece of it) lies on the science image: a fit on
    # a narrow piece's stars, extrapolated across the rest of the image, is not.
    covered = covered_points(science.shape, wcs_mapping, template.shape)
    if on_a_line(fit):
        return _along_line(
            fit, wcs_mapping, science.shape, order, covered, tolerance, n_sci, n_tmpl
        )
    error = fit.position_error(covered)
    offset = max_difference(fit.transform, wcs_mapping, covered)
    if offset <= tolerance + 3.0 * error or not improves_on(fit, wcs_mapping):
        rms = rms_about(fit, wcs_mapping)
        return Registration(
            "wcs", fit.transform, n_sci, n_tmpl, fit.n_matched, rms, error, applied=False
        )
    note = (
        f"the WCSs disagree with {fit.n_matched} matched stars by up to {offset:.2f} px "
        f"(warp.wcs_tolerance = {tolerance:g} px, star fit uncertain by {error:.2f} px): the "
        f"template was registered on the stars instead (residual RMS {fit.rms:.3f} px)"
    )
    return Registration(
        "wcs refined on stars",
        fit.transform,
        n_sci,
        n_tmpl,
        fit.n_matched,
        fit.rms,
        error,
        (note,),
    )


def _along_line(
    fit: StarFit,
    wcs_mapping: Mapping,
    shape: tuple[int, int],
    order: int,
    covered: Points,
    tolerance: float,
    n_sci: int,
    n_tmpl: int,
) -> Registration:
    """:func:`check_wcs_on_stars` for stars on a line
    (:func:`~diffviewer.engine.register_line.on_a_line`): the WCS mapping corrected by what
    such stars fix (:func:`~diffviewer.engine.register_line.corrected_along_line`) replaces
    it where that correction exceeds ``tolerance`` and three of its errors where the
    template lies."""
    # the correction's own size is judged, not the polynomial's fit to a WCS's distortion
    line = corrected_along_line(fit, wcs_mapping, shape, order)
    moved, error = line.moved, line.error
    offset = max_difference(moved, line.as_polynomial, covered)
    if offset <= tolerance + 3.0 * error:
        kept = rms_about(fit, wcs_mapping)
        return Registration("wcs", moved, n_sci, n_tmpl, fit.n_matched, kept, error, applied=False)
    rms = rms_about(fit, moved)
    note = (
        f"the WCSs disagree with {fit.n_matched} matched stars on a line by up to "
        f"{offset:.2f} px (warp.wcs_tolerance = {tolerance:g} px): the WCS mapping was "
        f"moved and stretched along the line as the stars agree, its shape across the line "
        f"kept (uncertain by {error:.2f} px; residual RMS {rms:.3f} px)"
    )
    return Registration(
        "wcs refined on stars", moved, n_sci, n_tmpl, fit.n_matched, rms, error, (note,)
    )


def _wcs_star_fit(
    science: np.ndarray,
    template: np.ndarray,
    wcs_mapping: Mapping,
    order: int,
    science_shape: tuple[int, int],
    template_shape: tuple[int, int],
) -> StarFit | None:
    """The star fit that checks a WCS mapping: from the WCS mapping itself; when that
    fit is not trusted (the WCSs off by more than the match radius), from the
    translation the stars agree on after the WCS's rotation and scale, then from star
    patterns, both among the template stars within :data:`WCS_SEARCH` px of the science
    footprint (a template many times the science image's area holds mostly stars the
    science image does not). The first trusted fit, else the last one found (None:
    none)."""
    fit = refine(science, template, wcs_mapping, order)
    if trusted(fit, science, template, science_shape, template_shape):
        return fit
    near = template[near_footprint(template, wcs_mapping, science_shape, WCS_SEARCH)]
    if len(near) < MIN_STARS:
        near = template
    linear = jacobian(wcs_mapping, science_shape)
    voted = refine(science, template, shift_guess(science, near, linear), order)
    if trusted(voted, science, template, science_shape, template_shape):
        return voted
    fit = voted or fit
    shapes = (science_shape, template_shape)
    return pattern_fit(science, template, order, shapes, listed=near) or fit
