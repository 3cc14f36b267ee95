"""Configuration: one frozen dataclass per engine step, nested in :class:`SubtractionConfig`.

Every field carries its documentation, unit and limits in ``metadata`` (built by
:func:`param`); the values are validated on construction, and the GUI's parameter
panel is generated from the same metadata. Configs are saved and loaded as TOML,
never by executing Python.
"""

from __future__ import annotations

import dataclasses
import decimal
import difflib
import hashlib
import math
import shlex
import sys
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

from diffviewer.errors import ConfigError

T = TypeVar("T")


def param(
    default: Any,
    doc: str,
    *,
    unit: str = "",
    minimum: float | None = None,
    maximum: float | None = None,
    choices: Sequence[str] | None = None,
    odd: bool = False,
    special: str | None = None,
) -> Any:
    """Declare a config field with its documentation and limits.

    Parameters
    ----------
    default : Any
        Default value (immutable: numbers, strings, bools or tuples).
    doc : str
        One-sentence description shown as a tooltip and in the TOML comments.
    unit : str, optional
        Unit of the value ("px", "sigma", "" for dimensionless).
    minimum, maximum : float, optional
        Inclusive limits for numbers (applied to every element of a tuple).
    choices : sequence of str, optional
        Allowed values of a string field.
    odd : bool, optional
        Whether an integer field takes odd values only (a kernel's side: it has a centre
        pixel); the GUI steps it by 2.
    special : str, optional
        What the GUI's editor shows in place of the field's minimum, where that value asks
        the engine to choose (Qt's special value text: ``"from the pair"``).

    Returns
    -------
    dataclasses.Field
        A field for a frozen config dataclass.
    """
    meta = {
        "doc": doc,
        "unit": unit,
        "min": minimum,
        "max": maximum,
        "choices": tuple(choices) if choices else None,
        "odd": odd,
        "special": special,
    }
    return dataclasses.field(default=default, metadata=meta)


#: What is said of a float literal too large for a float.
_OVERFLOWS = "overflows a float (the largest is about 1.8e308); give a finite number"
#: What is said of a nonzero float literal too small for a float's full precision.
_UNDERFLOWS = (
    "underflows a float (below about 2.2e-308 a float loses digits, and below about "
    "4.9e-324 it is 0.0); give 0, or a number of magnitude at least 2.2e-308"
)


class OutOfRangeFloat(float):
    """A TOML float literal out of a float's range, with its spelling and what is wrong:
    ``1e400`` (read as infinity) overflows; ``1e-400`` (read as 0.0) and ``1e-320`` (a
    subnormal, most of its digits lost) underflow.

    What :func:`read_float` reads such a literal as (in a config file, a ``--set`` and the
    GUI's parameter panel): a float like any other to the type checks, spelt as written in
    their messages (:func:`toml_text`), and refused for a float field with its ``problem``
    (:func:`_check_scalar`).
    """

    text: str
    problem: str

    def __new__(cls, text: str, problem: str) -> OutOfRangeFloat:
        value = super().__new__(cls, text)
        value.text = text
        value.problem = problem
        return value


def read_float(text: str) -> float:
    """A number written as text, read as a config reads a float: the reader of a float
    literal of a config file and a ``--set`` (tomllib's ``parse_float``), and of a number
    typed in the GUI's parameter panel, so the panel refuses what they refuse.

    Parameters
    ----------
    text : str
        The number as written (``0.5``, ``5e-05``, ``1e-400``).

    Returns
    -------
    float
        The number; one out of a float's range (an overflowing one, and a nonzero one read
        as 0.0 or as a subnormal) as an :class:`OutOfRangeFloat` keeping its spelling,
        which the config's validation refuses naming the field and the number as written.

    Raises
    ------
    ValueError
        When the text is not a number.
    """
    value = float(text)
    if math.isinf(value) and "inf" not in text.lower():
        return OutOfRangeFloat(text, _OVERFLOWS)
    mantissa = text.lower().partition("e")[0]
    if abs(value) < sys.float_info.min and any(d in "123456789" for d in mantissa):
        return OutOfRangeFloat(text, _UNDERFLOWS)
    return value


def _loads_toml(text: str) -> dict[str, Any]:
    """TOML text as tables (``tomllib.loads``), a float out of a float's range keeping its
    spelling.

    Parameters
    ----------
    text : str
        TOML text.

    Returns
    -------
    dict

    Raises
    ------
    tomllib.TOMLDecodeError
        When the text is not TOML.
    """
    return tomllib.loads(text, parse_float=read_float)


