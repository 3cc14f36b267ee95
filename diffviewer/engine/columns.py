"""The catalogs' columns: name, unit and meaning, in one place.

Every column of :func:`diffviewer.engine.measure.measure_sources`' table (the DIA
sources) and of the kernel fit's star table (:data:`KERNEL_STAR_COLUMNS`,
``kernel_candidates.ecsv``) carries its unit and this description (``Table[name].unit``,
``.description``), so a saved catalog documents itself. Pixel coordinates are 0-based;
fluxes are in the difference's unit (its ``BUNIT``, the science's), ct = image units when
the input names none.

One convention holds for ``sign``, ``x``, ``y``, ``peak_value``, ``psf_flux`` and
``snr``: they describe the strongest extreme (largest absolute value) of the
*thresholded* image in the source's footprint, the score or the PSF-filtered
difference (``meta['detection_image']``). ``sign`` is the sign of that extreme,
(x, y) its sub-pixel position, and the PSF flux is fitted there on the difference
with the difference's PSF (as it varies over the image); the PSF-filtered difference at
a pixel is exactly the S/N of that fit, so ``snr`` is ``peak_value`` when the difference
is thresholded and the extreme sits at the pixel's centre. The sub-pixel position moves
the fit by up to half a pixel: on an isolated source the two agree within a few per
cent, on a steep residual (a star's ring) they differ by up to a fifth (GOTO: 42 of 452
by more than 5 %). A dipole keeps its sign and peak, but (x, y) is the midpoint of its
fitted lobes, and ``psf_flux`` is the one PSF fitted there (as LSST's ``psfFlux`` of a
dipole): for two PSFs of opposite sign, their net flux times the PSF's overlap with
itself shifted by half the lobes' separation, less than 1 (a Gaussian's
``exp(-d^2 / 16 sigma^2)`` at separation d). The net flux is ``pos_flux - neg_flux``,
the lobes' fitted fluxes. A residual that is not two PSFs (a star's sub-pixel
misregistration, fitted with lobes 0.1-0.2 px apart and each near the star's flux; a
ring of mismatched widths) breaks that relation: there the lobes' fluxes describe the
fit, not a source, and ``psf_flux`` is the measurement to quote.
"""

from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy.table import Table

#: Flag columns and the mask planes (difference, science, template) that raise them.
FLAG_NAMES = ("edge", "nodata", "saturated", "interpolated", "bad", "suspect", "cr")

_PIX, _PIX2, _CT, _DEG, _ONE = u.pix, u.pix**2, u.ct, u.deg, u.dimensionless_unscaled
_POSITION = (
    "sub-pixel position of the thresholded image's extreme, or of the PSF fitted to the "
    "difference where a pixel beside that extreme is unusable (0-based; a dipole: "
    "midpoint of its lobes)"
)

#: What the moment columns share: how they are made and when they are NaN.
_MOMENTS = (
    " over the footprint, Gaussian weight removed (NaN where its pixels are not one "
    "source narrower than the weight: most dipoles and residual patterns; smaller than "
    "the source's where the image edge or unusable pixels cut its footprint: flag_edge "
    "and the other flags)"
)

