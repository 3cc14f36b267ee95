"""Score images: ZOGY's corrected score S_corr and the Alard-Lupton preconvolution score.

Both scores are matched-filter images normalised by their own noise, so that a
point source's peak is its detection S/N and empty sky has unit variance.

ZOGY follows Zackay, Ofek & Gal-Yam (2016, ApJ 830, 27; "ZOGY" below): with the
new image N, the reference R, their PSFs P_n, P_r, sky noise sigma_n, sigma_r and
flux zero points F_n, F_r, and the denominator

    den = sigma_n^2 F_r^2 |P_r^|^2 + sigma_r^2 F_n^2 |P_n^|^2            (Fourier space)

the proper difference is D^ = (F_r P_r^ N^ - F_n P_n^ R^) / sqrt(den) (eq. 13), its
PSF P_D^ = F_r F_n P_r^ P_n^ / (F_D sqrt(den)) with F_D = F_r F_n /
sqrt(sigma_n^2 F_r^2 + sigma_r^2 F_n^2) (eqs. 14-15), and the score
S = F_D D (x) flip(P_D) (eq. 17) is the same as S = k_n (x) N - k_r (x) R with

    k_n^ = F_n F_r^2 conj(P_n^) |P_r^|^2 / den,   k_r^ = F_r F_n^2 conj(P_r^) |P_n^|^2 / den

(eqs. 26-27). The corrected score divides S by its standard deviation computed from
the images' own variance maps, which holds the sky and the source noise:
V(S_N) = V_N (x) k_n^2, V(S_R) = V_R (x) k_r^2 (eqs. 28-29), plus the astrometric
term sigma_ast^2 (|grad S_N|^2 + |grad S_R|^2) (eqs. 30-31), kept only where the
gradients stand above the sky noise's so that empty sky keeps unit variance:
S_corr = S / sqrt(V(S_N) + V(S_R) + V_ast) (eq. 25).

The kernels are built once on a small grid from the PSF images and used for both S
and its variance, so S_corr stays exactly normalised whatever their truncation.

When the PSFs are those the fitted matching kernel K makes (P_n = K (x) P_r / F_n with
the template convolved: :func:`~diffviewer.engine.score_psfs.kernel_matched_psfs`),
k_n^ K^ = k_r^ and S = k_n (x) (N - K (x) R) = k_n (x) D: the numerator is the
pair's difference filtered by k_n (with the science convolved, S = k_r (x) D' with D'
the difference in the template's units). Filtering D uses the kernel fitted at every
pixel, where k_n (x) N - k_r (x) R uses the kernel of the PSFs' node: at a star of
11,000 counts on a field whose kernel varies, the images' form left 6.15 sigma where
the difference holds the star's Poisson noise (k_n (x) D 0.38, the PSF fit 0.33). So
the pipeline makes S from the difference (:class:`KernelDifference`) and its variance
from the inputs' variance maps as above.

Where the PSF varies over the field, one pair of PSFs subtracts stars only near where
it was measured (on a 512^2 pair whose science FWHM changes by 50 % across the image,
the centre's PSFs left 218 false detections at stars). :func:`zogy_score_grid` takes
PSFs at the nodes of a grid (:class:`~diffviewer.engine.score_psfs.PsfGrid`, built from
the spatially varying kernel) and blends the scores of neighbouring nodes
(:mod:`diffviewer.engine.tiles`), as ZOGY's section 9 and the LSST pipeline compute
local PSFs on overlapping sub-images.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import scipy.fft as sfft

from diffviewer.config import ScoreConfig
from diffviewer.engine import tiles
from diffviewer.engine.background import SkyBackground, sampled_robust_std
from diffviewer.engine.photometry import PsfModel, centre_psf
from diffviewer.engine.progress import Reporter
from diffviewer.engine.score_psfs import PsfGrid
from diffviewer.engine.sky import input_backgrounds, usable_on_both
from diffviewer.engine.subtract import (
    GROWN,
    SubtractionProducts,
    footprint_half_width,
    grow_planes,
    grow_square,
    science_scale,
    template_planes,
)
from diffviewer.engine.tiles import FourierGrid, embed
from diffviewer.errors import InputError
from diffviewer.exposure import (
    MASK_DTYPE,
    PIXEL_DEFECTS,
    UNUSABLE,
    Exposure,
    MaskPlane,
    finite_usable,
    map_by_rows,
    planes_clear,
    planes_set,
)


@dataclasses.dataclass(frozen=True)
class ScoreResult:
    """A score image and what it was made from.

    Attributes
    ----------
    image : numpy.ndarray
        The score (float32, read-only): S/N of a point source at each pixel, unit
        variance in empty sky, 0 where ``mask`` has an unusable plane.
    method : str
        ``'zogy'`` (S_corr) or ``'al'`` (Alard-Lupton preconvolution).
    psf : numpy.ndarray
        PSF (small odd image, sum 1) of ZOGY's proper difference D (the score is D
        filtered by it) or of the difference (AL).
    mask : numpy.ndarray
        int32 mask planes; the score is not valid where any plane of
        :data:`~diffviewer.exposure.UNUSABLE` is set (NO_DATA where the inputs had none).
    noise_std : float
        Robust (MAD) standard deviation of the score over its valid pixels: 1 for a
        correct noise model; larger when the variance maps underestimate the noise.
    sigma_science, sigma_template : float
        Robust sky noise of the science and template after background subtraction
        (image units; NaN for AL).
    n_psf_nodes : int
        Positions at which the PSFs were evaluated (ZOGY's :class:`PsfGrid`, AL's PSF
        model; 1 for one PSF over the image).
    noise_scale : float
        The factor the score was divided by (:meth:`divided_by`: the run's noise
        renormalisation, :mod:`~diffviewer.engine.renormalise`); 1 when it was not.
    """

    image: np.ndarray
    method: str
    psf: np.ndarray
    mask: np.ndarray
    noise_std: float
    sigma_science: float = float("nan")
    sigma_template: float = float("nan")
    n_psf_nodes: int = 1
    noise_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("image", "psf", "mask"):
            getattr(self, name).flags.writeable = False

    def divided_by(self, scale: float) -> ScoreResult:
        """This score over ``scale`` (its noise too), divided in place: no second image plane.

        The caller hands this result over: its image is the new result's, and it must not
        be read again (a score another object holds is copied first).
        """
        image = self.image
        if image.base is None:
            image.flags.writeable = True
        else:
            image = image.copy()
        image *= np.float32(1.0 / scale)
        return dataclasses.replace(
            self,
            image=image,
            noise_std=self.noise_std / scale,
            noise_scale=self.noise_scale * scale,
        )


@dataclasses.dataclass(frozen=True, eq=False)
class KernelDifference:
    """The pair's PSF-matched difference, from which ZOGY's numerator is made.

    Attributes
    ----------
    products : SubtractionProducts
        The subtraction: its raw difference (science side minus template side, science
        counts) is made a cell at a time (:meth:`SubtractionProducts.difference_pixels`).
    usable : numpy.ndarray
        Where the raw difference is usable (no unusable plane, a finite value and a
        positive variance: :func:`~diffviewer.exposure.finite_usable`); taken over
        (overwritten by :func:`zogy_score_grid`).
    """

    products: SubtractionProducts
    usable: np.ndarray

    @property
    def science_unconvolved(self) -> bool:
        """Whether the science is the unconvolved image (its kernel k_n filters D)."""
        return self.products.fit.convolved == "template"

    def plane(self, box: tuple[slice, slice], sigmas: tuple[float, float]) -> np.ndarray:
        """The difference on ``box`` in the unconvolved image's units of sky noise: D /
        sigma_n, or, with the science convolved, D / (scale sigma_r) (the difference in
        template counts, :func:`~diffviewer.engine.subtract.science_scale`)."""
        sigma_n, sigma_r = sigmas
        unit = sigma_n if self.science_unconvolved else science_scale(self.products.fit) * sigma_r
        plane = self.products.difference_pixels(box)
        plane *= np.float32(1.0 / unit)
        return plane


def _normalised_psf(psf: np.ndarray, name: str) -> np.ndarray:
    """Check a PSF image (2-D, odd sides, positive sum) and return it with sum 1."""
    p = np.asarray(psf, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] % 2 == 0 or p.shape[1] % 2 == 0:
        raise InputError(f"{name} PSF must be a 2-D image with odd sides, got shape {p.shape}")
    total = float(np.sum(p))
    if not np.all(np.isfinite(p)) or total <= 0.0:
        raise InputError(
            f"{name} PSF has a non-finite value or a sum <= 0 ({total}); "
            "give a PSF image with positive flux"
        )
    return p / total


@dataclasses.dataclass(frozen=True)
class _ZogyKernels:
    """ZOGY's score kernels, centred, on a small grid, and the proper difference's PSF."""

    k_n: np.ndarray
    k_r: np.ndarray
    psf_d: np.ndarray


def zogy_kernels(
    sci_psf: np.ndarray,
    tmpl_psf: np.ndarray,
    sigma_n: float,
    sigma_r: float,
    f_n: float,
    f_r: float,
) -> _ZogyKernels:
    """ZOGY's score kernels k_n, k_r and the proper difference's PSF P_D.

    Parameters
    ----------
    sci_psf, tmpl_psf : numpy.ndarray
        PSF images of the new and reference images (odd sides; normalised here).
    sigma_n, sigma_r : float
        Sky noise per pixel of the two images (image units).
    f_n, f_r : float
        Flux zero points (only their ratio matters for S_corr).

    Returns
    -------
    _ZogyKernels
        Centred kernels on an odd grid of about three PSF sides, and P_D cropped
        to the larger PSF side (sum 1). ``S = k_n (x) N - k_r (x) R`` (convolutions).
    """
    p_n, p_r = _normalised_psf(sci_psf, "science"), _normalised_psf(tmpl_psf, "template")
    side = max(*p_n.shape, *p_r.shape)
    size = 3 * side
    grid = (size, size)
    pn_hat = sfft.rfft2(embed(p_n, grid))
    pr_hat = sfft.rfft2(embed(p_r, grid))
    den = sigma_n**2 * f_r**2 * np.abs(pr_hat) ** 2 + sigma_r**2 * f_n**2 * np.abs(pn_hat) ** 2
    den = np.maximum(den, 1e-12 * float(den.max()))
    k_n_hat = f_n * f_r**2 * np.conj(pn_hat) * np.abs(pr_hat) ** 2 / den
    k_r_hat = f_r * f_n**2 * np.conj(pr_hat) * np.abs(pn_hat) ** 2 / den
    root = np.sqrt(den)
    f_d = f_r * f_n / np.sqrt(sigma_n**2 * f_r**2 + sigma_r**2 * f_n**2)
    pd_hat = f_r * f_n * pr_hat * pn_hat / (f_d * root)

    def real(spec: np.ndarray) -> np.ndarray:
        return sfft.fftshift(sfft.irfft2(spec, s=grid))

    c, h = size // 2, side // 2
    psf_d = real(pd_hat)[c - h : c + h + 1, c - h : c + h + 1]
    psf_d = psf_d / psf_d.sum()
    return _ZogyKernels(real(k_n_hat), real(k_r_hat), psf_d)


def _signal_gradient2(filtered: np.ndarray, kernel: np.ndarray, sigma: float) -> np.ndarray:
    """|grad S|^2 of a filtered image where it is significantly above the sky noise's.

    ZOGY's astrometric term (eqs. 30-31) uses the gradients of S_N = k_n (x) N and
    S_R = k_r (x) R; on noisy images those gradients hold noise everywhere, which would
    inflate the variance of empty sky. The sky noise alone gives |grad S|^2 an
    (about exponential) distribution of mean sigma^2 sum |grad k|^2 (the central
    difference is linear, so grad(k (x) N) = grad(k) (x) N); only values above 9 times
    that mean (a chance of 1e-4 for noise) are kept, the gradients of real sources.
    """
    gy, gx = np.gradient(filtered)
    ky, kx = np.gradient(kernel)
    noise = sigma**2 * float(np.sum(kx * kx + ky * ky))
    # |grad S|^2 in place (the same roundings as gx * gx + gy * gy): two of the cell's
    # planes at once, not five (the score held a 1024^2 run's second peak).
    grad2 = np.multiply(gx, gx, out=gx)
    grad2 += np.multiply(gy, gy, out=gy)
    del gy
    grad2[~(grad2 > 9.0 * noise)] = 0.0
    return grad2


def _variance_floor(var: np.ndarray) -> float:
    """Score variance below which a pixel has no data (FFT round-off around masked areas)."""
    return 1e-6 * float(np.max(var))


def _score_mask(
    science: Exposure,
    template: Exposure,
    bad: np.ndarray,
    size: int,
    reach: int,
    zeroed: np.ndarray | None = None,
    grow_defects: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The score's mask and where the score is invalid.

    The union of the two masks (template SAT as SAT_TEMPLATE) with its planes grown by
    the score kernels' footprint (``size`` px square, :func:`subtract.grow_planes`):
    the score there sums the wings of a source whose core was zeroed. A saturated core
    hides any flux, so its share in the kernels' tail beyond the footprint is not
    bounded: SAT and SAT_TEMPLATE are grown by the kernels' whole side (``reach`` px
    square; at the footprint of 99 % of the weight, a 6e6-count star clipped at 6e4 left
    a -5.7 sigma score one pixel outside its grown SAT). ``bad`` pixels (unusable on
    either input, or without data) are grown by ``size``; ``zeroed`` pixels (those left
    out of a score made from the difference, whose variance leaves them out too) are
    invalid, not grown; NO_DATA marks those no plane explains. Without ``grow_defects``
    (a score made from the difference, which is 0 at a defect on either image as a
    static star's residual is about it; the images' zeroed defects in its astrometric
    term only raise its variance there) pixel defects
    (:data:`~diffviewer.exposure.PIXEL_DEFECTS`: cosmic rays, bad columns) are not grown
    either: grown by the score's footprint, cosmic rays on 0.3 % of a synthetic science's
    pixels left its score invalid almost everywhere and 35 of 49 transients of S/N 17
    detected on it. Made from the images, a defect zeroed on a star's wing unbalances the
    two filtered images by its light there, and is grown.

    Returns
    -------
    mask : numpy.ndarray
        int32 mask.
    invalid : numpy.ndarray
        Boolean map where the score is not valid.
    """
    # In place, and the planes' maps by blocks of rows: this runs beside the score and
    # its variance, at the score step's peak (GOTO: 32 MB over them before, 23 MB now).
    union = template_planes(template.mask)
    union |= science.mask
    saturated = int(MaskPlane.SAT | MaskPlane.SAT_TEMPLATE)
    present = int(np.bitwise_or.reduce(union, axis=None))
    grown = GROWN if grow_defects else GROWN & ~int(PIXEL_DEFECTS)
    mask = grow_planes(union, size, grown).astype(MASK_DTYPE, copy=False)
    # Planes absent from the image cost no image-sized pass (each is ~0.1 s at 4096^2).
    if present & saturated:
        grow_planes(union, reach, saturated, out=mask)
    if not grow_defects and present & int(PIXEL_DEFECTS):
        # the pixels unusable for a defect alone: invalid (zeroed), not grown
        alone = planes_set(union, int(PIXEL_DEFECTS))
        alone &= planes_clear(union, int(UNUSABLE & ~PIXEL_DEFECTS))
        bad = bad & ~alone
        del alone
    del union
    invalid = grow_square(bad, size)
    if zeroed is not None:
        invalid |= zeroed
    if int(np.bitwise_or.reduce(mask, axis=None)) & int(UNUSABLE):
        flagged = planes_set(mask, int(UNUSABLE))
        mask[invalid & ~flagged] |= MASK_DTYPE(MaskPlane.NO_DATA)
        invalid |= flagged
    else:
        mask[invalid] |= MASK_DTYPE(MaskPlane.NO_DATA)
    return mask, invalid