def toml_text(value: Any) -> str:
    """A config value as TOML spells it, for messages: ``true``, ``"al"``, ``[4, 2, 2]``,
    ``{a = 1}``, ``2024-01-01``; a float literal out of a float's range as it was written
    (``1e400``, ``1e-400``: :class:`OutOfRangeFloat`). Every message that shows a config
    value (of a file, a ``--set`` or a rule between fields) shows it so.

    Parameters
    ----------
    value : Any
        A value read from TOML, or a config field's value.

    Returns
    -------
    str
    """
    if isinstance(value, OutOfRangeFloat):
        return value.text
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {toml_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_text(v) for v in value) + "]"
    try:
        return tomli_w.dumps({"v": value}).partition(" = ")[2].strip()
    except TypeError:  # no TOML value (a caller's None): as Python writes it
        return str(value)


def _toml_key(key: str) -> str:
    """A key of an inline table: bare when TOML allows it, else quoted."""
    bare = key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)
    return key if bare else toml_text(key)


def _check_scalar(head: str, value: Any, kind: type, meta: Mapping[str, Any]) -> Any:
    """Validate and coerce one scalar value against its declared type and limits.

    ``head`` names the field and the value (``kernel.spatial_order = 9``), which every
    message starts with.
    """
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{head}: expected true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{head}: expected a whole number")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{head}: expected a number")
        if isinstance(value, OutOfRangeFloat):
            raise ConfigError(f"{head} {value.problem}")
        try:
            value = float(value)
        except OverflowError:  # a whole number of 309 digits or more
            raise ConfigError(f"{head} {_OVERFLOWS}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{head}: expected a finite number")
    elif kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{head}: expected a string")
        choices = meta.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{head}: choose one of {', '.join(choices)}")
        return value
    lo, hi = meta.get("min"), meta.get("max")
    unit = f" {meta['unit']}" if meta.get("unit") else ""
    if lo is not None and value < lo:
        raise ConfigError(f"{head}{unit} is below its minimum {lo}{unit}")
    if hi is not None and value > hi:
        raise ConfigError(f"{head}{unit} is above its maximum {hi}{unit}")
    if meta.get("odd") and value % 2 == 0:
        raise ConfigError(f"{head}{unit} must be odd")
    return value


def _validate_fields(obj: Any) -> None:
    """Type-check, coerce and range-check every field of a config dataclass in place."""
    section = getattr(obj, "SECTION", type(obj).__name__)
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        kind = hints[f.name]
        value = getattr(obj, f.name)
        head = f"{section}.{f.name} = {toml_text(value)}"
        origin = typing.get_origin(kind)
        if origin is tuple:
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise ConfigError(f"{head}: expected a list")
            elem = typing.get_args(kind)[0]
            value = tuple(
                _check_scalar(f"{head}: item {toml_text(v)}", v, elem, f.metadata) for v in value
            )
        elif origin in (types.UnionType, typing.Union):
            continue
        else:
            value = _check_scalar(head, value, kind, f.metadata)
        object.__setattr__(obj, f.name, value)


@dataclasses.dataclass(frozen=True)
class WarpConfig:
    """Bringing the template onto the science pixel grid (the seed's warp step)."""

    SECTION = "warp"
    required_template_fraction: float = param(
        0.1,
        "Least fraction of science pixels the warped template must cover with good data "
        "(the seed's requiredTemplateFraction); below it the run stops with NoWorkFound.",
        minimum=0.0,
        maximum=1.0,
    )
    grid_tolerance: float = param(
        0.01,
        "Largest pixel offset between the two grids, over the image, for which warping is skipped.",
        unit="px",
        minimum=0.0,
        maximum=10.0,
    )
    interpolation: str = param(
        "bilinear",
        "Interpolation used to warp the template.",
        choices=("nearest-neighbor", "bilinear", "biquadratic", "bicubic"),
    )
    register: str = param(
        "auto",
        "How the template is registered to the science image: 'wcs' (the two WCSs), "
        "'stars' (star patterns, no WCS needed), 'none' (the pixel grids are taken as one), "
        "'auto' (the WCSs checked and, where they disagree, refined on stars; star patterns "
        "without a usable WCS on both).",
        choices=("auto", "wcs", "stars", "none"),
    )
    wcs_tolerance: float = param(
        0.3,
        "Largest disagreement, where the template (or piece) lies on the science image, "
        "between the WCS mapping and the fit on matched stars, beyond three times the fit's "
        "own error, for which register = 'auto' keeps the WCS mapping (the seed's "
        "fitAstrometry); it is kept as well when the fit does not map the stars "
        "significantly better. Stars on a line (a narrow strip) fit only a correction of "
        "the WCS mapping along it.",
        unit="px",
        minimum=0.01,
        maximum=100.0,
    )
    transform_order: int = param(
        1,
        "Order of the polynomial fitted to matched stars (1 affine, 2 quadratic).",
        minimum=1,
        maximum=2,
    )

    def __post_init__(self) -> None:
        _validate_fields(self)


