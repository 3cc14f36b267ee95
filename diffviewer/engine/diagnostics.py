"""The runDebug diagnostics: normalised residuals, stamp views, kernel mosaic, noise ratio.

Residual definitions (all 1-D float32 arrays of pixel values, over each stamp's fit
region of half-width ``fit.fit_half``):

* ``own``: candidates (GOOD and BAD) with their own kernel and background:
  ``target - K_i * source - b_i``, in the target's sense (science side minus template side).
* ``spatial``: GOOD candidates on the raw difference (spatial model).
* ``control``: the stars held out of the kernel that judges them: CONTROL candidates on
  the raw difference (spatial model, never fitted), then GOOD candidates with the
  spatial fit made without their fold of the cross-validation (from the inputs, as
  ``own``).
* ``image``: the final difference (decorrelated when it was), every good pixel on a
  regular subsampling grid (at most :data:`MAX_IMAGE_SAMPLES`).

Each panel of candidates holds at most :data:`MAX_STAMP_SAMPLES` pixels, from every
k-th of its stars.

Each is normalised two ways:

* ``*_by_difference``: divided by the square root of the difference's own variance plane
  (for ``own``: ``sqrt(var_target + K_i^2 * var_source)``);
* ``*_by_input``: divided by ``sqrt(var_sci + kappa^2 var_tmpl)`` (template convolved) or
  ``sqrt(kappa^2 var_sci + var_tmpl)`` (science convolved), the input variances at the
  pixel without the kernel's smoothing, ``kappa`` the local kernel sum. For a raw
  (correlated) difference this is larger than the difference variance, so these
  residuals have a spread below 1 by the factor the decorrelation later removes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from diffviewer.engine import fftconv
from diffviewer.engine.kernel_design import convolve_pairs, stamp_batch
from diffviewer.engine.kernel_solution import KernelFit, KernelSolution
from diffviewer.engine.lent import lent_map
from diffviewer.engine.progress import Reporter
from diffviewer.engine.psf import cutouts, frozen
from diffviewer.engine.subtract import science_scale
from diffviewer.exposure import UNUSABLE, Exposure, MaskPlane
from diffviewer.stats import robust_std

#: Most pixels sampled from the whole image.
MAX_IMAGE_SAMPLES = 200_000

#: Most pixels a panel of candidates samples (:func:`_sampled_stars`): a 2048 x 4096
#: pair's three such panels held 9 million (72 MB, kept to the run's end and written).
MAX_STAMP_SAMPLES = 1_000_000

#: Pixels excluded from the noise ratio besides the unusable ones.
_NOT_SKY = int(UNUSABLE | MaskPlane.DETECTED | MaskPlane.DETECTED_NEGATIVE | MaskPlane.SAT_TEMPLATE)

#: Least number of sky pixels for a noise ratio: the robust std of n Gaussian values is
#: known to 1.17 / sqrt(n), 5 % with 500 (fewer give no figure: NaN, "not measured").
MIN_NOISE_PIXELS = 500

#: Sigma-clipping limit for the noise ratio (removes source residuals, keeps 99.99% of noise).
CLIP_SIGMA = 4.0


def noise_ratio(difference: Exposure, max_samples: int = 250_000) -> float:
    """Robust std of ``difference / sqrt(variance)`` over source-free sky.

    Pixels with unusable or DETECTED planes are left out; then residual sources are
    removed by clipping at :data:`CLIP_SIGMA` robust sigma about the median (twice), and
    the robust std (1.4826 MAD) of what remains is returned. 1 means the variance plane
    describes the noise. At most ``max_samples`` pixels (a regular subsampling) are used.

    Parameters
    ----------
    difference : Exposure
        A difference image with its variance and mask.
    max_samples : int
        Most pixels used.

    Returns
    -------
    float
        NaN with fewer than :data:`MIN_NOISE_PIXELS` sky pixels (a cutout its source
        fills: one sky pixel gave 0).
    """
    step = max(1, int(np.sqrt(difference.image.size / max_samples)))
    variance = difference.variance[::step, ::step]
    g = ((difference.mask[::step, ::step] & _NOT_SKY) == 0) & (variance > 0)
    z = difference.image[::step, ::step][g] / np.sqrt(variance[g])
    z = z[np.isfinite(z)].astype(np.float64)
    if z.size < MIN_NOISE_PIXELS:
        return float("nan")
    for _ in range(2):
        med, sig = np.median(z), robust_std(z)
        z = z[np.abs(z - med) < CLIP_SIGMA * max(sig, 1e-30)]
    return robust_std(z)


def _input_sigma(
    science: Exposure,
    template: Exposure,
    fit: KernelFit,
    rows: np.ndarray | slice,
    cols: np.ndarray | slice,
    ksum: np.ndarray | float,
) -> np.ndarray:
    """``sqrt(var_sci + kappa^2 var_tmpl)`` (or with the roles swapped) at pixels."""
    vs = science.variance[rows, cols].astype(np.float64)
    vt = template.variance[rows, cols].astype(np.float64)
    k2 = np.asarray(ksum, dtype=np.float64) ** 2
    var = vs + k2 * vt if fit.convolved == "template" else k2 * vs + vt
    return np.sqrt(np.clip(var, 1e-30, None))


def _stamp_pixels(
    image: Exposure, x: np.ndarray, y: np.ndarray, half: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values, variances and usability of stamp pixels (flattened), and the stamps' positions."""
    xi, yi = np.rint(x).astype(np.intp), np.rint(y).astype(np.intp)
    v, inside = cutouts(image.image, xi, yi, half)
    var, _ = cutouts(image.variance, xi, yi, half)
    m, _ = cutouts(image.mask, xi, yi, half)
    ok = inside[:, None, None] & ((m & int(UNUSABLE)) == 0) & (var > 0)
    return v, var, ok


