"""The fitted kernel as data: a spatially varying kernel evaluable anywhere, and the fit's record.

:class:`KernelSolution` is what the subtraction, decorrelation and score read;
:class:`KernelFit` adds the per-stamp quality table, the direction of the convolution
and why it was chosen, and the warnings of the fit.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from astropy.table import Table
from numpy.polynomial import chebyshev

from diffviewer.engine.field_terms import chebyshev_terms, term_powers
from diffviewer.engine.kernel_basis import Wing
from diffviewer.engine.kernel_degrees import DegreeChoice
from diffviewer.engine.kernel_direction import Direction
from diffviewer.engine.kernel_noise import SharedNoise
from diffviewer.engine.kernel_region import RegionChoice
from diffviewer.engine.kernel_sum_order import SumOrderChoice
from diffviewer.engine.psf import PsfEstimate
from diffviewer.engine.sky import SkyLevel
from diffviewer.exposure import Exposure


def map_points(shape: tuple[int, int], step: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of a coarse map's samples: (j, i) is at pixel (i * step, j * step) + step/2,
    each clamped to the image's last column and row (``KSUMMAP``'s grid).

    Parameters
    ----------
    shape : (int, int)
        Image shape (ny, nx).
    step : int
        Grid spacing (px).

    Returns
    -------
    gx, gy : numpy.ndarray
        ``(ceil(ny / step), ceil(nx / step))`` x and y of each sample (0-based px).
    """
    ny, nx = shape
    ys = np.minimum(np.arange(0, ny, step) + step / 2.0, ny - 1)
    xs = np.minimum(np.arange(0, nx, step) + step / 2.0, nx - 1)
    gx, gy = np.meshgrid(xs, ys)
    return gx, gy


