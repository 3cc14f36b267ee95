"""`diffviewer run`: outputs, refusals, one-line errors; the GUI entry without a display."""

from __future__ import annotations

import contextlib
import ctypes.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from diffviewer import cli
from diffviewer.config import SubtractionConfig, load_toml, to_toml
from diffviewer.errors import ConfigError, InputError, OutputError
from diffviewer.gui import model
from diffviewer.io import demo_pair, read_exposure
from diffviewer.outputs import OUTPUT_NAMES
from diffviewer.paths import read_pairs_csv

#: The demo stacks share one grid: nothing is warped, so no warped_template.fits.
EXPECTED = {
    "matched_template.fits",
    "difference.fits",
    "score.fits",
    "kernel.fits",
    "kernel_candidates.ecsv",
    "diagnostics.fits",
    "diasources.ecsv",
    "diasources.fits",
    "diasources.reg",
    "config.toml",
    "metadata.json",
}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One headless run of the demo pair (shared by the tests that read its outputs)."""
    out = tmp_path_factory.mktemp("run") / "out"
    sci, tmpl = demo_pair()
    code = cli.main(
        [
            "run",
            str(sci),
            str(tmpl),
            "--out",
            str(out),
            "--quiet",
            "--set",
            "kernel.spatial_order=1",
        ]
    )
    assert code == 0
    return out


def test_run_writes_every_output(demo_run: Path) -> None:
    assert {p.name for p in demo_run.iterdir()} == EXPECTED
    assert not [p for p in demo_run.iterdir() if p.name.startswith(".")], "temporary files left"
    meta = json.loads((demo_run / "metadata.json").read_text())
    assert meta["warp"]["coverage_fraction"] == pytest.approx(1.0)
    assert meta["warp"]["warped"] is False  # the demo stacks share one grid
    assert meta["outputs"]["warped_template"].startswith("not written: the template was not")
    assert meta["outputs"]["files"] == [n for n in OUTPUT_NAMES if n in EXPECTED]
    assert set(meta["timings_s"]) >= {"warp", "kernel fit", "subtract", "detect", "measure"}
    assert meta["kernel"]["candidates"]["good"] > meta["kernel"]["candidates"]["bad"]
    assert meta["kernel"]["kernel_sum"]["fitted"] is True  # on the demo's kernel stars
    stamps = meta["kernel"]["candidates"]
    assert sum(stamps["bad_by_reason"].values()) == stamps["bad"] > 0
    # The one noise renormalisation (issue 12), at PSF scale on sky, is stated with its
    # value: the demo stacks' resampled noise is 1.45 times its prediction there (known
    # to ~4 % from ~10 000 sky pixels). Per pixel the difference then reads ~0.6: its
    # noise is correlated, which is why the scale is measured where sources are measured.
    renorm = meta["renormalisation"]
    assert renorm["applied"] and 1.3 <= renorm["noise_scale"] <= 1.6
    assert renorm["variance_factor"] == pytest.approx(renorm["noise_scale"] ** 2)
    assert renorm["reason"].startswith("applied") and renorm["sky_distance_px"] > 0
    # The difference's level on the inputs' sky (the stacks' kernel fit left -1.28 +- 0.04
    # counts there, 82 counts of every PSF flux), taken out and stated with its value.
    level = meta["kernel"]["sky_level"]
    assert level["applied"] and level["n_pixels"] > 10_000
    assert abs(level["level"]) > 3 * level["error"] and "taken out" in level["why"]
    assert load_toml(demo_run / "config.toml").kernel.spatial_order == 1
    with fits.open(demo_run / "difference.fits") as hdus:
        assert [h.name for h in hdus][1:] == ["IMAGE", "MASK", "VARIANCE"]
        assert hdus["IMAGE"].header["CTYPE1"].startswith("RA")
    cat = Table.read(demo_run / "diasources.ecsv")
    sky = cat["sky_source"]
    assert len(cat[~sky]) == meta["detection"]["n_sources"]
    assert len(cat[sky]) == meta["detection"]["n_sky_sources"] == 100
    # the depth searched is stated beside the counts, and every source reached it
    assert meta["detection"]["threshold_sigma"] == 5.0
    assert meta["detection"]["detect_on"] == "difference"
    assert np.all(np.abs(cat["peak_value"][~sky]) >= meta["detection"]["threshold_sigma"])
    blank = meta["detection"]["sky_sources"]
    assert 90 <= blank["n"] <= 100 and 0.7 < blank["pull_std"] < 1.3
    # The SFFT difference of these stacks has a ~49 sigma positive residual at (60, 181).
    near = (abs(cat["x"] - 60) < 3) & (abs(cat["y"] - 181) < 3)
    assert near.any() and (cat["sign"][near] > 0).all()


def test_run_refuses_existing_output_without_overwrite(demo_run: Path, capsys) -> None:
    sci, tmpl = demo_pair()
    before = {p.name: p.stat().st_mtime_ns for p in demo_run.iterdir()}
    code = cli.main(["run", str(sci), str(tmpl), "--out", str(demo_run), "--quiet"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR
    assert str(demo_run) in err and "--overwrite" in err
    assert {p.name: p.stat().st_mtime_ns for p in demo_run.iterdir()} == before


def test_run_never_writes_over_an_input(tmp_path: Path, capsys) -> None:
    sci, tmpl = demo_pair()
    work = tmp_path / "inputs"
    work.mkdir()
    local_sci = Path(shutil.copy(sci, work / "difference.fits"))  # an input named like an output
    local_tmpl = Path(shutil.copy(tmpl, work / "template.fits"))
    digest = local_sci.read_bytes()
    code = cli.main(
        ["run", str(local_sci), str(local_tmpl), "--out", str(work), "--overwrite", "--quiet"]
    )
    assert code == cli.EXIT_ERROR
    assert "input" in capsys.readouterr().err
    assert local_sci.read_bytes() == digest


def test_the_working_folder_is_refused_as_output_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # `--out . --overwrite` put the outputs in place of the working folder (the user's
    # config.toml replaced, the folder renamed aside and removed), then failed with an
    # internal error saying no output was written.
    work = tmp_path / "work"
    work.mkdir()
    mine = work / "config.toml"
    mine.write_text("# the user's own\n")
    monkeypatch.chdir(work)
    sci, tmpl = demo_pair()
    code = cli.main(["run", str(sci), str(tmpl), "--out", ".", "--overwrite", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == cli.EXIT_ERROR and "\n" not in err
    assert "is the working folder or holds it" in err and str(work / "diffviewer-out") in err
    assert [p.name for p in tmp_path.iterdir()] == ["work"]
    assert [p.name for p in work.iterdir()] == ["config.toml"]
    assert mine.read_text() == "# the user's own\n"


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d: d / "missing.fits", "missing.fits"),
        (
            lambda d: (d / "text.fits").write_text("not a fits file") and d / "text.fits",
            "text.fits",
        ),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, capsys, make, needle: str) -> None:
    bad = make(tmp_path)
    _, tmpl = demo_pair()
    code = cli.main(["run", str(bad), str(tmpl), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == cli.EXIT_ERROR
    assert err.startswith("error:") and needle in err and "\n" not in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_bad_override_is_named(capsys) -> None:
    sci, tmpl = demo_pair()
    code = cli.main(
        ["run", str(sci), str(tmpl), "--out", "unused", "--set", "kernel.spatial_order=9"]
    )
    assert code == cli.EXIT_ERROR
    assert "kernel.spatial_order = 9" in capsys.readouterr().err


def test_gui_without_display_says_how_to_run_headless() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")
    }
    proc = subprocess.run(
        [sys.executable, "-m", "diffviewer"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == cli.EXIT_ERROR
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no display" in lines[0] and "diffviewer run" in lines[0]
    assert "Traceback" not in proc.stderr


def test_pairs_csv_resolves_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "list.csv").write_text("science,template,name\na.fits[SCI],a.fits[REF],first\n")
    [(sci, tmpl, name)] = read_pairs_csv(tmp_path / "list.csv")
    assert sci == str(tmp_path / "a.fits[SCI]") and tmpl.endswith("a.fits[REF]") and name == "first"


def test_pairs_csv_as_a_spreadsheet_writes_it(tmp_path: Path, monkeypatch) -> None:
    # Excel's "CSV UTF-8" starts with a byte-order mark, a header may have spaces after
    # its commas, blank and '#' lines are skipped, an error names the file's own line, and
    # a leading ~ is the home folder, not a folder under the list's.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    rows = "science, template\n\n   \n# tonight\na.fits,b.fits\n~/c.fits,d.fits\n"
    (tmp_path / "list.csv").write_bytes(b"\xef\xbb\xbf" + rows.encode())
    pairs = read_pairs_csv(tmp_path / "list.csv")
    assert [p[2].rsplit("__", 1)[0] for p in pairs] == ["a__b", "c__d"]
    assert pairs[0][0] == str(tmp_path / "a.fits")
    assert pairs[1][0] == str(tmp_path / "home" / "c.fits")
    (tmp_path / "list.csv").write_text(rows + "e.fits,\n")
    with pytest.raises(InputError, match="line 7: the science or template spec is empty"):
        read_pairs_csv(tmp_path / "list.csv")
    (tmp_path / "list.csv").write_text("sci,tmpl\na.fits,b.fits\n")
    with pytest.raises(InputError, match=r"its header has \['sci', 'tmpl'\]"):
        read_pairs_csv(tmp_path / "list.csv")


@pytest.mark.parametrize(
    ("line", "column"),
    [("a.fits,b.fits,x\0y", "name"), ("a\0.fits,b.fits,x", "science"), ("a.fits,b\0,", "template")],
)
def test_a_nul_byte_in_the_pairs_list_is_refused_with_its_line(
    tmp_path: Path, capsys, line: str, column: str
) -> None:
    # in a name the pair failed as "internal error (ValueError: embedded null byte)"; in a
    # spec the whole batch ended rc 1, "please report"
    pairs = tmp_path / "list.csv"
    pairs.write_text(f"science,template,name\n# a comment\n{line}\n")
    assert cli.main(["batch", str(pairs), "--out", str(tmp_path / "out")]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: pairs list {pairs}, line 3: the {column} column holds a NUL byte (\\x00), "
        "which no file or folder name can hold; the list is damaged or not plain text: "
        "remove the byte, or save the list again as a UTF-8 CSV file"
    )
    assert not (tmp_path / "out").exists()


def test_a_name_starting_with_a_dot_is_refused(tmp_path: Path) -> None:
    # ".hidden" was accepted: a hidden output folder, named as staging folders are
    (tmp_path / "list.csv").write_text("science,template,name\na.fits,b.fits,.hidden\n")
    with pytest.raises(InputError, match=r"line 2: name '.hidden' starts with '.', which makes"):
        read_pairs_csv(tmp_path / "list.csv")


def test_batch_refuses_an_output_that_is_a_file_or_a_summarys_name(tmp_path: Path, capsys) -> None:
    sci, tmpl = demo_pair()
    (tmp_path / "pairs.csv").write_text(f"science,template,name\n{sci},{tmpl},summary.ecsv\n")
    assert cli.main(["batch", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "not summary.ecsv or summary.fits" in capsys.readouterr().err
    (tmp_path / "pairs.csv").write_text(f"science,template\n{sci},{tmpl}\n")
    (tmp_path / "taken").write_text("a file")
    assert cli.main(["batch", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "taken")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "exists and is not a folder" in err and "internal" not in err
    # a scheduler address without a port is the user's to mend, and nothing is written
    args = ["batch", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "s")]
    assert cli.main([*args, "--scheduler", "notanaddress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--scheduler notanaddress: cannot connect" in err and "internal" not in err
    # the batch folder it made is removed again (an empty one was left)
    assert not (tmp_path / "s").exists()
    # a port nothing listens on is said to refuse at once (dask's client waited its 30 s
    # timeout and said it timed out)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    nested = ["batch", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "n" / "s")]
    assert cli.main([*nested, "--scheduler", closed]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--scheduler {closed}: cannot connect" in err and "refused" in err.lower()
    assert not (tmp_path / "n").exists()  # and the folders it made above it
    # a port out of range is said to be (it was "Connection refused")
    assert cli.main([*args, "--scheduler", "tcp://127.0.0.1:99999"]) == 2
    err = capsys.readouterr().err.strip()
    assert "port 99999 is out of range (1-65535)" in err and "refused" not in err
    # a folder that was there is kept, empty or not
    (tmp_path / "s").mkdir()
    assert cli.main([*args, "--scheduler", closed]) == 2
    assert (tmp_path / "s").is_dir()


@pytest.mark.parametrize(("limit", "expected"), [(0.0, cli.EXIT_STRICT), (1.0, cli.EXIT_OK)])
def test_strict_fails_only_when_the_guard_trips(
    tmp_path: Path, limit: float, expected: int
) -> None:
    sci, tmpl = demo_pair()
    out = tmp_path / "out"
    args = ["run", str(sci), str(tmpl), "--out", str(out), "--quiet", "--strict"]
    assert cli.main([*args, "--set", f"detection.max_detected_fraction={limit}"]) == expected
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["detection"]["guard_tripped"] is (expected == cli.EXIT_STRICT)


def test_gui_names_missing_xcb_packages(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(
        ctypes.util, "find_library", lambda name: None if name == "xcb-cursor" else name
    )
    assert cli.main([]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "apt-get install libxcb-cursor0`" in err and "diffviewer run" in err


@pytest.mark.parametrize("platform", ["xcb", "offscreen", "wayland"])
def test_gui_names_a_missing_opengl_library_on_any_platform(
    monkeypatch, capsys, platform: str
) -> None:
    # libQt6Gui links libEGL and libGL: without them the import of PyQt6.QtGui failed as
    # an "internal error" naming no package (the README audit of 2026-12-07).
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("QT_QPA_PLATFORM", platform)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None if name == "EGL" else name)
    assert cli.main([]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "apt-get install libegl1`" in err


def test_batch_refuses_names_that_leave_the_output_folder(tmp_path: Path, capsys) -> None:
    sci, tmpl = demo_pair()
    for name in ("../escape", "/abs", "twice\n"):
        rows = f"science,template,name\n{sci},{tmpl},{name.strip()}\n"
        if name.startswith("twice"):
            rows += f"{sci},{tmpl},twice\n"
        (tmp_path / "pairs.csv").write_text(rows)
        assert cli.main(["batch", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        expected = (
            "line 3: name 'twice' is already the name of line 2"
            if name.startswith("twice")
            else "is not a plain folder name"
        )
        assert "\n" not in err and expected in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.csv"]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("science,template\na.fits\n", "spec is empty"),
        # an unclosed quote took the lines after it as one value: "spec is empty" before
        (
            'science,template\na.fits,b.fits\n"c.fits,d.fits\ne.fits,f.fits\ng.fits,h.fits\n',
            "line 3: a value runs on to line 5, as when a quote",
        ),
        # on its last line: "line 2: a value runs on to line 2" before
        ('science,template\n"a.fits,b.fits\n', 'line 2: in it, a quote (") is opened and not'),
        # a template in pieces typed with ',' ran against its first piece alone
        (
            "science,template\na.fits,t1.fits,t2.fits\n",
            "line 2: 3 fields where the header has 2 (science,template); a template in "
            "pieces separates them with ';'",
        ),
        (f"science,template,name\na.fits,b.fits,{'n' * 161}\n", "is 161 bytes long"),
        ("science\ttemplate\na.fits\tb.fits\n", "separated by tabs: separate them with commas"),
        (b"\xff\xfe\x00bad", "cannot be read as a UTF-8 CSV"),
        (None, "cannot be read as a UTF-8 CSV"),  # a folder
    ],
)
def test_bad_pairs_lists_are_one_line_errors(tmp_path: Path, capsys, content, needle) -> None:
    path = tmp_path / "pairs.csv"
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    assert cli.main(["batch", str(path), "--out", str(tmp_path / "o")]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and "\n" not in err


def test_the_config_file_read_is_never_overwritten(tmp_path: Path, capsys) -> None:
    sci, tmpl = demo_pair()
    out = tmp_path / "out"
    out.mkdir()
    mine = out / "config.toml"
    mine.write_text("# my notes\n[detection]\nthreshold = 6.0\n")
    before = mine.read_bytes()
    args = ["run", str(sci), str(tmpl), "--out", str(out), "--overwrite", "--quiet"]
    assert cli.main([*args, "--config", str(mine)]) == cli.EXIT_ERROR
    assert "input" in capsys.readouterr().err
    assert mine.read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["config.toml"]


def test_a_failed_write_leaves_no_partial_output(tmp_path: Path, monkeypatch, capsys) -> None:
    from diffviewer import outputs

    real = outputs._write

    def failing(path: Path, payload, protect, **options):
        if path.name == "kernel.fits":  # what io's atomic writers raise on a full disk
            raise OutputError(f"cannot write {path}: No space left on device")
        return real(path, payload, protect, **options)

    monkeypatch.setattr(outputs, "_write", failing)
    sci, tmpl = demo_pair()
    out = tmp_path / "deep" / "out"
    code = cli.main(["run", str(sci), str(tmpl), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == cli.EXIT_ERROR and "No space left" in err and "\n" not in err
    assert list(tmp_path.iterdir()) == [], "no output folder, staging folder or parent left"


def test_an_internal_error_is_one_line_and_says_how_to_debug(monkeypatch, capsys) -> None:
    def broken(argv, prog):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(cli, "_main_run", broken)
    monkeypatch.delenv("DIFFVIEWER_DEBUG", raising=False)
    assert cli.main(["run"]) == cli.EXIT_INTERNAL
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "ZeroDivisionError" in err and "DIFFVIEWER_DEBUG=1" in err
    monkeypatch.setenv("DIFFVIEWER_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli.main(["run"])


def _python(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """This interpreter run with ``args`` in ``cwd``, the checkout's package first on its path."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env)


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["config"], ["run", "missing.fits", "other.fits", "--out", "x"]],
)
def test_help_config_and_a_mistyped_path_load_no_heavy_module(tmp_path: Path, argv) -> None:
    # Start-up time is import time: these answers must not wait for numpy, astropy or scipy
    # (issue 9; benchmarks/bench_startup.py measures the seconds).
    code = (
        "import sys\nfrom diffviewer.cli import main\n"
        f"try:\n    code = main({argv!r})\nexcept SystemExit as exc:\n    code = exc.code\n"
        "heavy = sorted(m for m in ('numpy', 'astropy', 'scipy') if m in sys.modules)\n"
        "print('HEAVY', heavy, code)\n"
    )
    proc = _python(["-c", code], tmp_path)
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("HEAVY [] "), (last, proc.stderr)
    if argv[0] == "run":
        assert last.endswith(" 2") and "science file missing.fits does not exist" in proc.stderr