@dataclasses.dataclass(frozen=True)
class CandidatesConfig:
    """Selection of the stars used to fit the PSF-matching kernel (the seed's kernel sources)."""

    SECTION = "candidates"
    detect_threshold: float = param(
        10.0,
        "Detection threshold on the science image for candidate stars.",
        unit="sigma",
        minimum=3.0,
        maximum=1000.0,
    )
    snr_min: float = param(
        10.0, "Least S/N of a kernel candidate.", unit="sigma", minimum=1.0, maximum=1e5
    )
    snr_max: float = param(
        500.0,
        "Largest S/N of a kernel candidate (brighter stars risk non-linearity).",
        unit="sigma",
        minimum=1.0,
        maximum=1e7,
    )
    isolation_radius: float = param(
        0.5,
        "A candidate needs no other detection brighter than isolation_flux_ratio times its own "
        "peak within this many stamp half-widths.",
        unit="stamp",
        minimum=0.0,
        maximum=10.0,
    )
    isolation_flux_ratio: float = param(
        0.1,
        "Neighbours whose peak is below this fraction of the candidate's peak do not spoil "
        "its isolation (they are in both images and fitted with it).",
        minimum=0.0,
        maximum=1.0,
    )
    stamp_half_width: int = param(
        0,
        "Half-width of the stamp checked for masks, edges and neighbours around a candidate; "
        "0 uses the stamp the kernel fit reads (2.5 FWHM plus the kernel's half-width).",
        unit="px",
        minimum=0,
        maximum=200,
    )
    cell_size: int = param(
        128,
        "Side of the cells that spread candidates over the image.",
        unit="px",
        minimum=16,
        maximum=4096,
    )
    max_per_cell: int = param(
        3, "Most candidates kept per cell (the brightest first).", minimum=1, maximum=100
    )
    max_candidates: int = param(
        1000,
        "Most candidates in all: beyond it, each cell's brightest are kept first, then "
        "their second brightest, and so on (0 = no limit).",
        minimum=0,
        maximum=100000,
    )
    control_every: int = param(
        5,
        "Every n-th candidate is held out as a control star, never fitted (0 holds out none).",
        minimum=0,
        maximum=100,
    )
    saturation_level: float = param(
        0.0,
        "Pixel value above which a pixel is saturated; 0 uses the level found when the "
        "file was read (SATURATE or a similar header keyword, else the image's flat top "
        "or a coadd's clipped star cores), or none.",
        unit="image units",
        minimum=0.0,
    )
    source_list: str = param(
        "",
        "Optional catalog file (ECSV/CSV/FITS) with x,y or ra,dec columns "
        "of the stars to use instead of detecting them.",
    )

    def __post_init__(self) -> None:
        _validate_fields(self)
        if self.snr_max <= self.snr_min:
            raise ConfigError(
                f"candidates.snr_max = {toml_text(self.snr_max)} must exceed "
                f"candidates.snr_min = {toml_text(self.snr_min)}"
            )


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """The Alard-Lupton PSF-matching kernel, its spatial model and stamp rejection."""

    SECTION = "kernel"
    mode: str = param(
        "auto",
        "Which image is convolved: the template, the science, or auto (the one whose "
        "convolution gives the smaller expected difference noise, from the two PSF images "
        "and sky noises, never one whose PSF is the broader by more than 5 %).",
        choices=("template", "science", "auto"),
    )
    degrees: tuple[int, ...] = param(
        (6, 4, 2),
        "Polynomial degree of each Gaussian of the richest basis (one entry per Gaussian), "
        "from which the kernel stars choose (kernel.degree_steps); 6, 4, 2 as HOTPANTS "
        "(LSST's 4, 2, 2 left up to 25 % more residual at the bright stars of real pairs, "
        "benchmarks/SCIENCE.md). A kernel fitted to two PSF images alone takes at most 4, 2, 2.",
        minimum=0,
        maximum=8,
    )
    degree_steps: int = param(
        2,
        "How far below kernel.degrees the spatial fit may go: the degrees lowered by 0 to "
        "this many steps (none below 2) are compared by the held-out chi^2 of the kernel "
        "stars, as the prior's strength is, and the least wins (reported in metadata.json "
        "as kernel.degree_choice); 0 uses kernel.degrees as given.",
        minimum=0,
        maximum=8,
    )
    width_ratio: float = param(
        2.0, "Ratio between the widths of consecutive Gaussians.", minimum=1.1, maximum=5.0
    )
    min_sigma: float = param(
        0.7,
        "Smallest width of the narrowest Gaussian (HOTPANTS's narrowest; one of 0.5 px spans "
        "too few pixels for the polynomials of degree 6 it carries).",
        unit="px",
        minimum=0.1,
        maximum=20.0,
    )
    size_sigmas: float = param(
        2.5,
        "Kernel half-size in widths of the widest Gaussian.",
        unit="sigma",
        minimum=1.0,
        maximum=10.0,
    )
    min_size: int = param(
        11, "Smallest kernel side (odd).", unit="px", minimum=3, maximum=101, odd=True
    )
    max_size: int = param(
        71,
        "Largest kernel side (odd). A Moffat beta 2.5 PSF of 4 px FWHM needs ~51 px to hold "
        "99.8 % of its flux (the kernel's wing).",
        unit="px",
        minimum=3,
        maximum=151,
        odd=True,
    )
    wing: bool = param(
        True,
        "Add a wing function to the basis: the Moffat profile fitted to the target image's "
        "PSF, and size the kernel to hold 99.8 % of its flux, when at least 30 stamps are "
        "fitted (Gaussians alone cut the wings of seeing PSFs and bias the kernel sum low); "
        "with fewer, the wing the target's profile has beyond the convolved image's, its "
        "amplitude fixed by the two PSFs' fitted profiles (metadata.json says which).",
    )
    fit_region: str = param(
        "choose",
        "With the wing, the stamps' pixels the kernel is fitted on: 'whole', the wide region "
        "that constrains the wing's flux (4 FWHM, and as far as a star's model reaches); "
        "'core', its central 3 FWHM; 'choose', the one whose spatial fit best predicts the "
        "cores of the kernel stars held out (reported in metadata.json as "
        "kernel.region_choice). Without the wing the region is the 3 FWHM core.",
        choices=("choose", "whole", "core"),
    )
    spatial_order: int = param(
        2, "Order of the polynomial in x, y of each kernel coefficient.", minimum=0, maximum=5
    )
    kernel_sum_order: int = param(
        -1,
        "Order of the polynomial in x, y of the kernel sum (the photometric scale, carried by "
        "the first basis function alone); 0 holds it constant over the image, as ip_diffim "
        "does for the Alard-Lupton basis and HOTPANTS does; -1 (the default): constant, or "
        "a plane where its spatial fit predicts the kernel stars held out better by more "
        "than a standard error (a transparency or flat-field difference across the field; "
        "reported in metadata.json as kernel.sum_order_choice). Capped at spatial_order.",
        minimum=-1,
        maximum=5,
    )
    background_order: int = param(
        1, "Order of the polynomial in x, y of the differential background.", minimum=0, maximum=5
    )
    max_kernel_sum_sigma: float = param(
        3.0,
        "Reject a stamp whose kernel sum is further than this from the clipped mean, in "
        "units of its error with the stamps' intrinsic scatter added in quadrature.",
        unit="sigma",
        minimum=1.0,
        maximum=100.0,
    )
    max_stamp_outlier_sigma: float = param(
        5.0,
        "Reject a stamp whose background departs from the other stamps' (a plane over the "
        "image), or whose residual keeps more of its star's power than the others' "
        "(noise plus a fraction for PSF mismatch), by more than this many of its errors "
        "with the stamps' intrinsic scatter added in quadrature.",
        unit="sigma",
        minimum=1.0,
        maximum=100.0,
    )
    max_residual_mean: float = param(
        0.5,
        "Reject a stamp whose normalised residual has a larger absolute mean.",
        minimum=0.0,
        maximum=100.0,
    )
    max_residual_std: float = param(
        1.5,
        "Reject a stamp whose normalised residual has a larger standard deviation.",
        minimum=0.1,
        maximum=100.0,
    )
    regularization: float = param(
        -1.0,
        "Strength of the prior on the kernel's roughness (squared Laplacian), which damps the "
        "high spatial frequencies the stars do not constrain, as its weight in mean stamps "
        "(1 = as much information as one average kernel star), counted once in each fit; "
        "negative (the default): chosen by 10-fold cross-validation over the kernel stars "
        "(reported in metadata.json as kernel.regularization); 0 = plain least squares.",
        unit="stamps",
        minimum=-1.0,
        maximum=100.0,
    )
    noise_correction: str = param(
        "shared",
        "The noise the two images put into the kernel fit's equations, measured on sky and "
        "taken out of the spatial fit's (reported in metadata.json as kernel.shared_noise): "
        "'shared', the noise the images have in common (coadds of common frames), which "
        "pulls the kernel toward the delta that cancels it; 'all', also the convolved "
        "image's own noise, which pulls the kernel sum low (errors in variables); 'none'.",
        choices=("none", "shared", "all"),
    )
    max_iterations: int = param(3, "Rounds of per-stamp rejection.", minimum=1, maximum=20)
    min_stamps: int = param(
        3,
        "Least number of good stamps to fit a kernel (spatial orders are lowered first); "
        "with fewer, a spatially constant kernel is derived from the two PSFs, or is a "
        "delta (a plain difference) when a PSF is unknown.",
        minimum=1,
        maximum=1000,
    )

    def __post_init__(self) -> None:
        _validate_fields(self)
        if self.min_size > self.max_size:
            raise ConfigError(
                f"kernel.min_size = {toml_text(self.min_size)} exceeds "
                f"kernel.max_size = {toml_text(self.max_size)}"
            )
        if not self.degrees:
            raise ConfigError("kernel.degrees is empty: give at least one Gaussian, e.g. [4, 2, 2]")

    @property
    def fixed_sum_order(self) -> int:
        """The kernel sum's order a spatial fit takes from the config: 0 (constant) when
        it is to be chosen (-1), as the fits made before the choice are
        (:func:`~diffviewer.engine.kernel.fit_kernel` chooses it for its final fit)."""
        return max(self.kernel_sum_order, 0)