def _crop_kernel(kernel: np.ndarray, half: int) -> np.ndarray:
    """The central ``2 * half + 1`` square of a centred kernel, a copy: a view would keep
    the whole kernel alive (GOTO's 36 nodes' uncropped k_n and k_r, 17.5 MB, through the
    score step, the run's peak of memory)."""
    c = kernel.shape[0] // 2
    return kernel[c - half : c + half + 1, c - half : c + half + 1].copy()


def _node_kernels(grid: PsfGrid, ratio_scale: float) -> list[list[_ZogyKernels]]:
    """ZOGY kernels at every node, cropped to hold all but :data:`KERNEL_TAIL` of k_n and k_r.

    S and its variance use the same cropped kernels, so S_corr stays exactly normalised,
    and a source's share of the cut tail is cut from S_N and S_R alike.
    """
    full = [
        [
            zogy_kernels(sci, tmpl, 1.0, 1.0, float(ratio) * ratio_scale, 1.0)
            for sci, tmpl, ratio in zip(srow, trow, rrow, strict=True)
        ]
        for srow, trow, rrow in zip(grid.science, grid.template, grid.flux_ratio, strict=True)
    ]
    half = max(
        footprint_half_width(k, 1.0 - KERNEL_TAIL)
        for row in full
        for kern in row
        for k in (kern.k_n, kern.k_r)
    )
    return [
        [
            dataclasses.replace(
                kern,
                k_n=_crop_kernel(kern.k_n, half),
                k_r=_crop_kernel(kern.k_r, half),
            )
            for kern in row
        ]
        for row in full
    ]


