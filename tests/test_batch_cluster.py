"""Batches on a running ``dask scheduler`` + ``dask worker``, and signals and leftovers.

The scheduler and the worker are real processes on localhost started from the
``dask`` command of this environment; the SIGTERM test signals a real
``diffviewer batch`` process while its local worker is busy.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from astropy.table import Table

from diffviewer import cli, launcher
from diffviewer.atomic import remove_stale_staging, staging_name, wait_for_running_staging
from diffviewer.batch import BatchOptions, plan_batch, read_summary
from diffviewer.io import demo_pair
from diffviewer.paths import read_pairs_csv
from diffviewer.results import write_pair_verdict
from tests.test_batch import QUICK, make_pairs, quick_config

REPO = Path(__file__).resolve().parents[1]
#: Upper bound of any wait below (s): a hung process fails the test instead of the suite.
PATIENCE_S = 180.0


def _wait_for(condition, what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll ``condition`` until true (no timing is asserted; PATIENCE_S only ends a hang)."""
    end = time.monotonic() + PATIENCE_S
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended ({proc.returncode}) before {what}")
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def _batch_process(pairs: Path, out: Path, workers: int, **popen: object) -> subprocess.Popen:
    """``diffviewer batch`` of ``pairs`` into ``out`` on ``workers`` local workers, quick
    config, as a process of its own (standard output and error kept as text)."""
    command = [sys.executable, "-m", "diffviewer", "batch", str(pairs), "--out", str(out)]
    return subprocess.Popen(
        [*command, "--workers", str(workers), "--quiet", *QUICK],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,  # type: ignore[call-overload]
    )