def test_metadata_times_import_read_engine_and_write(demo_run: Path) -> None:
    # Where a run's wall time goes, for the user: loading the engine, reading the inputs,
    # the engine (which holds every step's time) and writing every other output.
    timings = json.loads((demo_run / "metadata.json").read_text())["timings_s"]
    assert {"import", "read", "total", "write"} <= set(timings)
    assert all(timings[k] > 0 for k in ("read", "total", "write"))
    steps = sum(v for k, v in timings.items() if k not in ("import", "read", "total", "write"))
    assert steps <= timings["total"]


@pytest.mark.parametrize("argv", [["config"], ["run", "missing.fits", "other.fits", "--out", "x"]])
def test_headless_commands_end_with_exit_handlers_run_and_output_flushed(
    tmp_path: Path, argv
) -> None:
    # run and config skip the interpreter's teardown (cli.end_process); the exit
    # handlers still run, nothing printed is lost and the exit code is kept.
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('handler ran', flush=True))\n"
        f"sys.argv = ['diffviewer', *{argv!r}]\n"
        "from diffviewer.launcher import main\n"
        "sys.exit(main())\n"
    )
    proc = _python(["-c", code], tmp_path)
    assert proc.stdout.splitlines()[-1] == "handler ran"
    if argv[0] == "config":
        assert proc.returncode == 0
        assert proc.stdout[: -len("handler ran\n")] == to_toml(SubtractionConfig())
    else:
        assert proc.returncode == 2 and "science file missing.fits does not exist" in proc.stderr