@dataclasses.dataclass(frozen=True, eq=False)
class KernelSolution:
    """A spatially varying kernel and differential background, evaluable anywhere.

    ``K(x, y) = sum_k a_k(x, y) B_k`` with ``a_k(x, y) = sum_s coefficients[k, s] P_s(x, y)``
    and ``background(x, y) = sum_t bg_coefficients[t] P_t(x, y)``, where ``P`` are the
    Chebyshev terms of :func:`chebyshev_terms` over ``shape``. The background is always
    in the sense science side minus template side (see :class:`KernelFit`).

    Attributes
    ----------
    basis : numpy.ndarray
        ``(n_basis, size, size)`` basis images.
    coefficients : numpy.ndarray
        ``(n_basis, n_terms(spatial_order))``.
    bg_coefficients : numpy.ndarray
        ``(n_terms(background_order),)``.
    spatial_order, background_order : int
        Chebyshev orders.
    shape : (int, int)
        Image shape (ny, nx) that scales x and y to [-1, 1].
    sigmas : numpy.ndarray
        Gaussian widths (px) of the basis.
    degrees : tuple of int
        Polynomial degree of each Gaussian.
    wing : Wing or None
        The Moffat wing function's profile, when the basis has one, or the wing the
        basis images were spread with (its ``weight`` set; :mod:`kernel_spread`).
    """

    basis: np.ndarray
    coefficients: np.ndarray
    bg_coefficients: np.ndarray
    spatial_order: int
    background_order: int
    shape: tuple[int, int]
    sigmas: np.ndarray
    degrees: tuple[int, ...]
    wing: Wing | None = None

    @property
    def size(self) -> int:
        """Kernel side (px)."""
        return int(self.basis.shape[-1])

    def describe(self) -> str:
        """The basis in words, e.g. ``'Alard-Lupton: 3 Gaussians sigma=[0.8, 1.6, 3.2] px ...'``."""
        sig = ", ".join(f"{s:.2f}" for s in self.sigmas)
        wing = (
            ""
            if self.wing is None
            else f", Moffat wing alpha={self.wing.alpha:.2f} px beta={self.wing.beta:.2f}"
            + (
                ""
                if self.wing.weight is None
                else f" fixed by the PSFs at {self.wing.weight:.4f} per unit sum"
            )
        )
        return (
            f"Alard-Lupton: {len(self.sigmas)} Gaussians sigma=[{sig}] px, degrees "
            f"{list(self.degrees)}{wing}, {self.basis.shape[0]} functions, "
            f"{self.size}x{self.size} px"
        )

    def coefficients_at(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """Basis coefficients ``a_k`` at positions: ``(n, n_basis)``, ``(n_basis,)`` for scalars."""
        p = chebyshev_terms(np.atleast_1d(x), np.atleast_1d(y), self.spatial_order, self.shape)
        a = p @ self.coefficients.T
        return a[0] if np.ndim(x) == 0 else a

    def evaluate(self, x: float, y: float) -> np.ndarray:
        """The kernel image at (x, y) (0-based science px)."""
        return np.tensordot(self.coefficients_at(float(x), float(y)), self.basis, axes=1)

    def background(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """Differential background (image units) at positions."""
        p = chebyshev_terms(np.atleast_1d(x), np.atleast_1d(y), self.background_order, self.shape)
        b = p @ self.bg_coefficients
        return b[0] if np.ndim(x) == 0 else b

    def _term_image(
        self, coefficients: np.ndarray, order: int, box: tuple[slice, slice] | None
    ) -> np.ndarray:
        """``sum_t coefficients[t] P_t(x, y)`` over the image, or its ``box`` (float32,
        ``Ty @ C @ Tx^T``)."""
        ny, nx = self.shape
        rows, cols = box or (slice(None), slice(None))
        tx = chebyshev.chebvander(2.0 * np.arange(nx)[cols] / max(nx - 1, 1) - 1.0, order)
        ty = chebyshev.chebvander(2.0 * np.arange(ny)[rows] / max(ny - 1, 1) - 1.0, order)
        coef = np.zeros((order + 1, order + 1))
        for c, (px, py) in zip(coefficients, term_powers(order), strict=True):
            coef[py, px] = c
        return ty.astype(np.float32) @ (coef @ tx.T).astype(np.float32)

    def background_image(self, box: tuple[slice, slice] | None = None) -> np.ndarray:
        """The background over the whole image, or over its ``box`` (float32)."""
        return self._term_image(self.bg_coefficients, self.background_order, box)

    def with_background_offset(self, offset: float) -> KernelSolution:
        """This solution with ``offset`` (image units) added to its background everywhere
        (to the coefficient of the constant term, ``T_0 T_0 = 1``)."""
        coefficients = np.array(self.bg_coefficients, dtype=np.float64)
        coefficients[0] += offset
        coefficients.flags.writeable = False
        return dataclasses.replace(self, bg_coefficients=coefficients)

    def kernel_sum(self, x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray:
        """Kernel sum (photometric scale) at positions."""
        per_term = self.coefficients.T @ self.basis.sum(axis=(1, 2))
        p = chebyshev_terms(np.atleast_1d(x), np.atleast_1d(y), self.spatial_order, self.shape)
        k = p @ per_term
        return k[0] if np.ndim(x) == 0 else k

    def kernel_sum_map(self, shape: tuple[int, int] | None = None, step: int = 64) -> np.ndarray:
        """Kernel sum on a coarse grid: element (j, i) is at pixel (i * step, j * step) + step/2.

        Parameters
        ----------
        shape : (int, int), optional
            Image shape (defaults to :attr:`shape`).
        step : int
            Grid spacing (px).

        Returns
        -------
        numpy.ndarray
            ``(ceil(ny / step), ceil(nx / step))`` float32.
        """
        gx, gy = map_points(shape or self.shape, step)
        return self.kernel_sum(gx.ravel(), gy.ravel()).reshape(gy.shape).astype(np.float32)

    def spatial_kernels(self) -> np.ndarray:
        """``(n_terms, size, size)``: the kernel image multiplying each spatial term ``P_s``."""
        return np.tensordot(self.coefficients.T, self.basis, axes=1)


@dataclasses.dataclass(frozen=True, eq=False)
class KernelFit:
    """The fitted PSF-matching kernel and the per-stamp quality assessment.

    Attributes
    ----------
    solution : KernelSolution
        The spatial model.
    candidates : astropy.table.Table
        The candidate table plus ``status`` (GOOD/BAD/CONTROL), ``reason`` (why BAD),
        ``chi2`` (per degree of freedom), ``kernel_sum`` (of the kernel as fitted: the
        science/template flux ratio, or its inverse when the science is convolved) and its
        formal error ``kernel_sum_err``, ``resid_mean``, ``resid_std`` (of the residual
        normalised by sqrt(var_target + K^2 * var_source), over the fit region, with the
        stamp's own kernel; for CONTROL stars with the spatial model), and
        ``spatial_resid_mean``, ``spatial_resid_std`` (with the spatial model).
    convolved : str
        'template' (science ~ K * template + background) or 'science'
        (K * science ~ template + background); ``direction.convolved``.
    photometric_scale : float
        Science/template flux ratio: the mean kernel sum over the image, or its inverse
        when the science is convolved.
    warnings : tuple of str
        Deconvolution risk, lowered orders, the PSF fallback, ...
    science_psf, template_psf : PsfEstimate
        The PSFs the basis was built from.
    own_coefficients : numpy.ndarray
        ``(n_candidates, n_basis + 1)`` each stamp's own kernel coefficients, on
        :attr:`stamp_basis`, and background (NaN where the stamp could not be fitted).
    stamp_basis : numpy.ndarray
        ``(n_basis, size, size)`` the basis the stamps were fitted on: the solution's,
        except when the held-out stars chose lower degrees for the spatial fit
        (:attr:`degree_choice`), or too few stamps were good and the kernel fell back to
        one derived from the PSFs on a basis of its own (without the wing the stamps'
        basis may hold). With a spread wing (:mod:`kernel_spread`) both are spread.
    fit_half : int
        Half-width (px) of each stamp's fit region.
    direction : Direction
        Which image was convolved, the difference noise each choice was expected to
        give, and why.
    regularization : float
        The strength of the roughness prior in the spatial fit, as the prior's weight in
        mean stamps (:mod:`kernel_prior`): chosen by cross-validation over the good
        stamps, or ``kernel.regularization`` when that is 0 or more. NaN when the kernel
        fell back to one derived from the PSFs (no spatial fit).
    shared_noise : SharedNoise or None
        The two images' noise on sky and whether the spatial fit allowed for what it puts
        into the stamps' equations (:mod:`kernel_noise`); None without a spatial fit.
    degree_choice : DegreeChoice or None
        The basis degrees compared by the held-out stars and the one chosen
        (:mod:`kernel_degrees`); None without a spatial fit or a choice to make.
    region_choice : RegionChoice or None
        The fit regions compared by the held-out stars and the one the spatial fit used
        (:mod:`kernel_region`); None without a spatial fit, without the wing (one region)
        or with ``kernel.fit_region`` set.
    sum_order_choice : SumOrderChoice or None
        The kernel sum's spatial orders compared by the held-out stars and the one the
        spatial fit used (:mod:`kernel_sum_order`); None without a spatial fit, with a
        kernel of spatial order 0 or with ``kernel.kernel_sum_order`` set.
    sky_level : SkyLevel or None
        The raw difference's level on sky, measured after the subtraction and, when
        significant, taken out of :attr:`solution`'s background
        (:func:`~diffviewer.engine.subtract.sky_corrected`); None before that.
    kernel_sum_error : float
        Standard error of the mean kernel sum over the kernel stars: a delete-a-group
        jackknife over the cross-validation's folds of the good stamps, each refitted
        without one fold (:func:`~diffviewer.engine.kernel_spatial.jackknife_error`); with
        a wing fixed by the two PSFs, in quadrature with the error its profiles' fits give
        the sum (:func:`~diffviewer.engine.kernel_spread.profile_sum_error`; the warnings
        give both). NaN without a spatial fit.
    held_out_coefficients : numpy.ndarray
        ``(n_candidates, n_basis + 1)`` the kernel, on the solution's basis, and
        background each GOOD star was judged with: the spatial fit without its fold of
        the cross-validation (without it alone where the good stars are few:
        :data:`~diffviewer.engine.kernel_spatial.LEAVE_ONE_OUT`), at the star (NaN for the
        others; empty without a spatial fit).
    """

    solution: KernelSolution
    candidates: Table
    convolved: str
    photometric_scale: float
    warnings: tuple[str, ...]
    science_psf: PsfEstimate
    template_psf: PsfEstimate
    own_coefficients: np.ndarray
    stamp_basis: np.ndarray
    fit_half: int
    direction: Direction
    regularization: float = float("nan")
    shared_noise: SharedNoise | None = None
    degree_choice: DegreeChoice | None = None
    region_choice: RegionChoice | None = None
    sum_order_choice: SumOrderChoice | None = None
    sky_level: SkyLevel | None = None
    kernel_sum_error: float = float("nan")
    held_out_coefficients: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0)))

    def source_target(self, science: Exposure, template: Exposure) -> tuple[Exposure, Exposure]:
        """(convolved image, image it is matched to)."""
        return (template, science) if self.convolved == "template" else (science, template)