def _dask(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    """A ``dask`` command of this environment on localhost, importing this tree's
    diffviewer (running in ``cwd``)."""
    dask = Path(sys.executable).with_name("dask")
    if not dask.exists():
        pytest.skip(f"the dask command is not installed beside {sys.executable}")
    return subprocess.Popen(
        [str(dask), *args, "--host", "127.0.0.1", "--no-dashboard"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _worker(info: Path, cwd: Path | None = None) -> subprocess.Popen:
    """One single-thread ``dask worker`` of the scheduler whose file is ``info``."""
    one = ["--nthreads", "1", "--nworkers", "1", "--memory-limit", "0"]
    return _dask("worker", "--scheduler-file", str(info), *one, cwd=cwd)


def _address(info: Path) -> str | None:
    """The address a scheduler file holds; None until it is written whole."""
    try:
        return str(json.loads(info.read_text())["address"])
    except (OSError, ValueError, KeyError):
        return None


@contextlib.contextmanager
def dask_processes(
    folder: Path, cwd: Path | None = None, worker: bool = True
) -> Iterator[tuple[str, subprocess.Popen]]:
    """A ``dask scheduler`` and (``worker``) one single-thread ``dask worker`` on localhost
    (running in ``cwd``); the scheduler's address and process. Its scheduler file is
    ``folder / "scheduler.json"``."""
    info = folder / "scheduler.json"
    procs = [_dask("scheduler", "--port", "0", "--scheduler-file", str(info), cwd=cwd)]
    try:
        _wait_for(lambda: _address(info) is not None, "the scheduler file", procs[0])
        address = _address(info)
        assert address is not None
        if worker:
            procs.append(_worker(info, cwd))
            from dask.distributed import Client

            with Client(address, timeout="60s") as client:
                client.wait_for_workers(1, timeout=PATIENCE_S)
        yield address, procs[0]
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=60)


@pytest.mark.slow
def test_a_running_scheduler_and_worker_run_the_batch(tmp_path: Path) -> None:
    pairs = make_pairs(tmp_path, names=("good",), bad=True)
    out = tmp_path / "out"
    err = io.StringIO()
    with dask_processes(tmp_path) as (address, _), contextlib.redirect_stderr(err):
        code = cli.main(["batch", str(pairs), "--out", str(out), "--scheduler", address, *QUICK])
    assert code == cli.EXIT_ERROR, err.getvalue()
    rows = {r["name"]: r for r in read_summary(out)}
    assert rows["good"]["status"] == "ok" and rows["good"]["n_good"] > 0
    assert (rows["bad"]["status"], rows["bad"]["error_kind"]) == ("failed", "input")
    assert (rows["nocover"]["error_kind"]) == "no_coverage"
    assert (out / "good" / "difference.fits").is_file()


@pytest.mark.slow
def test_a_scheduler_without_workers_is_said_and_its_batch_runs_when_one_joins(
    tmp_path: Path,
) -> None:
    # A rerun against a scheduler restarted without its workers waited in silence.
    pairs = make_pairs(tmp_path, names=("g1",), bad=False)
    out, log = tmp_path / "out", tmp_path / "stderr.txt"
    with dask_processes(tmp_path, worker=False) as (address, _), log.open("w") as stderr:
        command = [sys.executable, "-m", "diffviewer", "batch", str(pairs), "--out", str(out)]
        proc = subprocess.Popen([*command, "--scheduler", address, *QUICK], stderr=stderr)
        worker = None
        try:
            _wait_for(lambda: "has no workers" in log.read_text(), "the note", proc)
            assert not (out / "g1").exists()
            worker = _worker(tmp_path / "scheduler.json")
            assert proc.wait(timeout=PATIENCE_S) == 0, log.read_text()
        finally:
            proc.kill()
            if worker is not None:
                worker.terminate()
                worker.wait(timeout=60)
    said = log.read_text()
    assert f"the dask scheduler at {address} has no workers" in said
    assert f"dask worker {address}" in said and "Traceback" not in said
    assert [r["status"] for r in read_summary(out)] == ["ok"]


@pytest.mark.slow
def test_pairs_a_lost_scheduler_never_ran_are_run_by_the_rerun(tmp_path: Path) -> None:
    names = ("g1", "g2", "g3", "g4", "g5")
    pairs = make_pairs(tmp_path, names=names, bad=False)
    out = tmp_path / "out"
    with dask_processes(tmp_path) as (address, scheduler):
        command = [sys.executable, "-m", "diffviewer", "batch", str(pairs), "--out", str(out)]
        proc = subprocess.Popen(
            [*command, "--scheduler", address, "--quiet", *QUICK],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_for((out / "g1").exists, "the first pair's outputs", proc)
            scheduler.kill()  # SIGKILL: the scheduler is gone mid-run
            _, stderr = proc.communicate(timeout=PATIENCE_S)
        finally:
            proc.kill()
    assert proc.returncode == cli.EXIT_ERROR, stderr  # not 1, an internal error (a bug)
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: lost the dask scheduler at {address}"), stderr
    assert "had not come back" in last and "rerun the same command" in last
    assert "internal" not in stderr and "--workers" not in stderr, stderr
    assert "Traceback" not in stderr, stderr
    rows = read_summary(out)
    # only finished pairs are listed, none as failed (the worker, still running after the
    # batch ended, may land one more): the rerun runs every pair whose outputs are missing
    done = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert set(rows["name"]) <= set(done) and set(rows["status"]) == {"ok"}
    options = BatchOptions(out=out, config=quick_config())
    left = [job.name for job in plan_batch(read_pairs_csv(pairs), options).jobs]
    assert left == [n for n in names if n not in done] and left


@pytest.mark.slow
def test_relative_paths_are_the_clients_on_workers_running_elsewhere(
    tmp_path: Path, monkeypatch
) -> None:
    user, elsewhere = tmp_path / "user", tmp_path / "elsewhere"
    user.mkdir(), elsewhere.mkdir()
    make_pairs(user, names=("a",), bad=False)
    monkeypatch.chdir(user)  # the user's folder; the workers run in another
    err = io.StringIO()
    on = ["--quiet", *QUICK]
    with dask_processes(tmp_path, cwd=elsewhere) as (address, _), contextlib.redirect_stderr(err):
        on += ["--scheduler", address]
        assert cli.main(["batch", "pairs.csv", "--out", "out", *on]) == 0, err.getvalue()
        # a star list named relative to the user's folder is read from there
        stars = Table.read("out/a/kernel_candidates.ecsv")[["x", "y"]]
        stars.write("stars.csv", format="ascii.csv")
        listed = ["--set", 'candidates.source_list="stars.csv"']
        code = cli.main(["batch", "pairs.csv", "--out", "listed", *on, *listed])
        assert code == 0, err.getvalue()
        # a config file inside the output folder is an input there, never written over
        config = user / "out" / "a" / "config.toml"
        config.write_text(config.read_text() + "# edited by the user\n")
        edited = config.read_text()
        args = ["batch", "pairs.csv", "--out", "out", "--config", "out/a/config.toml"]
        changed = ["--set", "detection.threshold=8", "--overwrite"]
        assert cli.main([*args, *changed, *on]) == cli.EXIT_ERROR
    assert config.read_text() == edited
    assert f"holds the input file {config}" in err.getvalue()


@pytest.mark.slow
def test_a_verdict_given_while_the_batch_runs_stays_in_its_summary(tmp_path: Path) -> None:
    pairs = make_pairs(tmp_path, names=("g1", "g2", "g3"), bad=False)
    out = tmp_path / "out"
    proc = _batch_process(pairs, out, 1)
    try:
        _wait_for((out / "g1" / "metadata.json").exists, "the first pair's outputs", proc)
        write_pair_verdict(out / "g1", "bad", "ringing")  # the review window, meanwhile
        assert (out / "g3").exists() is False, "the batch ended before the verdict"
        _, stderr = proc.communicate(timeout=PATIENCE_S)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    rows = {r["name"]: r for r in read_summary(out)}
    assert (rows["g1"]["verdict"], rows["g1"]["comment"]) == ("bad", "ringing")


@pytest.mark.slow
def test_sigterm_stops_a_batch_and_leaves_nothing_hidden(tmp_path: Path) -> None:
    pairs = make_pairs(tmp_path, names=("g1", "g2", "g3", "g4"), bad=False)
    out = tmp_path / "out"
    proc = _batch_process(pairs, out, 1)
    try:
        _wait_for((out / "g1").exists, "the first pair's outputs", proc)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=PATIENCE_S)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1].startswith("error: terminated by SIGTERM"), stderr
    assert not list(out.rglob(".*")), "hidden staging or temporary files left"
    rows = read_summary(out)
    # the summary lists exactly the pairs whose outputs are there, all complete
    done = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert sorted(rows["name"]) == done and "g4" not in done
    assert set(rows["status"]) == {"ok"}
    assert all((out / n / "metadata.json").is_file() for n in done)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP])