@dataclasses.dataclass(frozen=True)
class DecorrelationConfig:
    """Noise decorrelation of the difference (Reiss & Lupton 2016 afterburner)."""

    SECTION = "decorrelation"
    enabled: bool = param(True, "Whiten the difference's noise after convolution.")
    scale_variance: bool = param(
        True,
        "Scale the difference's variance plane once so that the PSF-filtered difference has "
        "unit noise on sky away from every source (the seed's doScaleDiffimVariance, at PSF "
        "scale); the only empirical noise correction, always measured and reported.",
    )

    def __post_init__(self) -> None:
        _validate_fields(self)


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
    """The score image on which point sources are detected."""

    SECTION = "score"
    method: str = param(
        "zogy",
        "Score image: ZOGY S_corr, Alard-Lupton preconvolution "
        "(difference filtered by its PSF), or none.",
        choices=("zogy", "al", "none"),
    )
    astrometric_noise: float = param(
        0.0,
        "RMS registration error between the images, per axis, entering S_corr.",
        unit="px",
        minimum=0.0,
        maximum=5.0,
    )
    background_mesh: int = param(
        128,
        "Side of the cells in which each input's sky background and noise are estimated "
        "(the kernel fit's noise terms, the renormalisation's sky, ZOGY's noise).",
        unit="px",
        minimum=8,
        maximum=4096,
    )
    max_psf_change: float = param(
        0.05,
        "ZOGY follows a spatially varying kernel on a grid of local PSFs: the largest "
        "change (L2, fraction) of the kernel-matched PSF between neighbouring grid nodes; "
        "one node serves an image over which that PSF departs from the centre's by less "
        "than its square.",
        minimum=0.005,
        maximum=1.0,
    )
    min_tile: int = param(
        128,
        "Least side of a cell of ZOGY's grid of local PSFs (finer grids cost more FFT "
        "area for the kernels' reach around each cell).",
        unit="px",
        minimum=32,
        maximum=4096,
    )

    def __post_init__(self) -> None:
        _validate_fields(self)


