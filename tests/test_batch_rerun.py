"""Rerunning a batch into a folder that holds outputs: what the summary keeps and says.

One demo pair is run once (``run_pair``, from its own folder with relative specs, as
``diffviewer run sci.fits tmpl.fits`` is); each test copies its outputs into a batch
folder of its own. No test starts a cluster: a rerun that runs nothing needs none.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import astropy.units as u
import psutil
import pytest
from astropy.table import Table

from diffviewer import cli
from diffviewer.batch import BatchOptions, plan_batch, read_summary, runner, write_summary
from diffviewer.batch.summary import badness, rows_of, set_summary_verdict
from diffviewer.batch.task import PairJob, run_job
from diffviewer.config import SubtractionConfig, apply_overrides
from diffviewer.paths import read_pairs_csv
from diffviewer.results import incomplete_reason, write_pair_verdict
from tests.test_batch import make_pairs, quick_config


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The inputs folder, with ``pairs.csv`` (pairs ``a`` and ``b``: one demo pair) and
    ``runs/a``, the pair's complete outputs made with :func:`quick_config`."""
    folder = tmp_path_factory.mktemp("rerun")
    make_pairs(folder, names=("a", "b"), bad=False)
    here = os.getcwd()
    os.chdir(folder)  # the specs as typed, relative to the folder the run starts in
    try:
        code = cli.run_pair(
            "science.fits",
            "template.fits",
            Path("runs/a"),
            quick_config(),
            overwrite=False,
            strict=False,
            quiet=True,
        )
    finally:
        os.chdir(here)
    assert code == cli.EXIT_OK
    return folder


@pytest.fixture
def no_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail a test whose batch starts a cluster."""

    def refuse(*args, **kwargs):
        raise AssertionError("a rerun that runs nothing started a cluster")

    monkeypatch.setattr(runner, "dask_client", refuse)


def _batch(done: Path, tmp_path: Path, names: tuple[str, ...]) -> Path:
    """A batch folder holding the pair's outputs under ``names``."""
    out = tmp_path / "out"
    for name in names:
        shutil.copytree(done / "runs" / "a", out / name)
    return out


def _rows(out: Path) -> dict[str, dict]:
    return {str(r["name"]): dict(zip(r.colnames, r, strict=True)) for r in read_summary(out)}


def test_a_rerun_with_another_config_keeps_the_rows_and_verdicts_of_the_outputs(
    done: Path, tmp_path: Path, no_cluster: None
) -> None:
    # out13: the same list rerun without the first run's --set: every complete pair became
    # failed/input with NaN figures, its verdict gone (the review: 3 of 3 failed); then
    # rerun as first, skipped with seconds and peak_memory NaN for good
    out = _batch(done, tmp_path, ("a", "b"))
    pairs = read_pairs_csv(done / "pairs.csv")
    first = BatchOptions(out=out, config=quick_config())
    runner.run_batch(pairs, first)
    timed = {"seconds": 12.5, "peak_memory": 640.0}  # as the first run's workers measured
    write_summary(out, [r | timed for r in rows_of(read_summary(out))])
    write_pair_verdict(out / "a", "good", "clean")
    set_summary_verdict(out, "a", "good", "clean")
    before = _rows(out)

    rows = runner.run_batch(pairs, BatchOptions(out=out, config=SubtractionConfig()))
    assert runner.failure_kind(rows) == "input"  # not what was asked: exit 2, as before
    after = _rows(out)
    for name in ("a", "b"):
        row = after[name]
        assert row["status"] == "refused" and row["error_kind"] == "input"
        assert "made with another config" in row["error"] and "--overwrite" in row["error"]
        assert row["config_digest"] == quick_config().digest()  # which config made the row
        for column in ("noise_ratio", "n_good", "seconds", "peak_memory"):
            assert row[column] == before[name][column], column
        assert row["badness"] == before[name]["badness"] < 100
    assert (after["a"]["verdict"], after["a"]["comment"]) == ("good", "clean")

    runner.run_batch(pairs, first)
    again = _rows(out)
    assert {n: r["status"] for n, r in again.items()} == {"a": "skipped", "b": "skipped"}
    assert [again[n]["seconds"] for n in ("a", "b")] == [12.5, 12.5]
    assert [again[n]["peak_memory"] for n in ("a", "b")] == [640.0, 640.0]


