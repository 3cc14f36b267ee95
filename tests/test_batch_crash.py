"""Processes killed outright (SIGKILL) while output folders are put in place.

A small ``sitecustomize`` module, put first on the ``PYTHONPATH`` of a real subprocess
(and of the dask workers it starts), SIGKILLs that process group at a chosen moment: the
N-th rename that puts a folder in place or aside. What the killed process leaves, and
what the next run makes of it, is then checked on disk.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from diffviewer.atomic import remove_stale_staging
from diffviewer.batch import read_summary
from diffviewer.config import apply_overrides
from diffviewer.results import read_metadata
from tests.test_batch import make_pairs, quick_config

REPO = Path(__file__).resolve().parents[1]

#: SIGKILLs the process group after the N-th rename of a whole staging or output folder
#: (``KILL_AT_FOLDER_RENAME=N``), like a node losing power or the OOM killer.
HOOK = """
import os, signal
if os.environ.get("KILL_AT_FOLDER_RENAME"):
    _rename, _count = os.rename, [0]
    def rename(src, dst, *args, **kwargs):
        done = _rename(src, dst, *args, **kwargs)
        names = os.path.basename(os.fspath(src)) + os.path.basename(os.fspath(dst))
        if ".partial-" in names or ".replaced-" in names:
            _count[0] += 1
            if _count[0] == int(os.environ["KILL_AT_FOLDER_RENAME"]):
                os.killpg(os.getpgid(0), signal.SIGKILL)
        return done
    os.rename = rename
if os.environ.get("KILL_READING"):  # a dask worker that opens that file dies, each time
    import builtins, multiprocessing
    _open = builtins.open
    def opening(file, *args, **kwargs):
        worker = multiprocessing.current_process().name.startswith("Dask Worker")
        if worker and os.environ["KILL_READING"] in str(file):
            os.kill(os.getpid(), signal.SIGKILL)
        return _open(file, *args, **kwargs)
    builtins.open = opening
if os.environ.get("KILL_AFTER_PLACING"):  # a marker file: once only
    _placing = os.rename
    def placing(src, dst, *args, **kwargs):
        done = _placing(src, dst, *args, **kwargs)
        marker = os.environ["KILL_AFTER_PLACING"]
        if ".partial-" in os.path.basename(os.fspath(src)) and not os.path.exists(marker):
            open(marker, "w").write(os.fspath(dst))
            os.kill(os.getpid(), signal.SIGKILL)
        return done
    os.rename = placing
"""


def _killed_at(
    rename: int, hook_dir: Path, command: list[str], **armed: str
) -> subprocess.CompletedProcess:
    """Run ``command`` (Python arguments) in a new session with the hook armed: the
    process group killed at the ``rename``-th folder rename (none for 0), and ``armed``
    set in its environment."""
    hook_dir.mkdir(exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(HOOK)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hook_dir), str(REPO)]),
        "KILL_AT_FOLDER_RENAME": str(rename or ""),
        **armed,
    }
    return subprocess.run(
        [sys.executable, *command],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        start_new_session=True,
        timeout=300,
    )


#: Replaces ``sys.argv[1]`` (holding a.fits, b.fits, verdict.json) by a set of new
#: a.fits and c.fits through the staging folder.
REPLACE = """
import sys
from pathlib import Path
from diffviewer.atomic import staged_output_dir
with staged_output_dir(sys.argv[1], [], True, ["a.fits", "b.fits", "c.fits"]) as stage:
    (stage / "a.fits").write_text("new")
    (stage / "c.fits").write_text("new")