#: Fraction of sum |k| of ZOGY's score kernels left out by cropping them (:func:`_node_kernels`).
KERNEL_TAIL = 1e-4


def _check_flux_ratios(science: Exposure, template: Exposure, ratios: np.ndarray) -> None:
    """Raise unless every flux ratio (kernel sum) is a positive number."""
    bad = ratios[~(np.isfinite(ratios) & (ratios > 0.0))]
    if bad.size:
        raise InputError(
            f"the flux ratio of {science.source} to {template.source} (the PSF-matching "
            f"kernel's sum) is {float(bad.flat[0])}, not a positive number: the kernel fit "
            "failed; check the kernel stars and residuals, or use score.method = 'al'"
        )


def zogy_score(
    science: Exposure,
    template: Exposure,
    sci_psf: np.ndarray,
    tmpl_psf: np.ndarray,
    flux_ratio: float,
    config: ScoreConfig,
    reporter: Reporter,
) -> ScoreResult:
    """ZOGY's corrected score S_corr with one PSF per image.

    :func:`zogy_score_grid` with a single node (see there for the parameters).

    Parameters
    ----------
    science, template : Exposure
        The new and reference images on one pixel grid (image units), with variance maps.
    sci_psf, tmpl_psf : numpy.ndarray
        Their PSF images (small, odd sides, any normalisation).
    flux_ratio : float
        Science flux over template flux of one source (F_n / F_r; the kernel sum).
    config : ScoreConfig
        ``astrometric_noise`` (px per axis) and ``background_mesh`` (px).
    reporter : Reporter
        Progress and cancellation.

    Returns
    -------
    ScoreResult
    """
    grid = PsfGrid.constant(sci_psf, tmpl_psf, flux_ratio, science.shape)
    return zogy_score_grid(science, template, grid, config, reporter)


