"""``diffviewer batch`` on a real ``LocalCluster``: rows, exit status, warnings, resume.

The pairs are the demo pair (256 x 256, a few seconds each) under several names, one
with a missing template (bad input) and one whose template has data on a strip of 20
columns only (no coverage). The scheduler + worker test and the signal tests are in
``test_batch_cluster.py``; these share one batch run to stay short.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from diffviewer import cli
from diffviewer.atomic import staging_name
from diffviewer.batch import BatchOptions, plan_batch, read_summary, runner, write_summary
from diffviewer.batch.summary import COLUMN_NAMES, badness
from diffviewer.batch.task import PairJob, run_job
from diffviewer.config import SubtractionConfig, apply_overrides
from diffviewer.engine.ids import FROM_PAIR
from diffviewer.io import demo_pair
from diffviewer.paths import MAX_NAME_BYTES, default_pair_name, read_pairs_csv
from diffviewer.results import incomplete_reason, read_saved_run

#: A constant kernel: the demo's 256 x 256 has about a dozen kernel stars.
QUICK = ["--set", "kernel.spatial_order=0"]
GOOD = ("good1", "good2")


def make_pairs(
    folder: Path, names: tuple[str, ...] = GOOD, bad: bool = True, distinct: bool = False
) -> Path:
    """Demo pairs under ``names`` (plus a bad and a no-coverage pair), and their CSV list.

    ``distinct``: each pair after the first has a template of its own, the demo's with
    its sky raised by 10 counts a pair (other pixels, as a night's pairs have); else every
    pair is the demo pair.
    """
    science, template = demo_pair()
    shutil.copy(science, folder / "science.fits")
    shutil.copy(template, folder / "template.fits")
    templates = ["template.fits"] * len(names)
    with fits.open(template) as hdul:
        data = hdul[0].data.astype(np.float32)
        if distinct:
            for i in range(1, len(names)):
                templates[i] = f"template{i}.fits"
                fits.writeto(folder / templates[i], data + 10.0 * i, hdul[0].header)
        data[:, 20:] = np.nan  # data on 20 of 256 columns: 7.8 % coverage, below 10 %
        fits.writeto(folder / "far.fits", data, hdul[0].header)
    lines = [
        "science,template,name",
        *(f"science.fits,{t},{n}" for t, n in zip(templates, names, strict=True)),
    ]
    if bad:
        lines += ["science.fits,missing.fits,bad", "science.fits,far.fits,nocover"]
    (folder / "pairs.csv").write_text("\n".join(lines) + "\n")
    return folder / "pairs.csv"


def quick_config() -> SubtractionConfig:
    """The config the ``QUICK`` options make."""
    return apply_overrides(SubtractionConfig(), [QUICK[1]])


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One batch of two good pairs (each its own template), a bad one and one without
    coverage, on 2 local workers."""
    folder = tmp_path_factory.mktemp("batch")
    pairs = make_pairs(folder, distinct=True)
    out = folder / "out"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(
            ["batch", str(pairs), "--out", str(out), "--workers", "2", "--quiet", *QUICK]
        )
    return {"pairs": pairs, "out": out, "code": code, "stderr": err.getvalue()}


@pytest.mark.slow
def test_every_pair_has_a_row_that_says_what_happened(batch: dict) -> None:
    out: Path = batch["out"]
    table = read_summary(out)
    assert tuple(table.colnames) == COLUMN_NAMES
    rows = {r["name"]: r for r in table}
    assert list(rows) == [*GOOD, "bad", "nocover"]  # the list's order
    for name in GOOD:
        row = rows[name]
        assert row["status"] == "ok" and row["error"] == ""
        meta = json.loads((out / name / "metadata.json").read_text())
        # the row's QA figures are the pair's own saved figures
        assert row["noise_ratio"] == pytest.approx(meta["difference"]["noise_ratio"])
        assert row["noise_scale"] == pytest.approx(meta["renormalisation"]["noise_scale"])
        error = meta["renormalisation"]["noise_scale_error"]
        assert row["noise_scale_err"] == pytest.approx(error) and 0 < error < 0.2
        assert row["sky_pull_std"] == pytest.approx(meta["detection"]["sky_sources"]["pull_std"])
        level = meta["kernel"]["sky_level"]
        assert row["sky_level"] == pytest.approx(level["level"] if level["applied"] else 0.0)
        assert row["n_good"] == meta["kernel"]["candidates"]["good"] > 0
        assert row["kernel_sum"] == pytest.approx(meta["kernel"]["kernel_sum"]["mean"])
        assert row["kernel_sum_err"] == pytest.approx(meta["kernel"]["kernel_sum"]["error"])
        assert row["kernel_sum_err"] > 0
        held = meta["kernel"]["candidates"]["held_out_chi2_median"]
        assert row["held_out_chi2"] == pytest.approx(held) and held > 0
        assert row["n_positive"] == meta["detection"]["n_positive"]
        assert row["n_warnings"] == len(meta["warnings"])
        assert row["seconds"] > 0 and row["peak_memory"] > 50  # a worker holds numpy+astropy
        assert row["output"] == str(out / name)
        assert row["badness"] == pytest.approx(badness(dict(zip(table.colnames, row, strict=True))))
    assert (rows["bad"]["status"], rows["bad"]["error_kind"]) == ("failed", "input")
    assert "missing.fits" in rows["bad"]["error"]
    assert (rows["nocover"]["status"], rows["nocover"]["error_kind"]) == ("failed", "no_coverage")
    assert "below warp.required_template_fraction" in rows["nocover"]["error"]
    assert not (out / "bad").exists() and not (out / "nocover").exists()
    # the FITS summary holds the same table
    fits_table = Table.read(out / "summary.fits")
    assert list(fits_table["name"]) == list(table["name"])
    assert list(fits_table["status"]) == list(table["status"])


@pytest.mark.slow
def test_the_pairs_catalogs_share_no_id(batch: dict, tmp_path: Path) -> None:
    # Each pair's ids carry an exposure id derived from its pixels (the config, the same
    # for every pair, gives none): a night's catalogs merge without two sources of one id.
    out: Path = batch["out"]
    ids = {}
    for name in GOOD:
        recorded = json.loads((out / name / "metadata.json").read_text())["measurement"]
        assert recorded["exposure_id_from"] == FROM_PAIR
        ids[name] = set(Table.read(out / name / "diasources.ecsv")["id"].tolist())
        low = 64 - recorded["exposure_bits"]  # the running number's bits
        assert ids[name] and {i >> low for i in ids[name]} == {recorded["exposure_id"]}
    assert not ids["good1"] & ids["good2"]
    # a folder written before metadata.json recorded the exposure id reads back whole
    older = tmp_path / "older"
    shutil.copytree(out / "good1", older)
    meta = json.loads((older / "metadata.json").read_text())
    del meta["measurement"]
    (older / "metadata.json").write_text(json.dumps(meta))
    assert set(read_saved_run(older).diasources["id"].tolist()) == ids["good1"]


@pytest.mark.slow
def test_exit_status_and_messages_name_the_pairs(batch: dict) -> None:
    # bad input outranks no coverage (internal > input > no coverage > guard)
    assert batch["code"] == cli.EXIT_ERROR
    lines = batch["stderr"].splitlines()
    warnings = [ln for ln in lines if ln.startswith("warning:")]
    assert warnings, "the demo pair's runs warn (few kernel stars, rescaled variance)"
    assert all(ln.split(":")[1].strip() in GOOD for ln in warnings), warnings
    assert any(ln.startswith("error: bad: ") and "missing.fits" in ln for ln in lines)
    assert any(ln.startswith("error: nocover: ") for ln in lines)
    assert "2 failed (1 input, 1 no coverage)" in lines[-1]
    assert not [p for p in batch["out"].rglob(".*")], "hidden staging or temporary files left"


@pytest.mark.slow
def test_a_rerun_skips_finished_pairs_without_running_them(batch: dict, monkeypatch) -> None:
    def no_cluster(*args, **kwargs):
        raise AssertionError("a rerun of a finished batch started a cluster")

    monkeypatch.setattr(runner, "dask_client", no_cluster)
    out: Path = batch["out"]
    stamps = {n: (out / n / "metadata.json").stat().st_mtime_ns for n in GOOD}
    before = {r["name"]: r for r in read_summary(out)}
    code = cli.main(["batch", str(batch["pairs"]), "--out", str(out), "--quiet", *QUICK])
    assert code == cli.EXIT_ERROR  # the failed pairs stay failed without --retry-failed
    rows = {r["name"]: r for r in read_summary(out)}
    for name in GOOD:
        assert rows[name]["status"] == "skipped"
        assert (out / name / "metadata.json").stat().st_mtime_ns == stamps[name]
        for column in ("noise_ratio", "n_good", "seconds", "peak_memory", "badness"):
            assert rows[name][column] == before[name][column]
    assert rows["bad"]["error"] == before["bad"]["error"]


@pytest.mark.slow
def test_completeness_is_checked_and_failed_pairs_are_retried_on_request(batch: dict) -> None:
    out: Path = batch["out"]
    pairs = read_pairs_csv(batch["pairs"])
    options = BatchOptions(out=out, config=quick_config())
    assert [j.name for j in plan_batch(pairs, options).jobs] == []
    retry = plan_batch(pairs, BatchOptions(out=out, config=quick_config(), retry_failed=True))
    assert [j.name for j in retry.jobs] == ["bad", "nocover"]
    # another config makes every pair's outputs stale, and so do other products (a rerun
    # with --products minimal or --compress skipped them as complete)
    # (and the failures the last run kept are retried: they were another config's)
    other = plan_batch(pairs, BatchOptions(out=out, config=SubtractionConfig(), overwrite=True))
    assert [j.name for j in other.jobs] == [*GOOD, "bad", "nocover"]
    for products, compress in (("minimal", False), ("full", True)):
        asked = BatchOptions(
            out=out, config=quick_config(), products=products, compress=compress, overwrite=True
        )
        assert [j.name for j in plan_batch(pairs, asked).jobs] == list(GOOD)
    # without --overwrite they are refused, saying why and what to do, their rows read
    # from the outputs there
    stale = plan_batch(pairs, BatchOptions(out=out, config=SubtractionConfig())).kept["good1"]
    assert stale["status"] == "refused" and "made with another config" in stale["error"]
    assert stale["n_good"] > 0 and stale["config_digest"] == quick_config().digest()
    # a damaged output is seen, not assumed complete
    damaged = out / "damaged"
    shutil.copytree(out / "good1", damaged)
    with (damaged / "difference.fits").open("r+b") as handle:
        handle.truncate(10000)
    science, template = pairs[0][:2]
    reason = incomplete_reason(damaged, science, template, quick_config().digest())
    assert reason == "difference.fits is truncated"
    shutil.copy(out / "good1" / "difference.fits", damaged)
    (damaged / "kernel.fits").unlink()
    assert "kernel.fits is missing" in str(
        incomplete_reason(damaged, science, template, quick_config().digest())
    )


def test_a_task_turns_any_failure_into_its_row(tmp_path: Path, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli, "run_pair", broken)
    science, template = demo_pair()
    job = PairJob("p", str(science), str(template), str(tmp_path / "p"), SubtractionConfig())
    row = run_job(job)
    assert (row["status"], row["error_kind"]) == ("failed", "internal")
    assert row["error"] == "internal error (ZeroDivisionError: a bug)"
    assert math.isfinite(row["seconds"]) and row["peak_memory"] > 0
    assert not os.path.exists(tmp_path / "p")


def test_the_batch_and_the_results_reader_load_no_qt() -> None:
    code = (
        "import sys, diffviewer.batch, diffviewer.batch.task, diffviewer.results\n"
        "print(' '.join(m for m in sys.modules if m.split('.')[0] in ('PyQt6', 'pyqtgraph')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"Qt modules loaded: {out.stdout}"


def test_errors_off_by_a_factor_rank_a_pair_for_review() -> None:
    # The sky sources' pulls scattering by 2 (or 1/2) of the catalog's errors weigh as a
    # noise ratio of 2 does: 5; honest errors (1), 0; none measured (or an old summary
    # without them), the most a ratio weighs: 10.
    row = {"status": "ok", "noise_ratio": 1.0, "n_good": 20}
    honest = badness({**row, "sky_pull_std": 1.0})
    assert honest == 0.0 and badness(row) == 10.0
    assert badness({**row, "sky_pull_std": 2.0}) == pytest.approx(honest + 5.0)
    assert badness({**row, "sky_pull_std": 0.5}) == pytest.approx(honest + 5.0)
    # 8 positive and 2 negative sources, 3 of them dipoles: 10 detections, not 13 (the
    # demo pair's dipoles are among its positives)
    found = {**row, "sky_pull_std": 1.0, "n_positive": 8, "n_negative": 2, "n_dipoles": 3}
    assert badness(found) == pytest.approx(2.0 * np.log10(11.0))


@pytest.mark.parametrize(
    "row",
    [
        # a non-ASCII input path, pair name and reviewer's comment: FITS tables hold ASCII
        {
            "name": "nuit_étoilée",
            "science": "/données/science.fits",
            "template": "/données/template.fits",
            "status": "ok",
            "verdict": "bad",
            "comment": "residuals at 3σ around the core",
            "output": "/données/out/nuit_étoilée",
        },
        # a folder and paths with two spaces: squeezed, "a  b" named a folder that is not
        {
            "name": "a  b",
            "science": "/night/two  spaces/science.fits",
            "template": "/night/two  spaces/template.fits",
            "status": "failed",
            "error": "a line\n  and  another",
            "output": "/night/out/a  b",
        },
    ],
)
def test_text_is_kept_as_it_is_in_both_summaries(tmp_path: Path, row: dict) -> None:
    assert write_summary(tmp_path, [row]) == tmp_path / "summary.ecsv"
    ecsv, fits_table = read_summary(tmp_path), Table.read(tmp_path / "summary.fits")
    for column in ("name", "science", "template", "comment", "output"):
        if column in row:
            assert ecsv[column][0] == fits_table[column][0] == row[column], column
    if "error" in row:  # free text on one line
        assert ecsv["error"][0] == " ".join(row["error"].split())


@pytest.mark.slow
def test_a_rerun_says_which_failures_it_keeps_and_how_to_retry_them(
    batch: dict, monkeypatch
) -> None:
    def no_cluster(*args, **kwargs):
        raise AssertionError("a rerun of a finished batch started a cluster")

    monkeypatch.setattr(runner, "dask_client", no_cluster)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["batch", str(batch["pairs"]), "--out", str(batch["out"]), *QUICK])
    assert code == cli.EXIT_ERROR
    note = (
        "note: 2 failures kept from the last run (bad, nocover; not retried; pass --retry-failed)"
    )
    assert note in err.getvalue().splitlines(), err.getvalue()


def test_long_file_names_give_pair_names_a_folder_can_take(tmp_path: Path) -> None:
    stem = "n" * 150
    for name in (f"{stem}_sci.fits", f"{stem}_ref.fits"):
        (tmp_path / name).touch()
    (tmp_path / "pairs.csv").write_text(f"science,template\n{stem}_sci.fits,{stem}_ref.fits\n")
    [(_, _, name)] = read_pairs_csv(tmp_path / "pairs.csv")
    assert len(name.encode()) <= MAX_NAME_BYTES and name.startswith("nnn")
    # the staging folder named after it (plus host and pid) is a name the system takes
    (tmp_path / staging_name(name)).mkdir()
    short = default_pair_name(["sci", "ref"], ["/a/sci.fits", "/a/ref.fits"])
    assert short.startswith("sci__ref__")  # names that fit are as before


def test_a_batch_folder_that_cannot_be_written_is_refused_before_any_pair(
    tmp_path: Path, capsys
) -> None:
    pairs = make_pairs(tmp_path, names=("a",), bad=False)
    (tmp_path / "file").write_text("")
    code = cli.main(["batch", str(pairs), "--out", str(tmp_path / "file" / "night"), *QUICK])
    err = capsys.readouterr().err.strip()
    assert code == cli.EXIT_ERROR and "\n" not in err and "internal" not in err
    assert f"cannot write into the batch folder {tmp_path / 'file' / 'night'}" in err


def test_the_workers_memory_is_sized_on_every_pair(tmp_path: Path) -> None:
    small, large = tmp_path / "small.fits", tmp_path / "large.fits"
    fits.writeto(small, np.zeros((64, 64), np.uint8))
    fits.writeto(large, np.zeros((3000, 3000), np.uint8))
    config = quick_config()

    def jobs(sciences: list[Path]) -> list[PairJob]:
        return [
            PairJob(f"p{i}", str(s), str(small), str(tmp_path / f"p{i}"), config)
            for i, s in enumerate(sciences)
        ]

    # a night of cutouts then one large pair: sized on the first 20, its worker was killed
    night = runner.worker_layout(jobs([small] * 30 + [large]), 1, 64e9, 2)
    assert night == runner.worker_layout(jobs([large]), 1, 64e9, 2)
    assert night[1] == 2 * (runner.WORKER_BASE_BYTES + runner.BYTES_PER_PIXEL * 3000**2)


def test_a_folder_in_the_way_fails_with_advice_that_works(tmp_path: Path) -> None:
    pairs = read_pairs_csv(make_pairs(tmp_path, names=("a",), bad=False))
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "a" / "notes.txt").write_text("someone else's")
    plan = plan_batch(pairs, BatchOptions(out=out, config=quick_config()))
    assert plan.jobs == [] and plan.kept["a"]["status"] == "failed"
    error = plan.kept["a"]["error"]
    assert str(out / "a") in error and "metadata.json is missing" in error
    assert "rerun with --overwrite --retry-failed" in error
    # a folder of the user's is not called another run's outputs (it contradicted itself:
    # "holds another run's outputs (... is not a diffviewer output folder)")
    assert "another run's outputs" not in error
    assert "holds files this batch cannot read as a run's outputs" in error
    err = io.StringIO()
    with contextlib.redirect_stderr(err):  # said as a failure while running is
        code = cli.main(["batch", str(tmp_path / "pairs.csv"), "--out", str(out), *QUICK])
    assert code == cli.EXIT_ERROR and f"error: a: {error}" in err.getvalue().splitlines()
    write_summary(out, [plan.kept["a"]])
    # the advice as given runs the pair; --overwrite alone keeps the failure and says so
    advised = BatchOptions(out=out, config=quick_config(), overwrite=True, retry_failed=True)
    assert [j.name for j in plan_batch(pairs, advised).jobs] == ["a"]
    overwrite = plan_batch(pairs, BatchOptions(out=out, config=quick_config(), overwrite=True))
    assert (overwrite.jobs, overwrite.kept_failed) == ([], ("a",))