@dataclasses.dataclass(frozen=True)
class DetectionConfig:
    """Detection of positive and negative sources on the difference or score."""

    SECTION = "detection"
    detect_on: str = param(
        "difference",
        "Image searched for sources: the difference filtered by its PSF over its "
        "(renormalised) noise, whose value is the catalog's PSF-flux S/N, or the score.",
        choices=("score", "difference"),
    )
    threshold: float = param(5.0, "Detection threshold.", unit="sigma", minimum=0.5, maximum=1000.0)
    min_area: int = param(
        1,
        "Least number of connected pixels above threshold. Both searched images are "
        "already filtered by the PSF: a larger area raises the threshold for faint point "
        "sources (3 px missed peaks of 5.0-5.2 sigma; LSST's minPixels is 1 too).",
        unit="px",
        minimum=1,
        maximum=10000,
    )
    grow: int = param(
        2,
        "Footprints are grown by this many pixels before merging.",
        unit="px",
        minimum=0,
        maximum=50,
    )
    sky_sources: int = param(
        100,
        "Number of blank-sky positions measured like sources, as the LSST pipeline's sky "
        "sources: the scatter of their S/N shows the noise a PSF flux really has.",
        minimum=0,
        maximum=10000,
    )
    max_detected_fraction: float = param(
        0.05,
        "Bad-subtraction guard: warn when detections cover more than this fraction of the "
        "image (and more than three point sources' footprints, which a cutout's one "
        "transient may cover).",
        minimum=0.0,
        maximum=1.0,
    )

    def __post_init__(self) -> None:
        _validate_fields(self)
        if self.detect_on == "score" and self.min_area < 1:
            raise ConfigError("detection.min_area must be at least 1")