def zogy_score_grid(
    science: Exposure,
    template: Exposure,
    psfs: PsfGrid,
    config: ScoreConfig,
    reporter: Reporter,
    backgrounds: tuple[SkyBackground, SkyBackground] | None = None,
    usable: np.ndarray | None = None,
    difference: KernelDifference | None = None,
) -> ScoreResult:
    """ZOGY's corrected score S_corr with PSFs that vary over the image.

    Each image's background is subtracted (given, or estimated here:
    :func:`~diffviewer.engine.sky.input_backgrounds`); pixels unusable in either image
    (or non-finite, or with non-positive variance) are set to 0 in both images and their
    variance, so they add neither signal nor noise, and are 0 and masked in S_corr.

    The image is cut into the cells between the grid's nodes. In each cell, with the
    data around it to the kernels' reach (and zeros beyond the image), the score S and
    its variance V are computed with the PSFs of each corner
    node and blended with bilinear weights w: ``S_corr = sum w S / sqrt(sum w V)``. A
    star's residual in S is linear in the error of the PSF used, to first order, so
    the blend of the corner nodes' scores errs only to second order in the PSF change
    across a cell (the linear part of the change is interpolated exactly). Where the
    nodes' scores are not fully correlated, ``sum w S`` has a variance below ``sum w V``
    (Cauchy-Schwarz): the blend never inflates the noise.

    Parameters
    ----------
    science, template : Exposure
        The new and reference images on one pixel grid (image units), with variance maps.
    psfs : PsfGrid
        PSFs and flux ratio (F_n / F_r; the kernel sum) at the grid's nodes.
    config : ScoreConfig
        ``astrometric_noise`` (px per axis) and ``background_mesh`` (px).
    reporter : Reporter
        Progress and cancellation.
    backgrounds : (SkyBackground, SkyBackground), optional
        The science's and the template's backgrounds and sky noise
        (:func:`~diffviewer.engine.sky.sky_backgrounds` with ``config.background_mesh``),
        when the run has them already.
    usable : numpy.ndarray, optional
        :func:`~diffviewer.engine.sky.usable_on_both` of the two, when the run has it.
    difference : KernelDifference, optional
        The pair's difference by the kernel whose matched PSFs ``psfs`` holds
        (:func:`~diffviewer.engine.score_psfs.kernel_psf_grid`): S is then the
        difference filtered by the unconvolved image's kernel (module docstring), 0 and
        masked NO_DATA (unless a plane says why) where the difference is unusable, where
        its noise is left out of the variance too. Without it, S is made from the images.

    Returns
    -------
    ScoreResult
        ``image`` is S_corr; ``psf`` is P_D at the node nearest the image centre.

    Raises
    ------
    InputError
        On different image shapes, a bad PSF, a non-positive flux ratio, or no usable pixel.
    """
    if science.shape != template.shape:
        raise InputError(
            f"ZOGY needs images on one grid: science {science.shape} vs "
            f"template {template.shape}; warp the template first"
        )
    _check_flux_ratios(science, template, np.asarray(psfs.flux_ratio, dtype=float))
    good = usable_on_both(science, template) if usable is None else usable
    if not np.any(good):
        raise InputError(f"{science.source} and {template.source} share no usable pixel")
    bad = np.logical_not(good, out=good if usable is None else None)  # a given map is shared
    del good
    sci_bkg, tmpl_bkg = backgrounds or input_backgrounds(science, template, config.background_mesh)
    sigma_n, sigma_r = sci_bkg.sigma, tmpl_bkg.sigma
    reporter.update(0.2)
    if not (sigma_n > 0.0 and sigma_r > 0.0):
        raise InputError(
            f"sky noise of {science.source} ({sigma_n}) or {template.source} "
            f"({sigma_r}) is not positive; check the images"
        )
    # Each image in units of its own sky noise, so that the kernels, S and its variance
    # are of order 1 whatever the flux unit (k_n scales as 1/sigma^2: in physical units,
    # ~1e-12, k_n^2 overflows float32). A source of template flux f is then
    # F_n f / sigma_n on N and f / sigma_r on R: the zero points become F_n sigma_r / sigma_n
    # and 1 (times sigma_r, which S_corr and D do not see).
    kernels = _node_kernels(psfs, sigma_r / sigma_n)
    zeroed = None
    if difference is not None:
        # Where the difference is unusable, its noise leaves S and V alike.
        zeroed = np.logical_not(difference.usable, out=difference.usable)
        zeroed |= bad
    layout = _Layout(difference, config.astrometric_noise)
    planes = functools.partial(
        _cell_planes,
        science,
        template,
        (sci_bkg, tmpl_bkg),
        (sigma_n, sigma_r),
        bad,
        zeroed,
        layout,
    )
    reporter.update(0.3)
    score, var = tiles.blend_cells(
        science.shape,
        planes,
        psfs.xs,
        psfs.ys,
        kernels[0][0].k_n.shape[0] // 2,
        lambda grid, j, i: _kernel_spectra(grid, kernels[j][i]),
        lambda grid, j, i, spectra, data: _node_products(
            grid, kernels[j][i], spectra, data, layout
        ),
        lambda done: reporter.update(0.3 + 0.6 * done),
    )
    del planes
    # Near an unusable pixel (a saturated core set to 0) the score holds the wings alone.
    half = max(
        max(footprint_half_width(kern.k_n), footprint_half_width(kern.k_r))
        for row in kernels
        for kern in row
    )
    empty = ~(var > _variance_floor(var))
    if zeroed is not None:
        # left out of S and V alike, so invalid but not grown (the difference's EDGE band
        # grown by the kernels' side was a whole-image filter, 17 MB at 2048 x 4096)
        np.putmask(empty, zeroed, False)
    mask, invalid = _score_mask(
        science,
        template,
        np.logical_or(bad, empty, out=empty),
        2 * half + 1,
        kernels[0][0].k_n.shape[0],
        zeroed,
        grow_defects=layout.difference is None,
    )
    # In place, in float32: S_corr = S / sqrt(V), 0 where invalid.
    var[invalid] = 1.0
    np.sqrt(var, out=var)
    s_corr = np.divide(score, var, out=score)
    del var
    s_corr[invalid] = 0.0
    reporter.update(1.0)
    centre_row = int(np.argmin(np.abs(np.asarray(psfs.ys) - (science.shape[0] - 1) / 2.0)))
    centre_col = int(np.argmin(np.abs(np.asarray(psfs.xs) - (science.shape[1] - 1) / 2.0)))
    return ScoreResult(
        image=s_corr,
        method="zogy",
        psf=kernels[centre_row][centre_col].psf_d,
        mask=mask,
        noise_std=sampled_robust_std(s_corr, ~invalid),
        sigma_science=sigma_n,
        sigma_template=sigma_r,
        n_psf_nodes=psfs.n_nodes,
    )