def test_a_failure_kept_from_the_last_run_is_retried_under_another_config(
    done: Path, tmp_path: Path
) -> None:
    # out7: a --strict guard failure of the old config was kept as failed, with the old
    # figures, when the list was rerun with another config
    out = tmp_path / "out"
    out.mkdir()
    pairs = read_pairs_csv(done / "pairs.csv")[1:]  # b, no folder
    science, template, name = pairs[0]
    old = SubtractionConfig()
    failed = {"name": name, "science": science, "template": template, "output": str(out / name)}
    failed |= {"status": "failed", "error_kind": "guard", "config_digest": old.digest()}
    write_summary(out, [failed])
    assert plan_batch(pairs, BatchOptions(out=out, config=old)).kept_failed == (name,)
    plan = plan_batch(pairs, BatchOptions(out=out, config=quick_config()))
    assert [j.name for j in plan.jobs] == [name] and plan.kept_failed == ()
    # A summary older than the column names no config: taken as this one, as for the
    # timings of its skipped pairs (its failures were retried while those were kept).
    write_summary(out, [failed | {"config_digest": ""}])
    plan = plan_batch(pairs, BatchOptions(out=out, config=quick_config()))
    assert plan.jobs == [] and plan.kept_failed == (name,)


def test_a_second_list_into_the_folder_keeps_the_rows_of_the_first(
    done: Path, tmp_path: Path, no_cluster: None
) -> None:
    # out15: 4 complete pairs, then a list of one pair into the folder: the summary listed
    # that pair only, and Review and Export verdicts lost the others
    out = _batch(done, tmp_path, ("a", "b"))
    pairs = read_pairs_csv(done / "pairs.csv")
    options = BatchOptions(out=out, config=quick_config())
    runner.run_batch(pairs, options)
    set_summary_verdict(out, "a", "bad", "ringing")
    rows = runner.run_batch(pairs[1:], options)
    assert [r["name"] for r in rows] == ["b"]  # this list's rows (its exit status)
    summary = _rows(out)
    assert list(summary) == ["b", "a"]
    assert (summary["a"]["status"], summary["a"]["verdict"]) == ("skipped", "bad")


def test_a_star_list_edited_in_place_makes_the_pair_run_again(done: Path, tmp_path: Path) -> None:
    # night6: the star list cut from 7 stars to 3 in place: "1 skipped as complete", the
    # old result's 5 good stamps kept where a fresh run finds 2
    stars = tmp_path / "stars.csv"
    Table.read(done / "runs" / "a" / "kernel_candidates.ecsv")[["x", "y"]].write(
        stars, format="ascii.csv"
    )
    config = apply_overrides(quick_config(), [f'candidates.source_list="{stars}"'])
    pairs = read_pairs_csv(done / "pairs.csv")[:1]
    science, template, name = pairs[0]
    out = tmp_path / "out"
    code = cli.run_pair(
        science, template, out / name, config, overwrite=False, strict=False, quiet=True
    )
    assert code == cli.EXIT_OK
    options = BatchOptions(out=out, config=config, overwrite=True)
    assert plan_batch(pairs, options).jobs == []  # complete: skipped
    lines = stars.read_text().splitlines()
    stars.write_text("\n".join(lines[:4]) + "\n")  # 3 stars left, the same path
    reason = incomplete_reason(out / name, science, template, config.digest())
    assert reason == f"its input {stars} was replaced or changed since the run"
    assert [j.name for j in plan_batch(pairs, options).jobs] == [name]