def largest_exposure_id(bits: int) -> int:
    """The largest exposure id a field of ``bits`` high bits of a DIA source id holds with
    its top bit 0, so that every id fits a signed 64-bit integer (LSST's ``RecordId``, an
    SQL ``BIGINT``, the inspector's verdict keys): ``2**(bits - 1) - 1``."""
    return (1 << (bits - 1)) - 1


@dataclasses.dataclass(frozen=True)
class MeasurementConfig:
    """Measurement of the DIA sources."""

    SECTION = "measurement"
    aperture_radii: tuple[float, ...] = param(
        (3.0, 6.0, 9.0), "Radii of the circular apertures.", unit="px", minimum=0.5, maximum=100.0
    )
    dipole_max_separation: float = param(
        3.0,
        "Largest separation of a dipole's lobes, in FWHM of the difference PSF.",
        unit="FWHM",
        minimum=0.1,
        maximum=20.0,
    )
    dipole_flux_ratio: float = param(
        0.2,
        "Least ratio of the weaker to the stronger lobe's flux for a dipole.",
        minimum=0.0,
        maximum=1.0,
    )
    exposure_id: int = param(
        -1,
        "Exposure id stored in the high bits of every DIA source id; -1 (the default): "
        "derived from the pair, the low exposure_bits - 1 bits of a hash of the "
        "science's pixels, the template's on the science grid and the config digest (every "
        "id then fits a signed 64-bit integer), the same on every rerun (reported in "
        "metadata.json as measurement.exposure_id). Two of n pairs share a derived id with "
        "odds below n^2 / 2^exposure_bits, at the default 40 bits 1e-6 for 1000 pairs and "
        "1e-4 for 10,000: give each pair its own id where ids must be unique.",
        minimum=-1,
        special="from the pair",
    )
    exposure_bits: int = param(
        40,
        "Number of high bits of the 64-bit id that hold the exposure id, the top one 0 (every "
        "id fits a signed 64-bit integer); the rest number a pair's sources (40: 24 bits, "
        "16.7 million sources).",
        minimum=1,
        maximum=62,
    )

    def __post_init__(self) -> None:
        _validate_fields(self)
        largest = largest_exposure_id(self.exposure_bits)
        if self.exposure_id > largest:
            raise ConfigError(
                f"measurement.exposure_id = {toml_text(self.exposure_id)} does not fit in "
                f"measurement.exposure_bits = {toml_text(self.exposure_bits)} bits with the "
                f"top one 0 (largest {largest}), which keeps every "
                "DIA source id within a signed 64-bit integer (as LSST's, an SQL BIGINT, "
                "the inspector's verdict keys); raise exposure_bits"
            )

    @property
    def derives_exposure_id(self) -> bool:
        """Whether the exposure id is derived from the pair (-1) rather than given
        (:func:`~diffviewer.engine.ids.pair_exposure_id`)."""
        return self.exposure_id < 0


SECTION_TYPES: dict[str, type] = {
    "warp": WarpConfig,
    "candidates": CandidatesConfig,
    "kernel": KernelConfig,
    "decorrelation": DecorrelationConfig,
    "score": ScoreConfig,
    "detection": DetectionConfig,
    "measurement": MeasurementConfig,
}


@dataclasses.dataclass(frozen=True)
class SubtractionConfig:
    """The whole configuration of a subtraction run, one section per engine step."""

    warp: WarpConfig = dataclasses.field(default_factory=WarpConfig)
    candidates: CandidatesConfig = dataclasses.field(default_factory=CandidatesConfig)
    kernel: KernelConfig = dataclasses.field(default_factory=KernelConfig)
    decorrelation: DecorrelationConfig = dataclasses.field(default_factory=DecorrelationConfig)
    score: ScoreConfig = dataclasses.field(default_factory=ScoreConfig)
    detection: DetectionConfig = dataclasses.field(default_factory=DetectionConfig)
    measurement: MeasurementConfig = dataclasses.field(default_factory=MeasurementConfig)

    def __post_init__(self) -> None:
        if self.score.method == "none" and self.detection.detect_on == "score":
            raise ConfigError(
                'detection.detect_on = "score" needs score.method = "zogy" or "al", '
                'not "none"; set detection.detect_on = "difference"'
            )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Return the config as nested plain dicts (tuples become lists)."""
        out: dict[str, dict[str, Any]] = {}
        for name in SECTION_TYPES:
            section = getattr(self, name)
            out[name] = {
                f.name: (list(v) if isinstance(v := getattr(section, f.name), tuple) else v)
                for f in dataclasses.fields(section)
            }
        return out

    def digest(self) -> str:
        """Short hash of the effective config's values (identifies which config made an
        output; the fields' documentation, which an update may reword, is not hashed)."""
        return hashlib.sha256(tomli_w.dumps(self.to_dict()).encode()).hexdigest()[:12]