def _batched(
    residuals: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], n: int, side: int
) -> tuple[np.ndarray, np.ndarray]:
    """``residuals(idx)`` (two flat arrays) over ``range(n)``, as many stamps of ``side``
    px at a time as :func:`kernel_design.convolve_pairs` transforms at once, joined in
    order: the stamps, their kernels and index planes of every candidate at once were
    the peak of a 2048 x 4096 run (+280 MB over the 490 MB it held). The batches run on
    the run's lent threads when it has some (:func:`~diffviewer.engine.lent.lent_map`)."""
    step = stamp_batch(side, 1)
    batches = [np.arange(s, min(s + step, n)) for s in range(0, n, step)]
    parts = list(lent_map()(residuals, batches))
    if not parts:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _sampled_stars(rows: np.ndarray, side: int) -> np.ndarray:
    """Every k-th of the candidate ``rows`` (in S/N order: bright and faint alike), ``k``
    the least that keeps their stamps' pixels (``side`` squared each) within
    :data:`MAX_STAMP_SAMPLES`."""
    return rows[:: max(1, math.ceil(len(rows) * side * side / MAX_STAMP_SAMPLES))]


def _stamp_residuals(
    science: Exposure,
    template: Exposure,
    fit: KernelFit,
    raw: Exposure,
    which: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Spatial-model residuals of the selected candidates on the raw difference, normalised
    both ways."""
    tab = fit.candidates
    half = fit.fit_half
    rows = _sampled_stars(np.nonzero(which)[0], 2 * half + 1)
    x_all = np.asarray(tab["x"], dtype=float)[rows]
    y_all = np.asarray(tab["y"], dtype=float)[rows]
    off = np.arange(-half, half + 1)

    def residuals(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = x_all[idx], y_all[idx]
        v, var, ok = _stamp_pixels(raw, x, y, half)
        xi, yi = np.rint(x).astype(np.intp), np.rint(y).astype(np.intp)
        rows = np.clip(yi[:, None, None] + off[None, :, None], 0, science.shape[0] - 1)
        cols = np.clip(xi[:, None, None] + off[None, None, :], 0, science.shape[1] - 1)
        ksum = fit.solution.kernel_sum(x, y)[:, None, None]
        # The difference is in science counts (see subtract.science_scale), the input
        # sigma in the convolved frame's.
        sig_in = _input_sigma(science, template, fit, rows, cols, ksum) * science_scale(fit)
        by_diff = v[ok] / np.sqrt(var[ok])
        by_in = v[ok] / sig_in[ok]
        return by_diff.astype(np.float32), by_in.astype(np.float32)

    return _batched(residuals, len(x_all), 2 * half + 1)


def _own_residuals(
    science: Exposure, template: Exposure, fit: KernelFit
) -> tuple[np.ndarray, np.ndarray]:
    """Residuals of GOOD and BAD candidates with their own kernels, normalised both ways."""
    status = np.asarray(fit.candidates["status"]).astype(str)
    own = fit.own_coefficients
    sel = np.nonzero((status != "CONTROL") & np.all(np.isfinite(own), axis=1))[0]
    sel = _sampled_stars(sel, 2 * fit.fit_half + 1)
    return _kernel_residuals(science, template, fit, sel, own[sel], fit.stamp_basis)


def _held_out_residuals(
    science: Exposure, template: Exposure, fit: KernelFit
) -> tuple[np.ndarray, np.ndarray]:
    """Residuals of GOOD candidates with the kernel fitted without their fold of the
    cross-validation (:attr:`KernelFit.held_out_coefficients`), normalised both ways."""
    held = fit.held_out_coefficients
    if held.size == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    sel = _sampled_stars(np.nonzero(np.all(np.isfinite(held), axis=1))[0], 2 * fit.fit_half + 1)
    return _kernel_residuals(science, template, fit, sel, held[sel], fit.solution.basis)


def _kernel_residuals(
    science: Exposure,
    template: Exposure,
    fit: KernelFit,
    sel: np.ndarray,
    coef_all: np.ndarray,
    basis: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Residuals of the candidates ``sel`` each with its kernel and background
    ``coef_all`` (one row each, on ``basis``; the background in the difference's sense),
    made from the inputs' cutouts and normalised both ways."""
    tab = fit.candidates
    half = fit.fit_half
    reach = half + basis.shape[-1] // 2  # the source's cutout: stamp and kernel
    source, target = fit.source_target(science, template)
    x_all = np.asarray(tab["x"], dtype=float)[sel]
    y_all = np.asarray(tab["y"], dtype=float)[sel]
    sign = 1.0 if fit.convolved == "template" else -1.0
    off = np.arange(-half, half + 1)

    def residuals(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y, coef = x_all[idx], y_all[idx], coef_all[idx]
        xi, yi = np.rint(x).astype(np.intp), np.rint(y).astype(np.intp)
        kern = np.tensordot(coef[:, :-1], basis, axes=1)
        src, _ = cutouts(source.image, xi, yi, reach)
        src_var, _ = cutouts(source.variance, xi, yi, reach)
        tgt, tgt_var, ok = _stamp_pixels(target, x, y, half)
        ok &= _stamp_pixels(source, x, y, half)[2]
        d = sign * (tgt - convolve_pairs(src, kern, half)) - coef[:, -1, None, None]
        var = tgt_var + np.clip(convolve_pairs(src_var, kern**2, half), 0, None)
        rows = np.clip(yi[:, None, None] + off[None, :, None], 0, science.shape[0] - 1)
        cols = np.clip(xi[:, None, None] + off[None, None, :], 0, science.shape[1] - 1)
        sig_in = _input_sigma(
            science, template, fit, rows, cols, (kern.sum(axis=(1, 2)))[:, None, None]
        )
        return (
            (d[ok] / np.sqrt(var[ok])).astype(np.float32),
            (d[ok] / sig_in[ok]).astype(np.float32),
        )

    return _batched(residuals, len(sel), 2 * reach + 1)


@dataclasses.dataclass(frozen=True, eq=False)
class RawResiduals:
    """The diagnostics of the raw difference.

    Made once the difference is decorrelated (:func:`raw_residuals`), before the
    renormalisation, the score and detection add their planes: the raw difference they
    are read from (image, variance and three masks on the way: 48 MB on GOTO) is made
    for them and dropped. :class:`Diagnostics` adds the final difference's part once
    detection has flagged its sources (:func:`compute_diagnostics`).

    Attributes
    ----------
    own_by_difference, own_by_input : numpy.ndarray
        Candidates with their own kernel.
    spatial_by_difference, spatial_by_input : numpy.ndarray
        GOOD candidates with the spatial model.
    control_by_difference, control_by_input : numpy.ndarray
        The stars held out: CONTROL candidates with the spatial model, then GOOD ones
        with the cross-validation's fit without them.
    noise_ratio_raw : float
        :func:`noise_ratio` of the difference before decorrelation.
    """

    own_by_difference: np.ndarray
    own_by_input: np.ndarray
    spatial_by_difference: np.ndarray
    spatial_by_input: np.ndarray
    control_by_difference: np.ndarray
    control_by_input: np.ndarray
    noise_ratio_raw: float


@dataclasses.dataclass(frozen=True, eq=False)
class Diagnostics(RawResiduals):
    """The seed's runDebug residual data and the summary figures: the raw difference's
    (:class:`RawResiduals`) and the final difference's.

    Attributes
    ----------
    image_by_difference, image_by_input : numpy.ndarray
        The whole difference, subsampled.
    noise_ratio : float
        :func:`noise_ratio` of the final difference.
    """

    image_by_difference: np.ndarray
    image_by_input: np.ndarray
    noise_ratio: float


def raw_residuals(
    science: Exposure, template: Exposure, fit: KernelFit, raw: Exposure, reporter: Reporter
) -> RawResiduals:
    """The residual panels of the candidates and the noise ratio of the raw difference.

    Parameters
    ----------
    science, template : Exposure
        The pair on one grid.
    fit : KernelFit
        The kernel and candidates.
    raw : Exposure
        The raw difference (``SubtractionProducts.difference``).
    reporter : Reporter
        Progress and cancellation.

    Returns
    -------
    RawResiduals
    """
    status = np.asarray(fit.candidates["status"]).astype(str)
    own_d, own_i = _own_residuals(science, template, fit)
    reporter.update(0.4)
    sp_d, sp_i = _stamp_residuals(science, template, fit, raw, status == "GOOD")
    ct_d, ct_i = _stamp_residuals(science, template, fit, raw, status == "CONTROL")
    cv_d, cv_i = _held_out_residuals(science, template, fit)
    ct_d, ct_i = np.concatenate([ct_d, cv_d]), np.concatenate([ct_i, cv_i])
    reporter.update(0.8)
    return RawResiduals(
        frozen(own_d, np.float32),
        frozen(own_i, np.float32),
        frozen(sp_d, np.float32),
        frozen(sp_i, np.float32),
        frozen(ct_d, np.float32),
        frozen(ct_i, np.float32),
        noise_ratio(raw),
    )


def compute_diagnostics(
    science: Exposure,
    template: Exposure,
    fit: KernelFit,
    raw: RawResiduals,
    difference: Exposure,
    reporter: Reporter,
    variance_factor: float = 1.0,
) -> Diagnostics:
    """Gather the residual panels and noise figures of a run.

    Parameters
    ----------
    science, template : Exposure
        The pair on one grid.
    fit : KernelFit
        The kernel and candidates.
    raw : RawResiduals
        The raw difference's part (:func:`raw_residuals`).
    difference : Exposure
        The final difference (decorrelated when configured), with detection's planes.
    reporter : Reporter
        Progress and cancellation.
    variance_factor : float
        The renormalisation's factor on the variance plane
        (:attr:`~diffviewer.engine.renormalise.Renormalisation.variance_factor`): the
        candidates' residuals by the difference's variance, made before it, are divided
        by its square root, so that every ``*_by_difference`` panel is in the variance
        plane the difference is written with.

    Returns
    -------
    Diagnostics
    """
    ny, nx = difference.shape
    step = max(1, int(np.ceil(np.sqrt(ny * nx / MAX_IMAGE_SAMPLES))))
    sub = (slice(None, None, step), slice(None, None, step))
    good = ((difference.mask[sub] & int(UNUSABLE)) == 0) & (difference.variance[sub] > 0)
    yy, xx = np.mgrid[0:ny:step, 0:nx:step]
    ksum = fit.solution.kernel_sum(xx[good], yy[good])
    img = difference.image[sub][good]
    im_d = img / np.sqrt(difference.variance[sub][good])
    im_i = img / (
        _input_sigma(science, template, fit, yy[good], xx[good], ksum) * science_scale(fit)
    )
    reporter.update(0.8)
    rescaled = {
        name: frozen(getattr(raw, name) / np.float32(np.sqrt(variance_factor)), np.float32)
        for name in ("own_by_difference", "spatial_by_difference", "control_by_difference")
    }
    return Diagnostics(
        **{f.name: getattr(raw, f.name) for f in dataclasses.fields(raw)} | rescaled,
        image_by_difference=frozen(im_d, np.float32),
        image_by_input=frozen(im_i, np.float32),
        noise_ratio=noise_ratio(difference),
    )


@dataclasses.dataclass(frozen=True, eq=False)
class StampViews:
    """Cutouts around one candidate for the GUI's stamp panel (all ``(2h+1, 2h+1)``).

    Attributes
    ----------
    science, template : numpy.ndarray
        The inputs.
    difference_own : numpy.ndarray or None
        Science side minus template side with the candidate's own kernel and background
        (NaN-free); None where the star has no own fit (a CONTROL star, held out of the
        fit, or a stamp that could not be fitted).
    difference_spatial : numpy.ndarray
        The same with the spatial model.
    residual_own, residual_spatial : numpy.ndarray
        Those differences over ``sqrt(var_target + K^2 * var_source)`` (the own one None
        without an own fit).
    input_sigma : numpy.ndarray
        ``sqrt(var_sci + kappa^2 var_tmpl)`` (roles swapped when the science is convolved).
    usable : numpy.ndarray
        Pixels free of unusable planes on both inputs.
    kernel_own, kernel_spatial : numpy.ndarray
        The candidate's own kernel (None without an own fit) and the spatial kernel at
        its position.
    x, y : float
        Candidate position (science px).
    """

    science: np.ndarray
    template: np.ndarray
    difference_own: np.ndarray | None
    difference_spatial: np.ndarray
    residual_own: np.ndarray | None
    residual_spatial: np.ndarray
    input_sigma: np.ndarray
    usable: np.ndarray
    kernel_own: np.ndarray | None
    kernel_spatial: np.ndarray
    x: float
    y: float


def stamp_views(science: Exposure, template: Exposure, fit: KernelFit, index: int) -> StampViews:
    """Cutouts, differences and kernels around candidate ``index`` (row of ``fit.candidates``).

    Parameters
    ----------
    science, template : Exposure
        The pair on one grid.
    fit : KernelFit
        The kernel fit.
    index : int
        Row of ``fit.candidates``.

    Returns
    -------
    StampViews
    """
    row = fit.candidates[index]
    x, y = float(row["x"]), float(row["y"])
    half = fit.fit_half
    sol = fit.solution
    source, target = fit.source_target(science, template)
    xi, yi = np.rint([x]).astype(np.intp), np.rint([y]).astype(np.intp)
    tgt, _ = cutouts(target.image, xi, yi, half)
    tgt_var, _ = cutouts(target.variance, xi, yi, half)
    ms, _ = cutouts(science.mask, xi, yi, half, fill=int(MaskPlane.NO_DATA))
    mt, _ = cutouts(template.mask, xi, yi, half, fill=int(MaskPlane.NO_DATA))
    usable = (((ms | mt) & int(UNUSABLE)) == 0)[0]
    own_coef = fit.own_coefficients[index]
    k_sp = sol.evaluate(x, y)
    sign = 1.0 if fit.convolved == "template" else -1.0

    def diff_with(kernel: np.ndarray, bg: float) -> tuple[np.ndarray, np.ndarray]:
        # The source's cutout reaches the kernel's half side beyond the fit region: the
        # stamps' kernel and a fallback derived from the PSFs may differ in size.
        big = half + kernel.shape[-1] // 2
        src, _ = cutouts(source.image, xi, yi, big)
        src_var, _ = cutouts(source.variance, xi, yi, big)
        conv = fftconv.convolve(src[0].astype(np.float64), kernel, mode="valid")
        cvar = fftconv.convolve(src_var[0].astype(np.float64), kernel**2, mode="valid")
        sig = np.sqrt(np.clip(tgt_var[0] + cvar, 1e-30, None))
        # science side minus template side, background in the same sense
        d = sign * (tgt[0] - conv) - bg
        return d, d / sig

    d_sp, r_sp = diff_with(k_sp, float(sol.background(x, y)))
    k_own = d_own = r_own = None
    if np.all(np.isfinite(own_coef)):
        k_own = np.tensordot(own_coef[:-1], fit.stamp_basis, axes=1)
        d_own, r_own = diff_with(k_own, float(own_coef[-1]))
    off = np.arange(-half, half + 1)
    rows = np.clip(yi[0] + off, 0, science.shape[0] - 1)[:, None]
    cols = np.clip(xi[0] + off, 0, science.shape[1] - 1)[None, :]
    sig_in = _input_sigma(science, template, fit, rows, cols, float(sol.kernel_sum(x, y)))
    sci_cut, _ = cutouts(science.image, xi, yi, half)
    tmp_cut, _ = cutouts(template.image, xi, yi, half)
    return StampViews(
        sci_cut[0], tmp_cut[0], d_own, d_sp, r_own, r_sp, sig_in, usable, k_own, k_sp, x, y
    )


@dataclasses.dataclass(frozen=True, eq=False)
class KernelMosaic:
    """The spatial kernel realised on an ``n x n`` grid across the image.

    Attributes
    ----------
    kernels : numpy.ndarray
        ``(n, n, size, size)``; ``kernels[j, i]`` is at ``(x[i], y[j])``.
    x, y : numpy.ndarray
        Grid positions (px), from edge to edge.
    image : numpy.ndarray
        The kernels tiled into one ``(n * size, n * size)`` image.
    """

    kernels: np.ndarray
    x: np.ndarray
    y: np.ndarray
    image: np.ndarray


def kernel_centroids(kernels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid shifts (px) of kernel images: first moments relative to the centre pixel.

    A kernel whose centroid is off its centre shifts the convolved image: a spatial map
    of it (on :func:`kernel_mosaic`'s grid) shows residual astrometric misregistration
    that the kernel absorbed.

    Parameters
    ----------
    kernels : numpy.ndarray
        ``(..., size, size)`` kernel images, e.g. :attr:`KernelMosaic.kernels`.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        x and y shifts (px, positive towards larger x, y), shape ``kernels.shape[:-2]``;
        NaN where a kernel sums to zero.
    """
    size = kernels.shape[-1]
    off = np.arange(size) - (size - 1) / 2
    total = kernels.sum(axis=(-2, -1))
    safe = np.where(np.abs(total) > 0, total, np.nan)
    dx = (kernels.sum(axis=-2) * off).sum(axis=-1) / safe
    dy = (kernels.sum(axis=-1) * off).sum(axis=-1) / safe
    return dx, dy


def kernel_mosaic(solution: KernelSolution, n: int = 7) -> KernelMosaic:
    """Realise the spatial kernel on an ``n x n`` grid across the image.

    Parameters
    ----------
    solution : KernelSolution
        The kernel.
    n : int
        Grid points per axis.

    Returns
    -------
    KernelMosaic
    """
    ny, nx = solution.shape
    xs = np.linspace(0, nx - 1, n)
    ys = np.linspace(0, ny - 1, n)
    size = solution.size
    kernels = np.array([[solution.evaluate(float(x), float(y)) for x in xs] for y in ys])
    image = kernels.transpose(0, 2, 1, 3).reshape(n * size, n * size)
    return KernelMosaic(
        frozen(kernels, np.float64),
        frozen(xs, np.float64),
        frozen(ys, np.float64),
        frozen(image, np.float64),
    )
