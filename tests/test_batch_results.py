"""Reading a saved output folder back gives what the run had (the inverse of writing it)."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from diffviewer.batch.summary import row_from_outputs
from diffviewer.config import SubtractionConfig, apply_overrides
from diffviewer.engine.pipeline import SubtractionResult, run_subtraction
from diffviewer.engine.register import Registration
from diffviewer.engine.register_fit import PolynomialTransform
from diffviewer.errors import InputError
from diffviewer.fits_write import write_exposure
from diffviewer.gui import content, model
from diffviewer.io import demo_pair, read_exposure
from diffviewer.outputs import registration_summary, write_outputs
from diffviewer.results import (
    SavedRun,
    read_metadata,
    read_pair_verdict,
    read_saved_run,
    registration_from_summary,
    run_identity,
    write_pair_verdict,
)
from diffviewer.synthetic import make_pair


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[SubtractionResult, SavedRun]:
    """The demo pair's run, and the same run read back from its output folder."""
    science, template = demo_pair()
    config = apply_overrides(SubtractionConfig(), ["kernel.spatial_order=0"])
    result = run_subtraction(read_exposure(str(science)), read_exposure(str(template)), config)
    out = tmp_path_factory.mktemp("saved") / "run"
    write_outputs(result, out, [science, template])
    return result, read_saved_run(out)


def _same_exposure(a, b) -> None:
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.variance, b.variance)
    np.testing.assert_array_equal(a.mask, b.mask)


def test_images_catalogs_and_figures_read_back_equal(saved) -> None:
    result, run = saved
    _same_exposure(run.difference, result.difference)
    _same_exposure(run.subtraction.matched, result.subtraction.matched)
    _same_exposure(run.template.exposure, result.template.exposure)
    _same_exposure(run.science, result.science)
    assert result.score is not None and run.score is not None
    np.testing.assert_array_equal(run.score.image, result.score.image)
    np.testing.assert_array_equal(run.subtraction.kernel_sum_map, result.subtraction.kernel_sum_map)
    assert run.config == result.config
    assert run.warnings == result.warnings
    assert list(run.diasources.colnames) == list(result.diasources.colnames)
    for name in ("id", "x", "y", "psf_flux", "sign"):
        np.testing.assert_array_equal(run.diasources[name], result.diasources[name])
    assert run.template.coverage == result.template.coverage