def test_a_pair_named_like_a_file_in_the_batch_folder_is_told_to_rename(tmp_path: Path) -> None:
    # The science file lies in --out and the pair is named after it: the pair's output
    # folder is that file. Run, the pair failed with "choose a folder for --out", which
    # --out was already; with --overwrite too. Either way the file is left as it was.
    science, template = demo_pair()
    out = tmp_path / "night"
    out.mkdir()
    shutil.copy(science, out / "sci.fits")
    before = (out / "sci.fits").read_bytes()
    pairs = [(str(out / "sci.fits"), str(template), "sci.fits")]
    for overwrite in (False, True):
        options = BatchOptions(out=out, config=quick_config(), overwrite=overwrite)
        plan = plan_batch(pairs, options)
        assert plan.jobs == [] and plan.kept["sci.fits"]["status"] == "failed"
        error = plan.kept["sci.fits"]["error"]
        assert "give the pair another name (the list's name column), or another --out" in error
    assert (out / "sci.fits").read_bytes() == before


@pytest.mark.slow
def test_an_interrupted_batch_lists_as_done_only_what_it_asked_for(batch: dict) -> None:
    # the outputs of good1, good2 are complete for --products full; a batch asking for
    # minimal products runs them again, and when interrupted before their results come
    # back it must not list the full products of the earlier run as its own
    out: Path = batch["out"]
    pairs = read_pairs_csv(batch["pairs"])
    minimal = BatchOptions(out=out, config=quick_config(), products="minimal", overwrite=True)
    jobs = plan_batch(pairs, minimal).jobs
    assert [j.name for j in jobs] == list(GOOD)
    assert runner._finished_unreported(jobs, {}, minimal) == {}
    full = BatchOptions(out=out, config=quick_config())
    found = runner._finished_unreported(jobs, {}, full)
    assert {n: r["status"] for n, r in found.items()} == dict.fromkeys(GOOD, "ok")