"""


@pytest.mark.parametrize(
    ("rename", "expected"),
    [
        (1, {"a.fits": "old", "b.fits": "old", "verdict.json": "kept"}),
        (2, {"a.fits": "new", "c.fits": "new", "verdict.json": "kept"}),
    ],
)
def test_a_folder_killed_while_replaced_holds_the_old_set_or_the_new_one(
    tmp_path: Path, rename: int, expected: dict[str, str]
) -> None:
    out = tmp_path / "pair"
    out.mkdir()
    for name, text in (("a.fits", "old"), ("b.fits", "old"), ("verdict.json", "kept")):
        (out / name).write_text(text)
    done = _killed_at(rename, tmp_path / "hook", ["-c", REPLACE, str(out)])
    assert done.returncode == -9, done.stderr  # killed between the renames, not finished
    # the next run into the same place: the aside folder back, or dropped
    remove_stale_staging(tmp_path, "pair")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hook", "pair"]
    assert {p.name: p.read_text() for p in out.iterdir()} == expected


@pytest.mark.slow
def test_a_batch_killed_while_overwriting_reruns_the_pair(tmp_path: Path) -> None:
    """The old folder is renamed aside and the batch killed: the rerun runs the pair again."""
    pairs = make_pairs(tmp_path, names=("a",), bad=False)
    out = tmp_path / "out"
    batch = ["-m", "diffviewer", "batch", str(pairs), "--out", str(out), "--workers", "1"]
    old = ["--quiet", "--set", "kernel.spatial_order=0"]
    new = [*old, "--set", "detection.threshold=8"]
    first = subprocess.run([sys.executable, *batch, *old], cwd=REPO, capture_output=True)
    assert first.returncode == 0, first.stderr
    killed = _killed_at(1, tmp_path / "hook", [*batch, *new, "--overwrite"])
    assert killed.returncode == -9, killed.stderr
    assert not (out / "a").exists(), "the kill came after the old folder was renamed aside"
    rerun = subprocess.run(
        [sys.executable, *batch, *new, "--overwrite"], cwd=REPO, capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    rows = {r["name"]: r for r in read_summary(out)}
    assert rows["a"]["status"] == "ok"  # run again, not skipped as complete
    meta = read_metadata(out / "a")
    assert (
        meta["config_digest"] == apply_overrides(quick_config(), ["detection.threshold=8"]).digest()
    )
    assert sorted(p.name for p in out.iterdir()) == ["a", "summary.ecsv", "summary.fits"]
    assert sorted(p.name for p in (out / "a").iterdir()) == sorted(meta["outputs"]["files"])


@pytest.mark.slow
def test_a_pair_whose_worker_died_after_placing_it_is_done(tmp_path: Path) -> None:
    """dask retries the task on a fresh worker: the pair's complete folder is its result."""
    pairs = make_pairs(tmp_path, names=("a",), bad=False)
    out, marker = tmp_path / "out", tmp_path / "killed"
    batch = ["-m", "diffviewer", "batch", str(pairs), "--out", str(out), "--workers", "1"]
    done = _killed_at(
        0,
        tmp_path / "hook",
        [*batch, "--quiet", "--set", "kernel.spatial_order=0"],
        KILL_AFTER_PLACING=str(marker),
    )
    assert marker.read_text() == str(out / "a")  # the worker died right after placing it
    assert done.returncode == 0, done.stderr
    rows = {r["name"]: r for r in read_summary(out)}
    # found complete by the retry, which did not run it: skipped, untimed (it was "ok" in
    # 0.001 s with the new worker's memory)
    assert (rows["a"]["status"], rows["a"]["error"]) == ("skipped", "")
    assert math.isnan(rows["a"]["seconds"]) and math.isnan(rows["a"]["peak_memory"])
    # the worker's death is said (an audit: retried and done, nothing told of it)
    assert "warning: a: the worker running it died 1 time(s)" in done.stderr


@pytest.mark.slow
def test_a_pair_that_kills_its_worker_fails_alone(tmp_path: Path) -> None:
    """One worker, a pair whose every reading kills it, then a healthy pair: the second
    pair runs on the restarted worker (dask had queued it on the dying one, whose death
    counted against it too: it failed without running)."""
    pairs = make_pairs(tmp_path, names=("b",), bad=False)
    shutil.copy(tmp_path / "science.fits", tmp_path / "deadly.fits")
    lines = pairs.read_text().splitlines()
    lines.insert(1, "deadly.fits,template.fits,a")
    pairs.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    batch = ["-m", "diffviewer", "batch", str(pairs), "--out", str(out), "--workers", "1"]
    done = _killed_at(
        0,
        tmp_path / "hook",
        [*batch, "--quiet", "--set", "kernel.spatial_order=0"],
        KILL_READING="deadly.fits",
    )
    assert done.returncode == 1, done.stderr
    rows = {r["name"]: r for r in read_summary(out)}
    assert rows["a"]["status"] == "failed" and rows["a"]["error_kind"] == "internal"
    assert "the worker running it died" in rows["a"]["error"]
    assert "a worker may use" in rows["a"]["error"]  # its limit, and what to do
    assert (rows["b"]["status"], rows["b"]["error"]) == ("ok", "")
    assert "error: a:" in done.stderr and "error: b:" not in done.stderr