#: name -> (unit, description) of every fixed column, in catalog order.
COLUMNS: dict[str, tuple[u.UnitBase, str]] = {
    "id": (
        _ONE,
        "DIA source id: exposure id in the high bits (measurement.exposure_id, or derived "
        "from the pair's pixels and config: metadata.json measurement), running number below",
    ),
    "label": (_ONE, "footprint label in the segmentation (0: sky source; pieces share it)"),
    "sky_source": (_ONE, "a blank-sky position measured like a source, not a detection"),
    "x": (_PIX, _POSITION),
    "y": (_PIX, _POSITION),
    "ra": (_DEG, "right ascension of (x, y) from the difference's WCS (NaN without one)"),
    "dec": (_DEG, "declination of (x, y) from the difference's WCS (NaN without one)"),
    "sign": (
        _ONE,
        "sign of the thresholded image's extreme: +1 brighter in the science, -1 in "
        "the template, 0 for a sky source",
    ),
    "psf_flux": (
        _CT,
        "PSF flux on the difference at (x, y), the difference's PSF, "
        "matched-filter (unweighted) fit (a dipole: one PSF at its midpoint, which sees "
        "its lobes as far as they are that PSF's shape; their own fluxes are pos_flux "
        "and neg_flux)",
    ),
    "psf_flux_err": (
        _CT,
        "1-sigma error of psf_flux: the (renormalised) variance plane's, times the factor "
        "that carries the source's own noise through the kernel and the decorrelation "
        "from the inputs' variance planes (1 on sky: diffviewer.engine.source_noise)",
    ),
    "snr": (_ONE, "psf_flux / psf_flux_err"),
    "psf_chi2": (
        _ONE,
        "reduced chi^2 of psf_flux times its PSF against the difference within 1.5 FWHM "
        "of (x, y), on the usable pixels, by the variance plane: for a point source about "
        "the sky sources' (metadata.json detection.sky_sources.psf_chi2_median; 1 on "
        "uncorrelated noise), well above for a residual of another shape (a dipole, a "
        "galaxy's core, a core in a ring) or a bright source its PSF does not fit to its "
        "noise",
    ),
    "peak_value": (_ONE, "the thresholded image at the extreme's pixel (sigma, signed)"),
    "score_peak": (
        _ONE,
        "the score image at the extreme's pixel (sigma of its own predicted noise, signed); "
        "NaN where the score is not defined (its mask's unusable planes: near saturated "
        "cores, off the data)",
    ),
    "xx": (_PIX2, "second moment in x of the signed difference" + _MOMENTS),
    "yy": (_PIX2, "second moment in y of the signed difference" + _MOMENTS),
    "xy": (_PIX2, "cross moment of the signed difference" + _MOMENTS),
    "sci_psf_flux": (
        _CT,
        "PSF flux on the science image at (x, y) above its sky background (a "
        "neighbour's light within the PSF included)",
    ),
    "sci_psf_flux_err": (_CT, "1-sigma error of sci_psf_flux from the science variance"),
    "npix": (_PIX2, "area of the source's footprint"),
    "has_positive": (_ONE, "the footprint holds a part above +threshold"),
    "has_negative": (_ONE, "the footprint holds a part below -threshold"),
    "is_dipole": (_ONE, "classified a dipole (two-lobe fit, see dipole columns)"),
    "pos_flux": (_CT, "dipole fit: flux of the positive lobe (NaN if not a dipole)"),
    "pos_flux_err": (_CT, "dipole fit: 1-sigma error of pos_flux"),
    "neg_flux": (_CT, "dipole fit: flux of the negative lobe, >= 0 (NaN if not a dipole)"),
    "neg_flux_err": (_CT, "dipole fit: 1-sigma error of neg_flux"),
    "pos_x": (_PIX, "dipole fit: x of the positive lobe"),
    "pos_y": (_PIX, "dipole fit: y of the positive lobe"),
    "neg_x": (_PIX, "dipole fit: x of the negative lobe"),
    "neg_y": (_PIX, "dipole fit: y of the negative lobe"),
    "dipole_separation": (_PIX, "dipole fit: distance between the lobes"),
    "dipole_orientation": (
        _DEG,
        "dipole fit: direction from the negative to the positive lobe, counter-clockwise from +x",
    ),
}

for _name in FLAG_NAMES:
    COLUMNS[f"flag_{_name}"] = (_ONE, f"mask plane '{_name}' anywhere in the footprint")
    COLUMNS[f"flag_{_name}_center"] = (_ONE, f"mask plane '{_name}' in the 3 x 3 pixels at (x, y)")
COLUMNS["flagged"] = (
    _ONE,
    "edge, nodata or saturated anywhere, or interpolated, bad, suspect or cr at the centre",
)