def test_a_terminals_signal_to_the_whole_group_is_one_line(tmp_path: Path, sig) -> None:
    """Ctrl-C and a hang-up reach every process of a terminal's group (workers and
    multiprocessing's resource tracker included): the batch says it stopped, once."""
    pairs = make_pairs(tmp_path, names=("g1", "g2", "g3", "g4"), bad=False)
    out = tmp_path / "out"
    proc = _batch_process(pairs, out, 2, start_new_session=True)  # a group: a terminal's job
    try:
        _wait_for((out / "g1").exists, "the first pair's outputs", proc)
        os.killpg(proc.pid, sig)
        _, stderr = proc.communicate(timeout=PATIENCE_S)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + sig, stderr
    # a KeyboardInterrupt traceback a worker (SIGINT), a KeyError a worker (SIGHUP)
    assert "Traceback" not in stderr and "resource_tracker" not in stderr, stderr
    assert stderr.strip().splitlines()[-1].startswith("error: "), stderr
    assert set(read_summary(out)["status"]) == {"ok"}


def test_a_staging_folder_of_a_killed_process_is_removed_by_the_next_run(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    stale = tmp_path / staging_name("pair").replace(f"-{os.getpid()}-", f"-{dead_pid}-")
    alive = tmp_path / staging_name("pair")  # this process: a run in progress
    other = tmp_path / staging_name("other").replace(f"-{os.getpid()}-", f"-{dead_pid}-")
    for folder in (stale, alive, other):
        folder.mkdir()
        (folder / "difference.fits").write_bytes(b"partial")
    assert remove_stale_staging(tmp_path, "pair") == [stale]
    assert alive.exists() and other.exists()
    assert remove_stale_staging(tmp_path) == [other]


def test_a_pair_still_being_written_is_waited_for_before_the_summary(tmp_path: Path) -> None:
    """The race of an interrupted batch: a worker lands its pair after the client stopped."""
    lands = (
        "import pathlib, sys, time\n"
        "folder = pathlib.Path(sys.argv[1])\n"
        "while not (found := list(folder.glob('.pair.partial-*'))): time.sleep(0.01)\n"
        "time.sleep(0.5)\n"
        "found[0].rename(folder / 'pair')\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", lands, str(tmp_path)])
    try:
        assert wait_for_running_staging(tmp_path, timeout_s=0.0) == []  # nothing to wait for
        staging = tmp_path / staging_name("pair").replace(f"-{os.getpid()}-", f"-{writer.pid}-")
        staging.mkdir()
        # its process still runs after a short wait: reported, left alone
        assert wait_for_running_staging(tmp_path, timeout_s=0.05) == [staging]
        assert wait_for_running_staging(tmp_path, timeout_s=PATIENCE_S) == []
        assert (tmp_path / "pair").is_dir() and not staging.exists()
    finally:
        writer.kill()
        writer.wait()