def config_files(config: SubtractionConfig) -> list[Path]:
    """Files a config makes a run read besides the images (the star list,
    ``candidates.source_list``): protected from writing, and recorded with the inputs so a
    file edited in place makes the run's outputs stale (its path alone is in the digest).

    Parameters
    ----------
    config : SubtractionConfig

    Returns
    -------
    list of Path
    """
    source_list = config.candidates.source_list
    return [Path(source_list)] if source_list else []


def from_dict(data: Mapping[str, Any], base: SubtractionConfig | None = None) -> SubtractionConfig:
    """Build a config from nested dicts, starting from ``base`` (defaults when None).

    Parameters
    ----------
    data : mapping
        ``{section: {field: value}}``; sections and fields not given keep their base values.
    base : SubtractionConfig, optional
        The config to update.

    Returns
    -------
    SubtractionConfig
        The validated config.

    Raises
    ------
    ConfigError
        On an unknown section or field, or an invalid value.
    """
    base = base or SubtractionConfig()
    sections: dict[str, Any] = {}
    for name, values in data.items():
        if name not in SECTION_TYPES:
            raise ConfigError(_unknown_section(name, values))
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"config section [{name}] must be a table of field = value, not "
                f"{name} = {toml_text(values)}"
            )
        current = getattr(base, name)
        known = [f.name for f in dataclasses.fields(current)]
        for key in values:
            if key not in known:
                raise ConfigError(
                    f"unknown config field {name}.{key}{_did_you_mean(key, known)}; "
                    f"known: {', '.join(sorted(known))}"
                )
        sections[name] = dataclasses.replace(current, **dict(values))
    return dataclasses.replace(base, **sections)


def _did_you_mean(name: str, known: Sequence[str]) -> str:
    """`` (did you mean X?)`` for the closest of ``known`` to a misspelt name, else ''."""
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _unknown_section(name: str, values: Any) -> str:
    """Why a top-level name is no section: a field written outside its section (which one
    holds it), or a misspelt section."""
    if not isinstance(values, Mapping):
        owners = [s for s, kind in SECTION_TYPES.items() if name in _field_names(kind)]
        if owners:
            return (
                f"{name} = {toml_text(values)} is outside any section; it is a field of "
                f"[{owners[0]}]: write it under that table (or --set {owners[0]}.{name}=...)"
            )
    return (
        f"unknown config section [{name}]{_did_you_mean(name, list(SECTION_TYPES))}; "
        f"known: {', '.join(SECTION_TYPES)}"
    )


def _field_names(kind: type) -> list[str]:
    """The field names of a section's dataclass."""
    return [f.name for f in dataclasses.fields(kind)]


def to_toml(config: SubtractionConfig) -> str:
    """Serialise a config to TOML text, each field preceded by its documentation."""
    lines: list[str] = []
    for name, values in config.to_dict().items():
        section = getattr(config, name)
        lines.append(f"[{name}]")
        for f in dataclasses.fields(section):
            unit = f" [{f.metadata['unit']}]" if f.metadata.get("unit") else ""
            lines.append(f"# {f.metadata['doc']}{unit}")
            lines.append(tomli_w.dumps({f.name: values[f.name]}).strip())
        lines.append("")
    return "\n".join(lines)