def test_an_input_named_like_the_summary_is_never_written_over(tmp_path: Path, capsys) -> None:
    science, template = demo_pair()
    out = tmp_path / "night"
    out.mkdir()
    shutil.copy(science, out / "summary.fits")  # an input where the summary goes
    before = (out / "summary.fits").read_bytes()
    (tmp_path / "pairs.csv").write_text(f"science,template\nnight/summary.fits,{template}\n")
    code = cli.main(["batch", str(tmp_path / "pairs.csv"), "--out", str(out), "--quiet"])
    assert code == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert f"refusing to write {out / 'summary.fits'}: it is the input file" in err
    assert (out / "summary.fits").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["summary.fits"]  # nothing ran


def test_an_input_replaced_in_place_makes_the_pair_run_again(tmp_path: Path) -> None:
    pairs = read_pairs_csv(make_pairs(tmp_path, names=("a",), bad=False))
    out = tmp_path / "out"
    science, template, _ = pairs[0]
    config = quick_config()
    code = cli.run_pair(
        science, template, out / "a", config, overwrite=False, strict=False, quiet=True
    )
    assert code == cli.EXIT_OK
    options = BatchOptions(out=out, config=config, overwrite=True)
    assert plan_batch(pairs, options).jobs == []  # complete: skipped
    with fits.open(template) as hdul:  # a new template under the same name
        data = hdul[0].data.astype(np.float32)
        data[100:140, 100:140] += 5000.0
        fits.writeto(template, data, hdul[0].header, overwrite=True)
    reason = incomplete_reason(out / "a", science, template, config.digest())
    assert reason == f"its input {template} was replaced or changed since the run"
    assert [j.name for j in plan_batch(pairs, options).jobs] == ["a"]