#: name -> (unit, description) of the kernel fit's star table, in its order.
KERNEL_STAR_COLUMNS: dict[str, tuple[u.UnitBase, str]] = {
    "id": (_ONE, "kernel star number, in order of decreasing science S/N"),
    "x": (_PIX, "sub-pixel science position of the star's peak (0-based)"),
    "y": (_PIX, "sub-pixel science position of the star's peak (0-based)"),
    "flux_sci": (
        _CT,
        "science flux in a circular aperture of 1.5 science FWHM, less the coarse background",
    ),
    "flux_tmpl": (_CT, "template flux in the same aperture (each image at its own seeing)"),
    "snr": (_ONE, "S/N of flux_sci from the science variance plane"),
    "peak": (_CT, "science peak value above the coarse background"),
    "control": (_ONE, "held out of the fit, judged against the spatial model"),
    "status": (_ONE, "GOOD (fitted and kept), BAD (not fitted or rejected: reason), CONTROL"),
    "reason": (_ONE, "why the stamp is BAD (or a control star was not judged); empty if not"),
    "chi2": (
        _ONE,
        "chi^2 per degree of freedom of the star's own kernel's residual over "
        "the pixels its fit kept (control stars: of the spatial model's)",
    ),
    "kernel_sum": (
        _ONE,
        "the star's flux ratio under the solution's kernel at the star: its matched-filter "
        "flux (a Gaussian of the broader FWHM, less its mean) on the image matched to, over "
        "that on the convolved image convolved by the kernel, times the kernel's sum. Where "
        "the kernel matches the star it is the solution's sum (metadata kernel.kernel_sum); "
        "the difference then holds 1 - solution sum / kernel_sum of the star's filtered flux "
        "(NaN for a star not fitted, where the profile holds no flux on either image: an "
        "extended or absent source, or when the kernel is wider than its stamp)",
    ),
    "kernel_sum_err": (_ONE, "1-sigma formal error of kernel_sum (both images' noise)"),
    "resid_mean": (
        _ONE,
        "mean of the own fit's residual in units of its noise (control "
        "stars: of the spatial model's)",
    ),
    "resid_std": (
        _ONE,
        "standard deviation of the own fit's residual in units of its noise "
        "(control stars: of the spatial model's)",
    ),
    "spatial_resid_mean": (_ONE, "mean of the spatial model's residual in units of its noise"),
    "spatial_resid_std": (
        _ONE,
        "standard deviation of the spatial model's residual in units of its noise",
    ),
    "held_out_chi2": (
        _ONE,
        "chi^2 per degree of freedom of the residual against a kernel fitted without the "
        "star: for GOOD stars the spatial fit without its tenth of the stars "
        "(cross-validation; without it alone when there are 30 or fewer), for CONTROL "
        "stars the spatial model",
    ),
    "held_out_mean": (_ONE, "mean of that held-out residual in units of its noise"),
    "held_out_std": (_ONE, "standard deviation of that held-out residual in units of its noise"),
}


def image_unit(bunit: object) -> u.UnitBase:
    """The unit of an image's pixels from its ``BUNIT`` card's value: ct (image units) when
    there is none or astropy cannot read it (a Rubin cutout's ``nJy``, ``ADU`` and
    ``electron/s`` are read; ``counts`` is not, and is ct).

    Parameters
    ----------
    bunit : object
        The card's value (None when absent).

    Returns
    -------
    astropy.units.UnitBase
    """
    text = str(bunit or "").strip()
    for spelling in dict.fromkeys((text, text.lower())) if text else ():
        unit = u.Unit(spelling, parse_strict="silent")  # 'ADU' is astropy's 'adu'
        if not isinstance(unit, u.UnrecognizedUnit):
            return unit
    return _CT


def describe(
    table: Table, columns: dict[str, tuple[u.UnitBase, str]], image: u.UnitBase = _CT
) -> None:
    """Set the unit and description of each of ``columns`` that ``table`` holds (in place),
    a flux's in ``image``, the unit of the image it was measured on (:func:`image_unit`)."""
    for name, (unit, description) in columns.items():
        if name in table.colnames:
            table[name].unit = image if unit == _CT else unit
            table[name].description = description


def aperture_column(radius: float) -> str:
    """Name of the aperture-flux column for a radius (px), e.g. ``ap_flux_3`` or ``ap_flux_2p5``."""
    text = f"{radius:g}".replace(".", "p")
    return f"ap_flux_{text}"


def aperture_columns(radius: float) -> dict[str, tuple[u.UnitBase, str]]:
    """Unit and description of the aperture flux, its error and its flag at ``radius`` (px)."""
    name = aperture_column(radius)
    return {
        name: (_CT, f"flux in a circular aperture of radius {radius:g} px on the difference"),
        f"{name}_err": (
            _CT,
            f"1-sigma error of {name} from the variance plane, renormalised at PSF scale, "
            "times the factor that carries the source's own noise through the kernel "
            "(as psf_flux_err's): on correlated noise off by the sky sources' pull scatter "
            "of this aperture (metadata.json detection.sky_sources.aperture_pull_std)",
        ),
        f"{name}_flag": (
            _ONE,
            f"the aperture reaches unusable pixels (a mask plane the PSF fit leaves out) or "
            f"off the image: {name} sums the others only, missing that part of its area",
        ),
    }


def empty_columns(n: int) -> dict[str, np.ndarray]:
    """The measured columns (all but id, ra, dec, flagged), NaN / False / 0 for ``n`` rows."""
    ints = {"label": np.int32, "sign": np.int8, "npix": np.int32}
    cols: dict[str, np.ndarray] = {}
    for name, (unit, _) in COLUMNS.items():
        if name in ("id", "ra", "dec", "flagged"):
            continue
        if name in ints:
            cols[name] = np.zeros(n, dtype=ints[name])
        elif unit is _ONE and name not in ("snr", "psf_chi2", "peak_value", "score_peak"):
            cols[name] = np.zeros(n, dtype=bool)
        else:
            cols[name] = np.full(n, np.nan)
    return cols
