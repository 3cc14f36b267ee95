"""Stars' aperture fluxes on both images: light on one image only beside kernel stars."""

from __future__ import annotations

import numpy as np
import pytest

from diffviewer.engine import candidates, star_fluxes
from diffviewer.exposure import Exposure, MaskPlane
from diffviewer.synthetic import make_pair
from tests.engine.helpers import select


def test_light_on_one_image_beside_a_star_spoils_its_stamp_on_that_image_only() -> None:
    # A 2e5-count point on the science only, 20 px from a candidate of ~5e4: listed
    # with its light on the science (a 1.5 FWHM aperture of a Gaussian of FWHM 4 holds
    # 99.8 % of it) and none on the template; it spoils that star's stamp when the science
    # is convolved (the kernel spreads it there), not when the template is (on the target
    # it is a residual, which the fit's clipping finds).
    base = make_pair((384, 384), 150, seed=3, sci_fwhm=4.0, tmpl_fwhm=2.5)
    first = select(base.science, base.template)
    k = int(np.argmin(np.abs(np.asarray(first.table["flux_sci"]) - 5e4)))
    x0, y0 = float(first.table["x"][k]), float(first.table["y"][k])
    pair = make_pair(
        (384, 384), 150, seed=3, sci_fwhm=4.0, tmpl_fwhm=2.5, transients=[(x0 + 16, y0 + 12, 2e5)]
    )
    cands = select(pair.science, pair.template)
    light = cands.unmatched
    hit = np.hypot(light.x - (x0 + 16), light.y - (y0 + 12)) < 1.5
    assert hit.sum() == 1 and len(light.x) == 1
    assert float(light.science[hit][0]) == pytest.approx(2e5, rel=0.05)
    assert float(light.template[hit][0]) == 0.0
    x, y = np.asarray(cands.table["x"]), np.asarray(cands.table["y"])
    star = np.hypot(x - x0, y - y0) < 1.0
    on_science = light.spoils(x, y, 30, "science")
    assert on_science[star].all() and on_science.sum() < len(x)
    # Brighter than the point on the template side: only the point's own image counts.
    assert not light.spoils(x, y, 30, "template").any()
    # Beyond the stamp: not spoiled.
    assert not light.spoils(x, y, 10, "science")[star].any()


def test_a_neighbour_without_data_on_one_image_is_not_taken_for_light_on_the_other() -> None:
    # A template with no data over a star beside a candidate (a warped template's edge):
    # the star looks as if on the science only, but its ratio cannot be judged.
    pair = make_pair((384, 384), 150, seed=3, sci_fwhm=4.0, tmpl_fwhm=2.5)
    # the five brightest stars judged, the sixth their neighbour (within 400 px)
    bright = np.argsort(-pair.star_flux)[:6]
    xi = np.rint(pair.star_x[bright]).astype(np.intp)
    yi = np.rint(pair.star_y[bright]).astype(np.intp)
    image = pair.template.image.copy()
    mask = pair.template.mask.copy()
    box = (slice(yi[5] - 6, yi[5] + 7), slice(xi[5] - 6, xi[5] + 7))
    image[box] = 0.0
    grids = tuple(
        candidates.coarse_background(e.image, e.good_pixels())[0]
        for e in (pair.science, pair.template)
    )

    def listed(template: Exposure) -> int:
        light = star_fluxes.unmatched_light(
            pair.science, template, xi, yi, np.arange(5), 400, grids, 6.0, (4.0, 2.5)
        )
        return len(light.x)

    blank = pair.template.replace(image=image)
    mask[box] |= int(MaskPlane.NO_DATA)
    # Blanked without a mask, it is light on the science only; masked, it is not judged.
    assert listed(blank) == 1 and listed(pair.template.replace(image=image, mask=mask)) == 0