def _judge(out: str, names: list[str]) -> None:
    """Set a verdict on each of ``names`` in the summary of ``out`` (a reviewer's process)."""
    from diffviewer.batch.summary import set_summary_verdict

    for name in names:
        set_summary_verdict(out, name, "good", f"judged {name}")


def test_two_reviewers_at_once_lose_no_verdict(tmp_path: Path) -> None:
    # Two review windows judging pairs of one batch at once, each a read-modify-write of
    # the summary: 17 of 48 verdicts were lost, each window writing back the table it
    # had read before the other's write. Two processes, 30 pairs each.
    import multiprocessing

    names = [f"p{i:02d}" for i in range(60)]
    rows = [
        {"name": n, "science": "s.fits", "template": "t.fits", "output": str(tmp_path / n)}
        for n in names
    ]
    write_summary(tmp_path, [{**r, "status": "ok"} for r in rows])
    context = multiprocessing.get_context("spawn")
    reviewers = [
        context.Process(target=_judge, args=(str(tmp_path), names[k::2])) for k in range(2)
    ]
    for reviewer in reviewers:
        reviewer.start()
    for reviewer in reviewers:
        reviewer.join(120)
        assert reviewer.exitcode == 0
    summary = read_summary(tmp_path)
    assert sorted(summary["name"]) == names
    assert list(summary["verdict"]) == ["good"] * len(names)
    assert [str(c) for c in summary["comment"]] == [f"judged {n}" for n in summary["name"]]
