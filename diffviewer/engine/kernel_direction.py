"""Which image to convolve: the one whose convolution gives the quieter difference.

Before the stars are fitted, the difference's sky noise each direction would give is
estimated from the two PSF images, the two sky noises and the flux ratio. For each
direction the kernel mapping one PSF image onto the other is fitted with that
direction's basis (:func:`kernel_design.psf_kernel_coefficients`); convolving an image
multiplies its noise by the kernel's L2 norm (over its sum). In science units, with ``f``
the science/template flux ratio:

- template convolved: ``sqrt(sigma_sci^2 + (|K_t| f sigma_tmpl)^2)``
- science convolved: ``sqrt((|K_s| sigma_sci)^2 + (f sigma_tmpl)^2)``

Deconvolution (a kernel with negative lobes) raises the norm, so the noise already
penalises it; a direction whose convolved image has the broader PSF by more than
:data:`DECONVOLUTION_TOLERANCE` in FWHM is never taken by ``auto``. The PSF images, not
their FWHMs alone, decide: on the GOTO pair the two FWHMs agree within 2 %, but the
template's wing is the broader (Moffat index 3.3 against 4.1), so the kernel that maps the
science onto it smooths (norm 0.76) while the one the other way is nearly a delta (0.98):
the science is convolved, as HOTPANTS's figure of merit also decides.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from diffviewer.config import KernelConfig
from diffviewer.engine.kernel_basis import WING_MIN_STAMPS, plan_basis, psf_only_config
from diffviewer.engine.kernel_design import psf_kernel_coefficients
from diffviewer.engine.psf import PsfEstimate

#: Fractional FWHM excess of the convolved image over the other beyond which matching is
#: a deconvolution. 5 %: PSF measurements of one image scatter by 1-3 % between star
#: samples, and the wings, which FWHMs miss, matter as much (see the module docstring).
DECONVOLUTION_TOLERANCE = 0.05


@dataclasses.dataclass(frozen=True)
class Direction:
    """The direction of the PSF matching and the figures that chose it.

    Attributes
    ----------
    convolved : str
        'template' or 'science'.
    requested : str
        ``kernel.mode`` as configured ('template', 'science' or 'auto').
    noise_template_convolved, noise_science_convolved : float
        Expected sky noise of the difference (science units per pixel) when the template,
        or the science, is convolved (NaN when a noise is unknown).
    reason : str
        Why this direction, in words (for metadata.json and the GUI).
    """

    convolved: str
    requested: str
    noise_template_convolved: float
    noise_science_convolved: float
    reason: str


def kernel_norm(src_psf: PsfEstimate, tgt_psf: PsfEstimate, config: KernelConfig) -> float:
    """L2 norm over sum of the kernel mapping ``src_psf`` onto ``tgt_psf`` (1 for a delta),
    in the basis with its wing function that a fit to PSFs alone takes
    (:func:`~diffviewer.engine.kernel_basis.psf_only_config`).

    Parameters
    ----------
    src_psf, tgt_psf : PsfEstimate
        PSFs of the image that would be convolved and of the other.
    config : KernelConfig
        The basis.

    Returns
    -------
    float
    """
    psf_only = psf_only_config(config)
    basis = plan_basis(src_psf, tgt_psf, psf_only, WING_MIN_STAMPS).basis(psf_only.degrees)
    k = np.tensordot(psf_kernel_coefficients(src_psf, tgt_psf, basis), basis, axes=1)
    total = float(k.sum())
    return float(np.sqrt(np.sum(k**2))) / abs(total) if total else float("inf")


def choose_direction(
    config: KernelConfig,
    sci_psf: PsfEstimate,
    tmpl_psf: PsfEstimate,
    sky_noise_science: float,
    sky_noise_template: float,
    flux_ratio: float,
) -> tuple[Direction, list[str]]:
    """Which image to convolve, and warnings about deconvolution.

    Parameters
    ----------
    config : KernelConfig
        ``mode`` ('template', 'science' or 'auto': the direction of the smaller expected
        noise that needs no deconvolution) and the basis.
    sci_psf, tmpl_psf : PsfEstimate
        PSFs of the two images.
    sky_noise_science, sky_noise_template : float
        Sky noise per pixel of each image, in its own units.
    flux_ratio : float
        Science/template flux ratio (1 when unknown).

    Returns
    -------
    (Direction, list of str)
    """
    mode = config.mode
    fs, ft = sci_psf.fwhm, tmpl_psf.fwhm
    f = flux_ratio if np.isfinite(flux_ratio) and flux_ratio > 0 else 1.0
    ns, nt = sky_noise_science, f * sky_noise_template  # both in science units
    norm_t = kernel_norm(tmpl_psf, sci_psf, config)
    norm_s = kernel_norm(sci_psf, tmpl_psf, config)
    noise_t = math.hypot(ns, norm_t * nt)
    noise_s = math.hypot(norm_s * ns, nt)
    deconv_t = ft > fs * (1 + DECONVOLUTION_TOLERANCE)
    deconv_s = fs > ft * (1 + DECONVOLUTION_TOLERANCE)
    figures = (
        f"expected difference noise {noise_t:.4g} with the template convolved, "
        f"{noise_s:.4g} with the science convolved (kernel norms {norm_t:.3f} and "
        f"{norm_s:.3f}; PSF FWHM science {fs:.2f} px, template {ft:.2f} px; sky noise "
        f"science {sky_noise_science:.4g}, template {nt:.4g} in science units)"
    )
    if mode != "auto":
        chosen, why = mode, f"kernel.mode = '{mode}' ({figures})"
    elif deconv_t or deconv_s:
        chosen = "science" if deconv_t else "template"
        other = "template" if chosen == "science" else "science"
        why = f"the {other}'s PSF is the broader: convolving it would deconvolve ({figures})"
    else:
        chosen = "template" if noise_t <= noise_s else "science"
        why = f"the PSFs agree within {DECONVOLUTION_TOLERANCE:.0%}; least noise: {figures}"
    notes: list[str] = []
    if (chosen == "template" and deconv_t) or (chosen == "science" and deconv_s):
        src, tgt = (ft, fs) if chosen == "template" else (fs, ft)
        notes.append(
            f"matching would need deconvolution: the convolved {chosen} has FWHM {src:.2f} px, "
            f"broader than the other image's {tgt:.2f} px; consider kernel.mode = 'auto'"
        )
    return Direction(chosen, mode, noise_t, noise_s, why), notes