def _scaled_plane(
    image: np.ndarray, background: np.ndarray | None, scale: float, bad: np.ndarray
) -> np.ndarray:
    """``(image - background) * scale`` in float32, 0 where ``bad`` (one new array; the
    arguments may be cutouts of one box; ``background`` is overwritten)."""
    out = None
    if background is not None:
        out = np.subtract(image, background, out=background, dtype=np.float32)
    out = np.multiply(image if out is None else out, np.float32(scale), out=out, dtype=np.float32)
    out[bad] = 0.0
    return out


@dataclasses.dataclass(frozen=True)
class _Layout:
    """What a cell's score is made from, and which planes its data holds
    (:func:`_cell_planes`): the variances of N and R, then N and R unless S is made from
    the difference without the astrometric term, then the difference when S is made from
    it."""

    difference: KernelDifference | None
    astrometric_noise: float

    @property
    def images(self) -> bool:
        """Whether N and R are among the planes."""
        return self.difference is None or self.astrometric_noise > 0.0


def _cell_planes(
    science: Exposure,
    template: Exposure,
    backgrounds: tuple[SkyBackground, SkyBackground],
    sigmas: tuple[float, float],
    bad: np.ndarray,
    zeroed: np.ndarray | None,
    layout: _Layout,
    box: tuple[slice, slice],
) -> tuple[np.ndarray, ...]:
    """The planes of ``layout`` on one cell's ``box``, each in units of its sky noise
    (:func:`_scaled_plane`; the backgrounds evaluated on the box), 0 where ``bad`` (the
    variances and the difference where ``zeroed``, when given): made per cell, not as
    image-sized planes (the score step held the run's peak memory)."""
    (bkg_n, bkg_r), (sigma_n, sigma_r) = backgrounds, sigmas
    off = (bad if zeroed is None else zeroed)[box]
    planes: tuple[np.ndarray, ...] = (
        _scaled_plane(science.variance[box], None, sigma_n**-2, off),
        _scaled_plane(template.variance[box], None, sigma_r**-2, off),
    )
    if layout.images:
        planes += (
            _scaled_plane(science.image[box], bkg_n.image(box), 1.0 / sigma_n, bad[box]),
            _scaled_plane(template.image[box], bkg_r.image(box), 1.0 / sigma_r, bad[box]),
        )
    if layout.difference is not None:
        plane = layout.difference.plane(box, sigmas)
        plane[off] = 0.0
        planes += (plane,)
    return planes