def load_toml(path: str | Path, base: SubtractionConfig | None = None) -> SubtractionConfig:
    """Read a config TOML file.

    Parameters
    ----------
    path : str or Path
        The TOML file.
    base : SubtractionConfig, optional
        Values not in the file come from here (defaults when None).

    Returns
    -------
    SubtractionConfig

    Raises
    ------
    ConfigError
        When the file is missing, is not TOML, or holds an invalid value.
    """
    path = Path(path)
    try:
        return from_dict(read_toml_data(path), base)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def read_toml_data(path: str | Path) -> dict[str, Any]:
    """The tables of a config TOML file, not yet validated.

    Parameters
    ----------
    path : str or Path
        The file: UTF-8 text (a byte-order mark is allowed).

    Returns
    -------
    dict
        ``{section: {field: value}}`` as written.

    Raises
    ------
    ConfigError
        When the file is missing, unreadable, not UTF-8, not TOML, or empty: an empty
        config would mean the defaults, but ``diffviewer config --config F > F`` empties
        F before diffviewer reads it, and the user's values would be lost in silence.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; check the path") from None
    except OSError as exc:
        raise ConfigError(
            f"config file {path} cannot be read ({exc.strerror}); give a TOML file"
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        utf16 = raw[:2] in (b"\xff\xfe", b"\xfe\xff")
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {raw[exc.start]:#04x} at "
            f"{exc.start}{': UTF-16, as some Windows editors save' if utf16 else ''}); "
            "save it as UTF-8"
        ) from None
    if not text.strip():
        raise ConfigError(
            f"config file {path} is empty; leave --config out for the defaults (if it was "
            "written by `diffviewer config --config FILE > FILE`, the shell emptied it "
            "before it was read: write to another file, then move it)"
        )
    try:
        return _loads_toml(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not valid TOML ({exc}); fix or regenerate it"
        ) from None


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse one ``section.field=value`` override; the value is read as a TOML value.

    Parameters
    ----------
    text : str
        For example ``kernel.spatial_order=1`` or ``score.method=al`` (bare words are strings).

    Returns
    -------
    (str, str, Any)
        Section, field and value.

    Raises
    ------
    ConfigError
        When the text is not of that form.
    """
    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise ConfigError(
            f"--set {shlex.quote(text)}: expected section.field=value, e.g. kernel.spatial_order=1"
        )
    raw = raw.strip()
    try:
        value = _loads_toml(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError as exc:
        if raw[:1] in ("[", "{", '"', "'"):  # meant as TOML (a bare word is a string)
            raise ConfigError(
                f"--set {shlex.quote(text)}: the value {raw} is not valid TOML ({exc}); write "
                'a list as [4, 2, 2] and a quoted string as "text"'
            ) from None
        value = raw
    return section, name, value


def apply_overrides(config: SubtractionConfig, overrides: Sequence[str]) -> SubtractionConfig:
    """Apply ``section.field=value`` overrides together.

    The cross-field rules are checked once, on the result, so the order of overrides
    that must change together (e.g. ``score.method=none`` with
    ``detection.detect_on=difference``) does not matter; a field may be given more than
    once only with one value.

    Parameters
    ----------
    config : SubtractionConfig
        The starting config.
    overrides : sequence of str
        Overrides as given on the command line.

    Returns
    -------
    SubtractionConfig

    Raises
    ------
    ConfigError
        When an override is malformed or out of range, or a field is given two values.
    """
    return from_dict(override_tables(overrides), config)


def override_tables(overrides: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``section.field=value`` overrides as ``{section: {field: value}}`` tables.

    Parameters
    ----------
    overrides : sequence of str
        Overrides as given on the command line.

    Returns
    -------
    dict

    Raises
    ------
    ConfigError
        When an override is malformed or names no field (said as the --set's, not as a
        config file's), or a field is given two values (2 and 2.0 are one).
    """
    merged: dict[str, dict[str, Any]] = {}
    for text in overrides:
        section, name, value = parse_override(text)
        if section not in SECTION_TYPES or name not in _field_names(SECTION_TYPES[section]):
            from_dict({section: {name: value}})  # raises: the --set names no field
        given = merged.setdefault(section, {})
        if name in given and not _same_value(given[name], value):
            raise ConfigError(
                f"{section}.{name} is given twice, as {toml_text(given[name])} and "
                f"{toml_text(value)}; give it once"
            )
        given[name] = value
    return merged


def _same_value(a: Any, b: Any) -> bool:
    """Whether two TOML values are one (NaN is NaN; 2 is 2.0; a string is not a number,
    nor is true 1; a float out of range is only itself: 1e-400 is not 0, which would
    stand for it unrefused)."""
    if isinstance(a, OutOfRangeFloat) or isinstance(b, OutOfRangeFloat):
        return _exact(a) == _exact(b)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    return (type(a) is type(b) or numbers) and a == b


def _exact(value: Any) -> decimal.Decimal | None:
    """A number's exact value as written (``1e400`` and ``1.0e400`` alike; a float out of
    range by its spelling, TOML's ``_`` separators left out); None for another value."""
    if isinstance(value, OutOfRangeFloat):
        return decimal.Decimal(value.text.replace("_", ""))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return decimal.Decimal(value)
    return None


def field_specs(section: str) -> list[dataclasses.Field[Any]]:
    """The fields of one section, with their metadata, in declaration order (for UIs)."""
    if section not in SECTION_TYPES:
        raise ConfigError(f"unknown config section [{section}]")
    return list(dataclasses.fields(SECTION_TYPES[section]))