def test_ctrl_c_during_start_up_is_one_line(monkeypatch, capsys) -> None:
    class Interrupting:
        """An import hook that is Ctrl-C arriving while the command-line module loads."""

        def find_spec(self, name, path=None, target=None):
            if name == "diffviewer.cli":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "diffviewer.cli")
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    assert launcher.main() == 130
    err = capsys.readouterr().err
    assert err == "error: interrupted during start-up; nothing was done\n"


#: Starts the batch's local cluster for two pairs on one allowed core; prints its workers.
ONE_CORE = """
import os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from diffviewer.batch.runner import BatchOptions, dask_client
from diffviewer.batch.task import PairJob
from diffviewer.config import SubtractionConfig
science, template, out = sys.argv[1:4]
jobs = [PairJob(n, science, template, out + n, SubtractionConfig()) for n in "ab"]
with dask_client(BatchOptions(out=out, config=SubtractionConfig()), jobs) as client:
    print(len(client.scheduler_info()["workers"]))
"""


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs CPU affinity and two cores to narrow it to one",
)
def test_the_local_cluster_has_no_more_workers_than_usable_cores(tmp_path: Path) -> None:
    science, template = demo_pair()
    done = subprocess.run(
        [sys.executable, "-c", ONE_CORE, str(science), str(template), f"{tmp_path}/"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=PATIENCE_S,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1"]


#: Asks the batch's local cluster for 8 workers for two pairs on one allowed core; prints
#: its workers (and says on standard error what it started).
EIGHT_ON_ONE_CORE = ONE_CORE.replace(
    "config=SubtractionConfig())", "config=SubtractionConfig(), workers=8)"
)


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs CPU affinity and two cores to narrow it to one",
)
def test_more_workers_than_cores_are_not_started_and_it_is_said(tmp_path: Path) -> None:
    # --workers 64 on 2 cores was accepted in silence: a tiny pair took 155 s, not 5 s
    science, template = demo_pair()
    done = subprocess.run(
        [sys.executable, "-c", EIGHT_ON_ONE_CORE, str(science), str(template), f"{tmp_path}/"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,  # 8 workers on one core start in 15-30 s: the test fails, not hangs
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1"]
    note = "note: --workers 8: starting 1, as many as the cores this process may run on (1)"
    assert done.stderr.startswith(note), done.stderr


def test_the_local_scheduler_leaves_the_dashboards_port_alone(tmp_path: Path) -> None:
    # dask's raw "UserWarning: Port 8787 is already in use. Perhaps you already have a
    # cluster running?" was printed by every batch while another dask ran on the machine
    from diffviewer.batch.runner import dask_client
    from diffviewer.batch.task import PairJob
    from diffviewer.config import SubtractionConfig

    science, template = demo_pair()
    job = PairJob("a", str(science), str(template), str(tmp_path / "a"), SubtractionConfig())
    options = BatchOptions(out=tmp_path, config=SubtractionConfig(), workers=1)
    with contextlib.ExitStack() as stack:
        with contextlib.suppress(OSError):  # in use already: by another dask, as asked
            stack.enter_context(socket.create_server(("127.0.0.1", 8787)))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with dask_client(options, [job]) as client:
                assert len(client.scheduler_info()["workers"]) == 1
    said = [str(w.message) for w in caught]
    assert not [text for text in said if "already in use" in text], said