def _kernel_spectra(grid: FourierGrid, kern: _ZogyKernels) -> tuple[np.ndarray, ...]:
    """Spectra of k_n, k_r, k_n^2, k_r^2 on a grid."""
    return tuple(grid.kernel_spectrum(k) for k in (kern.k_n, kern.k_r, kern.k_n**2, kern.k_r**2))


def _node_products(
    grid: FourierGrid,
    kern: _ZogyKernels,
    kernel_spectra: tuple[np.ndarray, ...],
    data: tuple[np.ndarray, ...],
    layout: _Layout,
) -> tuple[np.ndarray, np.ndarray]:
    """S and V(S) (eqs. 28-31) on a grid: S = k_n (x) N - k_r (x) R, or the difference
    filtered by the unconvolved image's kernel (``layout``)."""
    vn_hat, vr_hat = data[:2]
    kn_hat, kr_hat, kn2_hat, kr2_hat = kernel_spectra
    var = grid.image(vn_hat * kn2_hat + vr_hat * kr2_hat)
    astrometric_noise = layout.astrometric_noise
    if astrometric_noise > 0.0:
        n_hat, r_hat = data[2:4]
        s_n, s_r = grid.image(kn_hat * n_hat), grid.image(kr_hat * r_hat)
        for s_part, kernel in ((s_n, kern.k_n), (s_r, kern.k_r)):
            var += astrometric_noise**2 * _signal_gradient2(s_part, kernel, 1.0)
        if layout.difference is None:
            return s_n - s_r, var
    if layout.difference is not None:
        kc_hat = kn_hat if layout.difference.science_unconvolved else kr_hat
        return grid.image(kc_hat * data[-1]), var
    n_hat, r_hat = data[2:4]
    return grid.image(kn_hat * n_hat - kr_hat * r_hat), var


