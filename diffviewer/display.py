"""Display levels, stretches, colour maps and overlays for image views (no Qt here).

Everything a view needs to turn a science array into pixels on screen, computed as
plain numpy so that the GUI's worker can run it off the GUI thread:

- :func:`display_array`: a float32 C-contiguous copy (or the input itself when it
  already is one) for ``pyqtgraph.ImageItem``, NaN only where a pixel has no data;
- :func:`compute_levels`: black and white points (zscale, percentiles, min/max,
  manual), optionally symmetric around zero for difference and score images;
- :func:`make_lut`: a 256-entry uint8 RGBA look-up table that applies a stretch
  (linear, asinh, log, sqrt) and a colour map in one go, so that changing the
  stretch never touches the image array;
- :func:`mask_overlay`: an RGBA image of chosen mask planes;
- :func:`cutout`: a fixed-size stamp around a position, padded at the edges;
- :func:`cutout_levels`: levels that make the source at the centre of small cutouts
  readable (from the sky to its peak, shared by the cutouts compared).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from astropy.visualization import MinMaxInterval, PercentileInterval, ZScaleInterval

from diffviewer.errors import ConfigError
from diffviewer.exposure import MaskPlane
from diffviewer.stats import MAD_TO_SIGMA

#: Level modes: zscale, central percentiles (99, 99.5, 99.9 per cent of pixels), min/max, manual.
LEVEL_MODES: tuple[str, ...] = ("zscale", "99", "99.5", "99.9", "minmax", "manual")

#: Stretches applied between the black and white points.
STRETCHES: tuple[str, ...] = ("linear", "asinh", "log", "sqrt")

# Colour maps as evenly spaced RGB anchors (0-255), linearly interpolated.
# viridis and inferno: the 8-colour samples of matplotlib's maps (van der Walt & Smith 2015);
# coolwarm: Moreland (2009) "Diverging Color Maps for Scientific Visualization";
# RdBu: ColorBrewer RdBu-11 (Brewer 2002), reversed so that positive is red.
_ANCHORS: dict[str, tuple[str, ...]] = {
    "gray": ("#000000", "#ffffff"),
    "viridis": (
        "#440154",
        "#46327e",
        "#365c8d",
        "#277f8e",
        "#1fa187",
        "#4ac16d",
        "#a0da39",
        "#fde725",
    ),
    "inferno": (
        "#000004",
        "#280b54",
        "#65156e",
        "#9f2a63",
        "#d44842",
        "#f57d15",
        "#fac228",
        "#fcffa4",
    ),
    "coolwarm": (
        "#3b4cc0",
        "#6282ea",
        "#8db0fe",
        "#b8d0f9",
        "#dddddd",
        "#f5c4ad",
        "#f49a7b",
        "#de604d",
        "#b40426",
    ),
    "RdBu": (
        "#053061",
        "#2166ac",
        "#4393c3",
        "#92c5de",
        "#d1e5f0",
        "#f7f7f7",
        "#fddbc7",
        "#f4a582",
        "#d6604d",
        "#b2182b",
        "#67001f",
    ),
}

#: Names of the colour maps.
COLORMAPS: tuple[str, ...] = tuple(_ANCHORS)

#: Colour maps that diverge from a neutral centre (for images symmetric around zero).
DIVERGING: tuple[str, ...] = ("coolwarm", "RdBu")

#: Views whose default display is symmetric around zero in a diverging map.
SIGNED_VIEWS: tuple[str, ...] = ("difference", "score")

#: Overlay colour (RGB) of each mask plane.
PLANE_COLOURS: dict[MaskPlane, tuple[int, int, int]] = {
    MaskPlane.BAD: (255, 0, 0),
    MaskPlane.SAT: (0, 200, 255),
    MaskPlane.INTRP: (160, 120, 255),
    MaskPlane.CR: (255, 0, 255),
    MaskPlane.EDGE: (255, 200, 0),
    MaskPlane.DETECTED: (0, 255, 0),
    MaskPlane.DETECTED_NEGATIVE: (255, 128, 0),
    MaskPlane.SUSPECT: (255, 255, 0),
    MaskPlane.NO_DATA: (128, 128, 128),
    MaskPlane.SAT_TEMPLATE: (0, 128, 255),
}

#: What a view shows where a pixel has no data (:func:`display_array` makes it NaN, drawn
#: transparent over the view's background): a dark brown that none of :data:`COLORMAPS`
#: holds, as DS9 gives NaN a colour of its own.
NO_DATA_COLOUR: tuple[int, int, int] = (72, 48, 24)

# Largest number of pixels sampled for percentile and min/max levels: the levels of a
# display do not need every pixel of a 4k x 4k image (the sampling error of a 99.9th
# percentile from 1e6 pixels is ~1e-3 of the range, far below a grey level).
_MAX_SAMPLE = 1_000_000

# Softening of the asinh stretch and exponent of the log stretch, in units of the
# level range (the DS9 defaults: asinh(10 x) / 3, log(1000 x + 1) / log(1000)).
ASINH_SOFTENING = 0.1
_LOG_EXPONENT = 1000.0
#: Entries of an image view's look-up table. pyqtgraph maps the interval between the
#: black and white points linearly onto the entries, then looks up colours, so a stretch
#: can only lift faint sky that the table resolves: with min/max levels on a field whose
#: sky noise is ~1e-4 of the range (GOTO: sigma ~ 10 counts under stars of 6e4), 256
#: entries put the whole sky in one entry; 65536 give it ~25 per sigma.
VIEW_LUT_SIZE = 65536

# Half-size (px) of the central box of a cutout whose extreme sets the white point: the
# selected source's core (a PSF FWHM of 2-5 px; dipole lobes lie within ~3 px of their
# midpoint) falls inside it, so a brighter neighbour at the edge does not set the stretch.
_CUTOUT_CORE = 4
# The black point lies 2 sky sigma below the sky (the noise stays visible, unclipped);
# the white point at least 5 sigma above it, so a cutout without a source shows noise
# rather than amplifying nothing (5 sigma: a typical detection threshold).
_CUTOUT_FLOOR_SIGMA = 2.0
_CUTOUT_PEAK_SIGMA = 5.0


@dataclasses.dataclass(frozen=True)
class DisplaySettings:
    """How one view turns values into colours.

    Parameters
    ----------
    levels : str
        One of :data:`LEVEL_MODES`.
    stretch : str
        One of :data:`STRETCHES`.
    cmap : str
        One of :data:`COLORMAPS`.
    symmetric : bool
        Levels symmetric around zero, and the stretch applied outwards from zero.
    manual : (float, float) or None
        Black and white points (image units) for ``levels = "manual"``.
    softening : float
        The asinh stretch's softening ``a`` in (0, 1], as a fraction of the interval
        between the black and white points: ``asinh(t / a) / asinh(1 / a)`` (as
        astropy.visualization's AsinhStretch); linear below ``a``, logarithmic above.
    """

    levels: str = "zscale"
    stretch: str = "linear"
    cmap: str = "gray"
    symmetric: bool = False
    manual: tuple[float, float] | None = None
    softening: float = ASINH_SOFTENING

    def __post_init__(self) -> None:
        for name, allowed in (("levels", LEVEL_MODES), ("stretch", STRETCHES), ("cmap", COLORMAPS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"display {name} = {getattr(self, name)!r}: choose one of {', '.join(allowed)}"
                )
        if self.levels == "manual" and self.manual is None:
            raise ConfigError("display levels = 'manual' needs manual = (black, white)")
        if not 0.0 < self.softening <= 1.0:
            raise ConfigError(
                f"display softening = {self.softening!r}: give a fraction of the level "
                "range in (0, 1], e.g. 0.1 (smaller lifts fainter sky)"
            )

    def replace(self, **changes: object) -> DisplaySettings:
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def default_settings(view: str) -> DisplaySettings:
    """The default display of a view: zscale grey, or symmetric diverging for signed images.

    Parameters
    ----------
    view : str
        View name, e.g. ``"science"`` or ``"difference"``.

    Returns
    -------
    DisplaySettings
    """
    if view in SIGNED_VIEWS:
        return DisplaySettings(levels="zscale", stretch="linear", cmap="coolwarm", symmetric=True)
    return DisplaySettings()


def display_array(image: np.ndarray, blank: np.ndarray | None = None) -> np.ndarray:
    """A float32, C-contiguous version of ``image`` for display.

    Non-finite pixels become the median of the finite ones (0 when there are none), so
    they show as background rather than as a saturated colour. Pixels ``blank`` marks
    (without data) become NaN: an image item draws them transparent and
    :func:`compute_levels` leaves them out.

    Parameters
    ----------
    image : numpy.ndarray
        2-D array of any real dtype (not modified).
    blank : numpy.ndarray, optional
        Boolean, ``image``'s shape: pixels without data.

    Returns
    -------
    numpy.ndarray
        The input itself when it is already float32, contiguous and finite and nothing is
        blank; a copy otherwise.
    """
    out = np.ascontiguousarray(image, dtype=np.float32)
    finite = np.isfinite(out)
    blank = None if blank is None or not blank.any() else blank
    if finite.all() and blank is None:
        return out
    usable = finite if blank is None else finite & ~blank
    fill = float(np.median(out[usable])) if usable.any() else 0.0
    out = np.where(finite, out, np.float32(fill)).astype(np.float32, copy=False)
    if blank is not None:
        out[blank] = np.nan
    return out


def _sample(image: np.ndarray) -> np.ndarray:
    """Finite values of a regular subsample of at most ``_MAX_SAMPLE`` pixels."""
    step = max(1, int(np.ceil(np.sqrt(image.size / _MAX_SAMPLE))))
    values = np.asarray(image[::step, ::step], dtype=np.float64).ravel()
    return values[np.isfinite(values)]


def compute_levels(image: np.ndarray, settings: DisplaySettings) -> tuple[float, float]:
    """Black and white points of an image for the given settings.

    Parameters
    ----------
    image : numpy.ndarray
        The image (non-finite pixels are ignored).
    settings : DisplaySettings
        Level mode and symmetry.

    Returns
    -------
    (float, float)
        ``(black, white)`` in image units with ``white > black``; ``(-a, a)`` when
        ``settings.symmetric``.
    """
    if settings.levels == "manual":
        assert settings.manual is not None
        lo, hi = settings.manual
    else:
        values = _sample(image)
        if values.size == 0:
            return (-1.0, 1.0) if settings.symmetric else (0.0, 1.0)
        if settings.levels == "zscale":
            lo, hi = ZScaleInterval(n_samples=5000).get_limits(values)
        elif settings.levels == "minmax":
            lo, hi = MinMaxInterval().get_limits(values)
        else:
            lo, hi = PercentileInterval(float(settings.levels)).get_limits(values)
    lo, hi = float(lo), float(hi)
    if settings.symmetric:
        half = max(abs(lo), abs(hi))
        lo, hi = -half, half
    if not hi > lo:
        lo, hi = lo - 0.5, lo + 0.5
    return lo, hi


def stretch_curve(stretch: str, t: np.ndarray, softening: float = ASINH_SOFTENING) -> np.ndarray:
    """Apply a stretch to values normalised on the chosen interval.

    Parameters
    ----------
    stretch : str
        One of :data:`STRETCHES`.
    t : numpy.ndarray
        Values in [0, 1] (0 at the black point, 1 at the white point).
    softening : float
        The asinh softening (see :class:`DisplaySettings`).

    Returns
    -------
    numpy.ndarray
        Stretched values in [0, 1], monotonic in ``t``, 0 at 0 and 1 at 1.
    """
    t = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)
    if stretch == "linear":
        return t
    if stretch == "sqrt":
        return np.sqrt(t)
    if stretch == "asinh":
        return np.arcsinh(t / softening) / np.arcsinh(1.0 / softening)
    if stretch == "log":
        return np.log1p(_LOG_EXPONENT * t) / np.log1p(_LOG_EXPONENT)
    raise ConfigError(f"stretch {stretch!r}: choose one of {', '.join(STRETCHES)}")


def colormap_rgb(name: str, t: np.ndarray) -> np.ndarray:
    """Colours of a colour map at positions ``t`` in [0, 1].

    Parameters
    ----------
    name : str
        One of :data:`COLORMAPS`.
    t : numpy.ndarray
        Positions along the map.

    Returns
    -------
    numpy.ndarray
        float64 array of shape ``t.shape + (3,)`` with values 0-255.
    """
    if name not in _ANCHORS:
        raise ConfigError(f"colour map {name!r}: choose one of {', '.join(COLORMAPS)}")
    anchors = np.array([[int(h[i : i + 2], 16) for i in (1, 3, 5)] for h in _ANCHORS[name]], float)
    pos = np.linspace(0.0, 1.0, len(anchors))
    t = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)
    return np.stack([np.interp(t, pos, anchors[:, c]) for c in range(3)], axis=-1)


def make_lut(
    stretch: str,
    cmap: str,
    *,
    symmetric: bool = False,
    n: int = 256,
    softening: float = ASINH_SOFTENING,
) -> np.ndarray:
    """A look-up table applying a stretch then a colour map.

    Entry ``i`` is the colour of the value at fraction ``i / (n - 1)`` between the
    black and white points. With ``symmetric`` the stretch runs outwards from the
    centre (zero) in both directions, so that faint positive and negative residuals
    are boosted alike.

    Parameters
    ----------
    stretch : str
        One of :data:`STRETCHES`.
    cmap : str
        One of :data:`COLORMAPS`.
    symmetric : bool
        Stretch outwards from the centre of the range.
    n : int
        Number of entries (:data:`VIEW_LUT_SIZE` for image views, so faint sky is resolved).
    softening : float
        The asinh softening (see :class:`DisplaySettings`).

    Returns
    -------
    numpy.ndarray
        uint8 array of shape (n, 4), opaque.
    """
    t = np.linspace(0.0, 1.0, n)
    if symmetric:
        s = 2.0 * t - 1.0
        u = 0.5 * (np.sign(s) * stretch_curve(stretch, np.abs(s), softening) + 1.0)
    else:
        u = stretch_curve(stretch, t, softening)
    lut = np.empty((n, 4), dtype=np.uint8)
    lut[:, :3] = np.round(colormap_rgb(cmap, u)).astype(np.uint8)
    lut[:, 3] = 255
    return lut


def mask_overlay(mask: np.ndarray, planes: Mapping[MaskPlane, bool], opacity: float) -> np.ndarray:
    """An RGBA image showing the chosen mask planes in their colours.

    Where several chosen planes are set, the highest bit's colour wins.

    Parameters
    ----------
    mask : numpy.ndarray
        Integer mask of :class:`~diffviewer.exposure.MaskPlane` bits.
    planes : mapping of MaskPlane to bool
        Which planes to show.
    opacity : float
        Alpha of a shown pixel, in [0, 1].

    Returns
    -------
    numpy.ndarray
        uint8 array of shape ``mask.shape + (4,)``; transparent where no chosen plane is set.
    """
    out = np.zeros((*mask.shape, 4), dtype=np.uint8)
    alpha = np.uint8(round(255 * min(max(opacity, 0.0), 1.0)))
    for plane in MaskPlane:
        if not planes.get(plane, False):
            continue
        hit = (mask & int(plane)) != 0
        out[hit, :3] = PLANE_COLOURS[plane]
        out[hit, 3] = alpha
    return out


def cutout(image: np.ndarray, x: float, y: float, half: int) -> np.ndarray:
    """A square stamp of ``image`` centred on the pixel nearest (x, y).

    Parameters
    ----------
    image : numpy.ndarray
        2-D array (row-major, y first).
    x, y : float
        Centre in 0-based pixel coordinates.
    half : int
        Half-size: the stamp is ``2 * half + 1`` pixels across.

    Returns
    -------
    numpy.ndarray
        float32 stamp, NaN where it falls outside the image.
    """
    n = 2 * half + 1
    out = np.full((n, n), np.nan, dtype=np.float32)
    cx, cy = round(x), round(y)
    ny, nx = image.shape
    x0, y0 = cx - half, cy - half
    xs, ys = max(x0, 0), max(y0, 0)
    xe, ye = min(x0 + n, nx), min(y0 + n, ny)
    if xe > xs and ye > ys:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = image[ys:ye, xs:xe]
    return out


def cutout_levels(cutouts: Sequence[np.ndarray], *, symmetric: bool) -> tuple[float, float]:
    """Shared levels that show the source at the centre of small cutouts.

    The whole-image levels of a view (a zscale set by the sky) saturate a bright source
    in a cutout, and the noise-set levels of a difference turn a residual into blocks.
    Here the white point is the most extreme pixel in the central
    ``2 * _CUTOUT_CORE + 1`` box of any of the cutouts (their source's peak), and the
    black point is just below the sky, so the same source is compared at the same levels
    across the cutouts.

    Parameters
    ----------
    cutouts : sequence of numpy.ndarray
        Square stamps of the same size centred on the source (NaN outside the image),
        in the same units (e.g. science and template, or the difference alone).
    symmetric : bool
        ``(-a, a)`` around zero (difference and score), ``a`` the largest absolute core
        value and at least 5 sky sigma; otherwise from 2 sigma below the median to the
        highest core value (at least 5 sigma above the median).

    Returns
    -------
    (float, float)
        ``(black, white)`` in image units, ``white > black``.
    """
    values = np.concatenate([np.asarray(c, np.float64).ravel() for c in cutouts] or [np.zeros(0)])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (-1.0, 1.0) if symmetric else (0.0, 1.0)
    sky = float(np.median(values))
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(values - sky)))  # 0 on a noiseless sky
    core = np.concatenate(
        [
            np.asarray(c, np.float64)[
                max(c.shape[0] // 2 - _CUTOUT_CORE, 0) : c.shape[0] // 2 + _CUTOUT_CORE + 1,
                max(c.shape[1] // 2 - _CUTOUT_CORE, 0) : c.shape[1] // 2 + _CUTOUT_CORE + 1,
            ].ravel()
            for c in cutouts
        ]
    )
    core = core[np.isfinite(core)]
    if symmetric:
        peak = float(np.max(np.abs(core))) if core.size else 0.0
        half = max(peak, _CUTOUT_PEAK_SIGMA * sigma)
        return (-half, half) if half > 0 else (-1.0, 1.0)
    peak = float(np.max(core)) if core.size else -np.inf
    lo = sky - _CUTOUT_FLOOR_SIGMA * sigma
    hi = max(peak, sky + _CUTOUT_PEAK_SIGMA * sigma)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)