def test_a_profiled_command_ends_normally_so_the_profile_is_written(tmp_path: Path) -> None:
    # cProfile writes its figures after the command returns: no quick exit under it.
    profile = tmp_path / "config.prof"
    proc = _python(["-m", "cProfile", "-o", str(profile), "-m", "diffviewer", "config"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert profile.stat().st_size > 0


def test_minimal_compressed_products_hold_the_same_difference(
    demo_run: Path, tmp_path, capsys
) -> None:
    out = tmp_path / "minimal"
    sci, tmpl = demo_pair()
    argv = ["run", str(sci), str(tmpl), "--out", str(out)]
    argv += ["--set", "kernel.spatial_order=1", "--products", "minimal", "--compress"]
    assert cli.main(argv) == 0
    names = ["difference.fits", "diasources.ecsv", "config.toml", "metadata.json"]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["outputs"]["products"] == "minimal" and meta["outputs"]["files"] == names
    # the closing line counts detections as metadata.json does (it counted sky sources too)
    found = meta["detection"]["n_sources"]
    assert f"({found} DIA sources, 100 sky sources)" in capsys.readouterr().out
    with fits.open(out / "difference.fits") as hdus:
        assert isinstance(hdus["MASK"], fits.CompImageHDU)
    # Lossless: the compressed file reads back as the full run's uncompressed one.
    small, full = (read_exposure(d / "difference.fits") for d in (out, demo_run))
    for plane in ("image", "mask", "variance"):
        assert np.array_equal(getattr(small, plane), getattr(full, plane)), plane


def test_threads_lent_change_no_output(demo_run: Path, tmp_path) -> None:
    # The module's run is on one thread; three threads lent to the tiles and kernel
    # stamps give the same files' pixels and catalog.
    out = tmp_path / "three"
    sci, tmpl = demo_pair()
    argv = ["run", str(sci), str(tmpl), "--out", str(out), "--quiet", "--threads", "3"]
    assert cli.main([*argv, "--set", "kernel.spatial_order=1"]) == 0
    for name in ("difference.fits", "score.fits", "matched_template.fits"):
        one, lent = (read_exposure(d / name) for d in (out, demo_run))
        for plane in ("image", "mask", "variance"):
            assert np.array_equal(getattr(one, plane), getattr(lent, plane)), (name, plane)
    one, lent = (Table.read(d / "diasources.ecsv") for d in (out, demo_run))
    assert len(one) == len(lent) > 0
    assert np.array_equal(one["psf_flux"], lent["psf_flux"], equal_nan=True)


@pytest.mark.parametrize(
    ("flags", "cores", "lent", "heaps"),
    [
        ([], 2, 2, ["one"]),  # two cores: a second thread, from one heap
        ([], 1, 1, ["one"]),  # one core: nothing to lend
        (["--threads", "1"], 2, 1, []),
        (["--threads", "3"], 2, 3, ["one"]),
    ],
)
def test_threads_are_lent_by_default_on_two_cores_from_one_heap(
    flags: list[str],
    cores: int,
    lent: int,
    heaps: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("diffviewer.engine.lent.usable_cores", lambda: cores)
    asked: list[str] = []
    monkeypatch.setattr("diffviewer.allocator.one_heap", lambda: asked.append("one"))
    counts: list[int] = []
    lend = cli._lent_threads

    def counted(count: int) -> contextlib.AbstractContextManager[object]:
        counts.append(count)
        return lend(count)

    monkeypatch.setattr(cli, "_lent_threads", counted)
    sci, tmpl = demo_pair()
    argv = ["run", str(sci), str(tmpl), "--out", str(tmp_path / "out"), "--quiet", *flags]
    assert cli.main([*argv, "--set", "kernel.spatial_order=1"]) == 0
    assert counts == [lent] and asked == heaps


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_a_bad_thread_count_is_named(value: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(["run", "a.fits", "b.fits", "--out", "o", "--threads", value])
    assert stop.value.code == 2
    assert f"--threads must be a whole number >= 1, not '{value}'" in capsys.readouterr().err


def test_the_kernel_star_table_documents_its_columns(demo_run: Path) -> None:
    # Every column of kernel_candidates.ecsv carries a unit and a description (issue 12:
    # every number the tool prints is one an expert can quote); the per-star kernel sum
    # says what it measures and how it relates to the solution's.
    table = Table.read(demo_run / "kernel_candidates.ecsv")
    assert all(table[name].description for name in table.colnames)
    assert all(table[name].unit is not None for name in table.colnames)
    assert "matched-filter" in table["kernel_sum"].description
    assert "solution's sum" in table["kernel_sum"].description
    assert str(table["x"].unit) == "pix" and str(table["flux_sci"].unit) == "ct"


def test_outputs_carry_their_own_photometry(tmp_path: Path) -> None:
    # The matched template is on the science's photometric scale (it kept the template's
    # MAGZP), the score is S/N (it kept the difference's MAGZP, BUNIT and GAIN), and a
    # reader takes BUNIT from the HDU it shows (only the empty primary had it). Also the
    # catalog's sign survives the FITS table (an int8 column was written as a logical).
    from astropy.table import Table

    from diffviewer.synthetic import make_pair

    pair = make_pair((128, 128), 60, seed=2)
    for name, exposure, zero_point in (("s", pair.science, 30.0), ("t", pair.template, 29.0)):
        header = exposure.wcs.to_header()
        header["MAGZP"], header["BUNIT"] = zero_point, "adu"
        fits.writeto(tmp_path / f"{name}.fits", np.asarray(exposure.image, np.float32), header)
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "s.fits"), str(tmp_path / "t.fits"), "--out", str(out)]
    assert cli.main([*args, "--quiet"]) == 0
    for name, zero_point, unit in (
        ("difference", 30.0, "adu"),
        ("matched_template", 30.0, "adu"),
        ("score", None, None),
    ):
        with fits.open(out / f"{name}.fits") as hdul:
            assert hdul[0].header.get("MAGZP") == zero_point, name
            assert hdul["IMAGE"].header.get("BUNIT") == unit, name
            if unit:
                assert hdul["VARIANCE"].header["BUNIT"] == f"({unit})**2"
    assert "GAIN" not in fits.getheader(out / "score.fits")
    ecsv, table = Table.read(out / "diasources.ecsv"), Table.read(out / "diasources.fits")
    np.testing.assert_array_equal(table["sign"], ecsv["sign"])


def test_what_reading_warned_of_is_in_the_metadata(tmp_path: Path, capsys) -> None:
    # A science clipped at a flat top without a SATURATE card: the reader takes the
    # level from the data and says so. That note reached the terminal only; the
    # metadata's warnings (and a batch summary's n_warnings) left it out.
    from diffviewer.synthetic import make_pair

    pair = make_pair((128, 128), 60, seed=2)
    science = np.asarray(pair.science.image, np.float32)
    science = np.minimum(science, np.float32(np.percentile(science, 99.9)))
    for name, image in (("s", science), ("t", np.asarray(pair.template.image, np.float32))):
        fits.writeto(tmp_path / f"{name}.fits", image)
    out = tmp_path / "out"
    args = ["run", str(tmp_path / "s.fits"), str(tmp_path / "t.fits"), "--out", str(out)]
    assert cli.main([*args, "--quiet"]) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "no SATURATE card" in line]
    meta = json.loads((out / "metadata.json").read_text())
    assert len(said) == 1 and said[0] == f"warning: {meta['warnings'][-1]}"
    assert meta["inputs"]["science"]["saturation"]["from"] == "flat top"


def test_default_pair_names_survive_editing_the_list(tmp_path: Path) -> None:
    # an unnamed pair is named by its files, not by its line: commenting a line out (or
    # removing, reordering) renames no other pair, so no pair is run into another's folder
    rows = ["science,template", "sci.fits,t1.fits", "sci.fits,t2.fits", "sci.fits,t3.fits"]
    listed = tmp_path / "list.csv"
    listed.write_text("\n".join(rows) + "\n")
    before = {tmpl: name for _, tmpl, name in read_pairs_csv(listed)}
    listed.write_text("\n".join([rows[0], "# " + rows[1], rows[3], rows[2]]) + "\n")
    after = {tmpl: name for _, tmpl, name in read_pairs_csv(listed)}
    assert after == {t: n for t, n in before.items() if not t.endswith("t1.fits")}
    assert len(set(before.values())) == 3
    assert before[str(tmp_path / "t2.fits")].startswith("sci__t2__")
    # the GUI gives the pair the same folder
    pair = model.Pair(str(tmp_path / "sci.fits"), str(tmp_path / "t2.fits"))
    assert model.default_output_dir(pair, tmp_path).name == before[str(tmp_path / "t2.fits")]
    # the same pair twice has one name: refused, naming both lines
    listed.write_text("\n".join([*rows, "sci.fits,t2.fits"]) + "\n")
    with pytest.raises(InputError, match="line 5: the same pair as line 3"):
        read_pairs_csv(listed)


def test_set_values_mend_a_config_file_before_it_is_checked(tmp_path: Path) -> None:
    # A file whose values do not go together (no score, detection on it) was refused
    # before the --set that mends it was read: the message asked for what was given.
    path = tmp_path / "crossfield.toml"
    path.write_text('[score]\nmethod = "none"\n[detection]\ndetect_on = "score"\n')
    with pytest.raises(ConfigError, match=r"crossfield\.toml: .*detect_on"):
        cli.effective_config(str(path), [])
    mended = cli.effective_config(str(path), ["detection.detect_on=difference"])
    assert (mended.score.method, mended.detection.detect_on) == ("none", "difference")
    with pytest.raises(ConfigError, match=r"crossfield\.toml with the --set values"):
        cli.effective_config(str(path), ["kernel.spatial_order=1"])
    # a --set naming no field is the --set's mistake, not the file's
    with pytest.raises(ConfigError, match=r"^unknown config section \[kernal\]"):
        cli.effective_config(str(path), ["kernal.spatial_order=1"])


def test_an_empty_config_option_is_refused(capsys) -> None:
    # `--config "$CFG"` with CFG unset ran on the defaults, exit 0.
    assert cli.main(["config", "--config", ""]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--config is empty" in err


def test_a_batch_refuses_a_bad_star_list_before_any_pair_runs(tmp_path: Path, capsys) -> None:
    # Each pair failed on it in turn, after its images were read; the list is the
    # config's, one for every pair: said once, nothing made.
    sci, tmpl = demo_pair()
    (tmp_path / "pairs.csv").write_text(f"science,template\n{sci},{tmpl}\n{sci},{tmpl}\n")
    (tmp_path / "stars.csv").write_text("x,y\n")
    args = ["batch", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "o")]
    setting = ["--set", f'candidates.source_list="{tmp_path / "stars.csv"}"']
    assert cli.main([*args, *setting]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "stars.csv: 0 stars" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.csv", "stars.csv"]


def test_config_values_are_named_as_written_from_a_file_and_from_set(
    tmp_path: Path, capsys
) -> None:
    # A file's 1e400 was "inf" (as tomllib read it), a --set true "True".
    path = tmp_path / "big.toml"
    path.write_text("[kernel]\nmax_kernel_sum_sigma = 1e400\n")
    assert cli.main(["config", "--config", str(path)]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: config file {path}: kernel.max_kernel_sum_sigma = 1e400 overflows a float "
        "(the largest is about 1.8e308); give a finite number"
    )
    given = ["config", "--config", str(path), "--set", "kernel.max_kernel_sum_sigma=3"]
    assert cli.main([*given, "--set", "kernel.wing=yes"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err.endswith(': kernel.wing = "yes": expected true or false'), err
    assert cli.main(["config", "--set", "kernel.spatial_order=true"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err == "error: kernel.spatial_order = true: expected a whole number"


def test_a_value_that_underflows_is_refused_as_typed(tmp_path: Path, capsys) -> None:
    # 1e-400 was read as 0.0: a run with no grid tolerance, or a refusal of "0.0"
    path = tmp_path / "small.toml"
    path.write_text("[warp]\ngrid_tolerance = 1e-400\n")
    underflows = (
        "underflows a float (below about 2.2e-308 a float loses digits, and below about "
        "4.9e-324 it is 0.0); give 0, or a number of magnitude at least 2.2e-308"
    )
    assert cli.main(["config", "--config", str(path)]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err == f"error: config file {path}: warp.grid_tolerance = 1e-400 {underflows}"
    assert cli.main(["config", "--set", "kernel.max_kernel_sum_sigma=1e-400"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip()
    assert err == f"error: kernel.max_kernel_sum_sigma = 1e-400 {underflows}"


def test_a_star_list_all_rejected_is_named_before_the_kernels_warnings(
    tmp_path: Path, capsys
) -> None:
    # Five stars on the demo image, two at its edges, three on blank sky: the run went on
    # with warnings that only "0 kernel stamps passed their own fits' cuts".
    stars = tmp_path / "stars.csv"
    stars.write_text("x,y\n3,3\n250,5\n40.5,200.2\n100,30\n200,100\n")
    sci, tmpl = demo_pair()
    out = tmp_path / "out"
    args = ["run", str(sci), str(tmpl), "--out", str(out), "--quiet"]
    assert cli.main([*args, "--set", f'candidates.source_list="{stars}"']) == cli.EXIT_OK
    warnings = [line for line in capsys.readouterr().err.splitlines() if line]
    assert warnings[0].startswith(
        f"warning: candidates.source_list {stars}: all 5 of its stars on the science image "
        "were rejected as kernel stars (edge: 2, S/N window: 3), so the kernel is not fitted"
    ), warnings
    assert "only 0 kernel stamps" in warnings[1], warnings
    saved = json.loads((out / "metadata.json").read_text())["warnings"]
    assert saved[0] == warnings[0].removeprefix("warning: ")


#: Counts the opens of one file (an audit hook: every ``open`` of it, by astropy or not)
#: while ``diffviewer run`` runs, against those of one read of it.
COUNT_OPENS = """
import os, sys
from pathlib import Path
stars = Path(sys.argv[1]).resolve()
opens = []
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        if Path(os.fsdecode(args[0])).resolve() == stars:
            opens.append(args[0])
sys.addaudithook(hook)
from diffviewer.star_list import read_star_list
read_star_list(stars)
one = len(opens)
from diffviewer import cli
code = cli.main(["run", *sys.argv[2:], "--set", f'candidates.source_list="{stars}"'])
print("OPENS", one, len(opens) - one, code)
"""


def test_run_reads_the_star_list_once(tmp_path: Path) -> None:
    # It was read before the images, to refuse a bad list at once, then again by the engine.
    stars = tmp_path / "stars.csv"
    stars.write_text("x,y\n60,181\n131,41\n200,100\n")
    sci, tmpl = demo_pair()
    args = [str(sci), str(tmpl), "--out", str(tmp_path / "out"), "--quiet"]
    proc = _python(["-c", COUNT_OPENS, str(stars), *args], tmp_path)
    last = proc.stdout.strip().splitlines()[-1]
    assert last == "OPENS 1 1 0", (last, proc.stderr)