def al_score(difference: Exposure, psf: np.ndarray | PsfModel, reporter: Reporter) -> ScoreResult:
    """Alard-Lupton preconvolution score: the difference filtered by its PSF over its noise.

    ``score = (d (x) flip(P)) / sqrt(v (x) flip(P)^2)``, as the LSST pipeline's
    preconvolution mode detects: a point source's peak is its PSF-photometry S/N
    (``f sqrt(sum P^2) / sigma``) and white sky noise gives unit variance.

    Where the PSF varies over the image (a :class:`~diffviewer.engine.psf_field.PsfField`),
    both convolutions are made with each node's PSF and blended bilinearly between the
    nodes (:func:`~diffviewer.engine.tiles.convolve_field`), as the model blends its PSFs:
    the numerator is then exactly the forced PSF fit's with the model's PSF at the pixel
    (:func:`~diffviewer.engine.photometry.forced_psf_flux`), and the blended variance
    exceeds that fit's by the nodes' spread about their blend (second order in the PSF's
    change across a cell). A source's ``snr`` is thus the detection image at its position,
    measured with one PSF: with the centre's PSF for detection and the varying one for the
    catalog, star residuals on GOTO found at 9 sigma had a PSF-fit S/N of 3.

    Parameters
    ----------
    difference : Exposure
        The difference image with its variance (image units).
    psf : numpy.ndarray or PsfModel
        The difference's PSF (small, odd sides; normalised here), or its model over the
        image.
    reporter : Reporter
        Progress and cancellation.

    Returns
    -------
    ScoreResult
        ``method='al'``, ``psf`` the normalised PSF (the model's at the image centre),
        ``n_psf_nodes`` the model's nodes.

    Raises
    ------
    InputError
        On a bad PSF. A difference without any usable pixel gives a score of zeros,
        all masked NO_DATA.
    """
    xs, ys, images = psf.nodes() if isinstance(psf, PsfModel) else ((0.0,), (0.0,), ((psf,),))
    p = _normalised_psf(centre_psf(psf), "difference")
    bad = map_by_rows(difference.shape, lambda rows: ~finite_usable(difference, rows))
    if np.all(bad):
        # A cutout smaller than the kernel is all EDGE: nothing to score, nothing found.
        return ScoreResult(
            image=np.zeros(difference.shape, dtype=np.float32),
            method="al",
            psf=p,
            mask=(difference.mask | int(MaskPlane.NO_DATA)).astype(MASK_DTYPE),
            noise_std=float("nan"),
        )
    flipped = [[_normalised_psf(q, "difference")[::-1, ::-1] for q in row] for row in images]
    num, var = tiles.convolve_field(
        difference.shape,
        lambda box: (
            _scaled_plane(difference.image[box], None, 1.0, bad[box]),
            _scaled_plane(difference.variance[box], None, 1.0, bad[box]),
        ),
        xs,
        ys,
        [[(f, f**2) for f in row] for row in flipped],
        lambda done: reporter.update(0.9 * done),
    )
    invalid = bad | ~(var > _variance_floor(var))
    # In place, in float32.
    var[invalid] = 1.0
    np.sqrt(var, out=var)
    score = np.divide(num, var, out=num)
    del var
    score[invalid] = 0.0
    mask = difference.mask.astype(MASK_DTYPE)
    unexplained = invalid & planes_clear(mask, int(UNUSABLE))
    np.bitwise_or(mask, MASK_DTYPE(MaskPlane.NO_DATA), out=mask, where=unexplained)
    reporter.update(1.0)
    return ScoreResult(
        image=score,
        method="al",
        psf=p,
        n_psf_nodes=len(xs) * len(ys),
        mask=mask,
        noise_std=sampled_robust_std(score, ~invalid),
    )