def test_completeness_does_not_depend_on_the_folder_the_batch_starts_in(
    done: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # out11/dec_d, made by `diffviewer run ../data/...`: the same batch skipped it from the
    # folder the run started in and failed it from /tmp ("made from another science image
    # (../data/DEC-OBS04d.mini.fits)")
    science, template, _ = read_pairs_csv(done / "pairs.csv")[0]
    digest = quick_config().digest()
    for folder in (done, done / "runs", Path("/")):
        monkeypatch.chdir(folder)
        assert incomplete_reason(done / "runs" / "a", science, template, digest) is None


def test_a_pair_another_task_landed_is_skipped_untimed(done: Path, tmp_path: Path) -> None:
    # out9/goto: a pair an earlier attempt had landed was "ok" in 0.00105 s with a peak
    # memory of 176.75, the worker's own, for a pair that took about 12.8 s
    science, template, _ = read_pairs_csv(done / "pairs.csv")[0]
    out = _batch(done, tmp_path, ("a",))
    row = run_job(PairJob("a", science, template, str(out / "a"), quick_config()))
    assert row["status"] == "skipped"
    assert math.isnan(row["seconds"]) and math.isnan(row["peak_memory"])
    assert row["n_good"] > 0  # read from the outputs


def test_a_rerun_racing_a_task_of_a_killed_batch_skips_the_pair_it_lands(
    done: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # night16: the batch killed after 3.5 s, rerun at once: its task found the folder
    # empty, ran, and failed after 8.4 s ("output folder ... already exists and is not
    # empty") as the killed batch's task, still running, landed the same result
    science, template, _ = read_pairs_csv(done / "pairs.csv")[0]
    real = cli.run_pair

    def raced(science_spec, template_spec, out, *args, **kwargs):
        shutil.copytree(done / "runs" / "a", out)  # the other task lands meanwhile
        return real(science_spec, template_spec, out, *args, **kwargs)

    monkeypatch.setattr(cli, "run_pair", raced)
    row = run_job(PairJob("a", science, template, str(tmp_path / "a"), quick_config()))
    assert row["status"] == "skipped" and "error" not in row
    assert math.isnan(row["seconds"])

    # writing refused over anything else is still a failure
    def in_the_way(science_spec, template_spec, out, *args, **kwargs):
        out.mkdir()
        (out / "notes.txt").write_text("someone else's")
        return real(science_spec, template_spec, out, *args, **kwargs)

    monkeypatch.setattr(cli, "run_pair", in_the_way)
    other = run_job(PairJob("c", science, template, str(tmp_path / "c"), quick_config()))
    assert (other["status"], other["error_kind"]) == ("failed", "input")
    assert "already exists and is not empty" in other["error"]


def test_peak_memory_is_in_the_megabytes_its_unit_says(tmp_path: Path) -> None:
    # VmHWM / 1024 is MiB: 171.79 was reported for 180.1 MB
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("no per-pair peak memory here (Linux's clear_refs)")
    missing = str(tmp_path / "none.fits")
    row = run_job(PairJob("p", missing, missing, str(tmp_path / "p"), quick_config()))
    resident = psutil.Process().memory_info().rss / 1e6
    assert row["status"] == "failed"
    assert resident <= row["peak_memory"] <= 1.03 * resident
    write_summary(tmp_path, [row])
    assert read_summary(tmp_path)["peak_memory"].unit.to(u.byte) == 1e6


def test_a_pair_nobody_measured_does_not_rank_as_better_than_a_measured_one() -> None:
    # rubin_a, nothing measured (noise ratio and sky pulls NaN, 0 good stamps), scored 5.0
    # and was reviewed after dec_a, measured, at 5.10
    rubin_a = {"status": "skipped", "noise_ratio": math.nan, "sky_pull_std": math.nan}
    rubin_a |= {"n_good": 0, "n_positive": 0, "n_negative": 0}
    dec_a = {"status": "ok", "noise_ratio": 1.2, "sky_pull_std": 1.3, "n_good": 12}
    dec_a |= {"n_positive": 0, "n_negative": 0}
    assert badness(rubin_a) > badness(dec_a)
    # unknown is the worst a figure weighs, never less than any measured value
    for name in ("noise_ratio", "sky_pull_std"):
        for measured in (0.01, 0.5, 4.0, 1000.0):
            assert badness(dec_a | {name: math.nan}) >= badness(dec_a | {name: measured})
    assert badness(dec_a | {"n_good": -1}) >= badness(dec_a | {"n_good": 0})