def test_the_kernel_fit_and_diagnostics_read_back_equal(saved) -> None:
    result, run = saved
    got, want = run.kernel.solution, result.kernel.solution
    ny, nx = want.shape
    for x, y in ((0, 0), (nx - 1, ny - 1), (nx / 3, ny / 2)):
        np.testing.assert_allclose(got.evaluate(x, y), want.evaluate(x, y), rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(got.background(x, y), want.background(x, y), rtol=1e-12)
    assert got.describe() == want.describe()
    np.testing.assert_array_equal(run.kernel.own_coefficients, result.kernel.own_coefficients)
    assert run.kernel.fit_half == result.kernel.fit_half
    assert run.kernel.science_psf.fwhm == result.kernel.science_psf.fwhm
    assert run.kernel.science_psf.reason == result.kernel.science_psf.reason
    np.testing.assert_array_equal(run.kernel.template_psf.image, result.kernel.template_psf.image)
    for name in ("own_by_difference", "spatial_by_input", "image_by_difference"):
        np.testing.assert_array_equal(
            getattr(run.diagnostics, name), getattr(result.diagnostics, name)
        )
    assert run.diagnostics.noise_ratio == result.diagnostics.noise_ratio
    # The degrees the held-out stars chose (the demo's 4, 2, 2 out of 6, 4, 2), with every
    # candidate's figure; the strength handed to the spatial fit is the run's regularization.
    choice = result.kernel.degree_choice
    assert choice is not None and choice.chosen == got.degrees != choice.candidates[0]
    assert run.kernel.degree_choice == dataclasses.replace(choice, strength=None)
    assert run.kernel.regularization == result.kernel.regularization


def test_the_kernel_s_wing_reads_back(tmp_path: Path) -> None:
    # A few-star Moffat pair: its wing is fixed by the PSFs (engine.kernel_spread). The
    # saved kernel had no wing: the basis's description and the inspector's "kernel.wing"
    # read back without it.
    pair = make_pair(
        (300, 300),
        25,
        seed=0,
        profile="moffat",
        sci_beta=2.5,
        tmpl_beta=3.5,
        photometric_scale=1.3,
    )
    paths = [tmp_path / "science.fits", tmp_path / "template.fits"]
    for exposure, path in zip((pair.science, pair.template), paths, strict=True):
        write_exposure(path, exposure)
    result = run_subtraction(*(read_exposure(str(p)) for p in paths))
    assert result.kernel.solution.wing is not None
    assert result.kernel.solution.wing.weight is not None
    write_outputs(result, tmp_path / "run", paths)
    run = read_saved_run(tmp_path / "run")
    assert run.kernel.solution.wing == result.kernel.solution.wing
    assert run.kernel.solution.describe() == result.kernel.solution.describe()
    assert content.effective_values(run)["kernel.wing"]


def test_the_inspector_shows_the_same_from_a_saved_run(saved) -> None:
    result, run = saved
    assert content.metrics(run) == content.metrics(result)
    want, got = content.kernel_views(result), content.kernel_views(run)
    assert got["info"] == want["info"]
    np.testing.assert_allclose(got["mosaic"], want["mosaic"], rtol=1e-5, atol=1e-8)
    images, text = content.stamp_views(run, 0)
    want_images, want_text = content.stamp_views(result, 0)
    assert text == want_text
    for key, value in want_images.items():
        np.testing.assert_allclose(images[key], value, rtol=1e-5, atol=1e-6)
    views, saved_views = model.view_arrays(result), model.view_arrays(run)
    for key, value in views.items():
        np.testing.assert_array_equal(saved_views[key], value)


def test_a_pair_verdict_is_saved_beside_the_outputs(saved) -> None:
    _, run = saved
    assert read_pair_verdict(run.folder) is None
    written = write_pair_verdict(run.folder, "bad", "ringing  around\nbright stars")
    again = read_pair_verdict(run.folder)
    assert again == written and again.comment == "ringing around bright stars"
    with pytest.raises(InputError, match="not one of good, bad"):
        write_pair_verdict(run.folder, "maybe")
    (run.folder / "pair_verdict.json").unlink()


def test_an_unfinished_folder_is_a_one_line_error(saved, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"holds no metadata\.json: it is not a run.s output"):
        read_saved_run(tmp_path)
    (tmp_path / "metadata.json").write_text(json.dumps(saved[1].metadata))
    with pytest.raises(InputError, match=r"lacks matched_template\.fits"):
        read_saved_run(tmp_path)


def test_a_registration_reads_back_as_metadata_recorded_it() -> None:
    """A saved run shows the registration it ran with: metadata.json's record inverts."""
    transform = PolynomialTransform(
        2, np.array([[3.5, 0.9998, 0.02, 1e-6, 0, 0], [-1.25, -0.02, 0.9998, 0, 2e-6, 0]])
    )
    reg = Registration("wcs refined on stars", transform, 120, 95, 80, 0.012, 0.004, ("note",))
    back = registration_from_summary(json.loads(json.dumps(registration_summary(reg))))
    assert back.method == reg.method and back.notes == reg.notes
    assert (back.n_science_stars, back.n_template_stars, back.n_matched) == (120, 95, 80)
    assert back.rms == reg.rms and back.position_error == reg.position_error
    x, y = np.array([0.0, 1000.0]), np.array([0.0, 2000.0])
    np.testing.assert_allclose(back.transform(x, y), reg.transform(x, y), rtol=0, atol=1e-9)
    # a run with no star fit records NaN RMS and no transform; both read back
    none = Registration("none", None, 3, 2, 0, math.nan)
    back = registration_from_summary(json.loads(json.dumps(registration_summary(none))))
    assert back.transform is None and math.isnan(back.rms)


def test_a_pair_verdict_does_not_outlive_its_run(saved, tmp_path: Path) -> None:
    result, run = saved
    science, template = demo_pair()
    out = tmp_path / "pair"
    write_outputs(result, out, [science, template])
    write_pair_verdict(out, "good", "clean")
    write_outputs(result, out, [science, template], overwrite=True)  # the same run again
    assert read_pair_verdict(out) is not None
    # overwritten with a run of another config: the verdict was on the old subtraction
    other_config = apply_overrides(result.config, ["detection.threshold=8"])
    other = run_subtraction(run.science, read_exposure(str(template)), other_config)
    write_outputs(other, out, [science, template], overwrite=True)
    assert read_pair_verdict(out) is None
    assert row_from_outputs(out)["verdict"] == ""
    write_pair_verdict(out, "bad", "over-subtracted")
    assert read_pair_verdict(out).verdict == "bad"
    # an input replaced in place under its name (other size and time) is another input,
    # as the batch judges it: the verdict on a clean subtraction stayed on the
    # guard-tripped run of a rewritten science frame
    replaced = tmp_path / "science.fits"
    shutil.copy(science, replaced)

    def run_on_replaced() -> None:
        sci = read_exposure(str(replaced))
        done = run_subtraction(sci, read_exposure(str(template)), result.config)
        write_outputs(done, out, [replaced, template], overwrite=True)

    run_on_replaced()
    write_pair_verdict(out, "good", "clean")
    with open(replaced, "ab") as handle:
        handle.write(bytes(2880))  # rewritten in place: one more FITS record
    run_on_replaced()
    assert read_pair_verdict(out) is None
    # a verdict saved before the inputs' states were part of a run's identity still
    # holds on its run (an upgrade loses no verdict)
    meta = read_metadata(out)
    legacy = {"verdict": "good", "comment": "", "time": "2026-12-01T00:00:00"}
    legacy["run"] = run_identity(meta).rsplit(" ", 1)[0]
    (out / "pair_verdict.json").write_text(json.dumps(legacy))
    assert read_pair_verdict(out).verdict == "good"
