"""The job runner: results, errors, cancellation and superseded runs, by signal order."""

from __future__ import annotations

import threading

import pytest
from PyQt6.QtCore import QCoreApplication

from diffviewer.engine.progress import CancelToken, ProgressCallback, Reporter
from diffviewer.errors import InputError
from diffviewer.gui.worker import JobRunner, error_report

pytest.importorskip("pytestqt")


def _waiting_job(release: threading.Event, value: object):
    """A job that reports progress until released or cancelled, through the engine's Reporter."""

    def job(progress: ProgressCallback, token: CancelToken) -> object:
        rep = Reporter(progress, token)
        with rep.step("waiting", 0.0, 1.0):
            while not release.wait(0.01):
                rep.update(0.5)
        return value

    return job


def test_a_job_result_arrives_with_its_lane_and_id(qtbot) -> None:
    runner = JobRunner()
    with qtbot.waitSignal(runner.finished, timeout=5000) as blocker:
        job_id = runner.submit("run", lambda progress, token: 42)
    assert blocker.args == ["run", job_id, 42]
    assert not runner.is_busy("run")
    qtbot.waitUntil(lambda: runner.active_threads() == 0, timeout=5000)


def test_errors_become_reports_expected_or_not(qtbot) -> None:
    runner = JobRunner()

    def bad_input(progress, token):
        raise InputError("science.fits: no such file; check the path")

    def bug(progress, token):
        raise ZeroDivisionError("division by zero")

    with qtbot.waitSignal(runner.failed, timeout=5000) as blocker:
        runner.submit("run", bad_input)
    report = blocker.args[2]
    assert report.expected and report.title == "InputError"
    assert "science.fits" in report.message and "Traceback" in report.details
    with qtbot.waitSignal(runner.failed, timeout=5000) as blocker:
        runner.submit("run", bug)
    report = blocker.args[2]
    assert not report.expected and "ZeroDivisionError" in report.message
    qtbot.waitUntil(lambda: runner.active_threads() == 0, timeout=5000)


def test_cancel_makes_the_lane_idle_at_once_and_drops_the_result(qtbot) -> None:
    runner = JobRunner()
    release = threading.Event()
    finished: list[object] = []
    runner.finished.connect(lambda *a: finished.append(a))
    with qtbot.waitSignal(runner.progress, timeout=5000):
        runner.submit("run", _waiting_job(release, "late"))
    with qtbot.waitSignal(runner.cancelled, timeout=1000):
        runner.cancel("run")
    assert not runner.is_busy("run")  # idle before the thread has even noticed
    # the thread stops at the Reporter's next check (every 10 ms here), never reaching "late"
    qtbot.waitUntil(lambda: runner.active_threads() == 0, timeout=2000)
    assert finished == []


def test_a_superseded_job_never_signals(qtbot) -> None:
    runner = JobRunner()
    first_release, second_release = threading.Event(), threading.Event()
    results: list[tuple] = []
    runner.finished.connect(lambda *a: results.append(a))
    runner.cancelled.connect(lambda *a: results.append(("cancelled", *a)))
    old = runner.submit("run", _waiting_job(first_release, "old"))
    new = runner.submit("run", _waiting_job(second_release, "new"))
    first_release.set()  # the old job may even finish: its result must be dropped
    with qtbot.waitSignal(runner.finished, timeout=5000):
        second_release.set()
    assert results == [("run", new, "new")]
    assert old != new
    qtbot.waitUntil(lambda: runner.active_threads() == 0, timeout=5000)


def test_lanes_are_independent(qtbot) -> None:
    runner = JobRunner()
    release = threading.Event()
    runner.submit("run", _waiting_job(release, "run"))
    with qtbot.waitSignal(runner.finished, timeout=5000) as blocker:
        runner.submit("levels:science", lambda p, t: (0.0, 1.0))
    assert blocker.args[0] == "levels:science" and runner.is_busy("run")
    release.set()
    qtbot.waitUntil(lambda: not runner.is_busy("run"), timeout=5000)
    runner.shutdown()
    qtbot.waitUntil(lambda: runner.active_threads() == 0, timeout=5000)


def test_error_report_of_a_diffviewer_error_keeps_the_message() -> None:
    report = error_report(InputError("x.fits has no extension [SCI]"))
    assert report.message == "x.fits has no extension [SCI]" and report.expected


def _until_cancelled(ended: threading.Event):
    """A job that runs until its token is cancelled, then records that it has ended."""

    def job(progress: ProgressCallback, token: CancelToken) -> object:
        while not token.cancelled:
            ended.wait(0.01)
        ended.set()
        return "late"

    return job


def test_shutdown_waits_until_every_thread_has_ended_and_drops_late_results(qtbot) -> None:
    runner = JobRunner()
    ended = [threading.Event(), threading.Event()]
    results: list[tuple] = []
    runner.finished.connect(lambda *a: results.append(a))
    runner.cancelled.connect(lambda *a: results.append(("cancelled", *a)))
    with qtbot.waitSignal(runner.started, timeout=5000):
        runner.submit("run", _until_cancelled(ended[0]))
    runner.submit("save", _until_cancelled(ended[1]))
    threads = [r.thread for r in runner._running.values()]
    with qtbot.waitSignal(runner.idle, timeout=1000):
        runner.shutdown()  # blocks: no thread may be left for Qt to destroy while it runs
    assert all(e.is_set() for e in ended) and all(t.isFinished() for t in threads)
    assert runner.active_threads() == 0 and not runner.is_busy("run")
    # the jobs' signals, queued before they ended, are delivered now and dropped
    QCoreApplication.processEvents()
    assert results == []


def test_cancel_all_spares_the_kept_lanes_and_idle_follows_the_last_thread(qtbot) -> None:
    runner = JobRunner()
    run_ended, save_release = threading.Event(), threading.Event()
    runner.submit("run", _until_cancelled(run_ended))
    runner.submit("save", _waiting_job(save_release, ["saved.fits"]))
    runner.cancel_all(keep=("save",))
    assert not runner.is_busy("run") and runner.is_busy("save")
    qtbot.waitUntil(lambda: runner.active_threads() == 1, timeout=5000)  # the run ended
    idle: list[bool] = []
    runner.idle.connect(lambda: idle.append(True))
    with qtbot.waitSignal(runner.finished, timeout=5000) as blocker:
        save_release.set()
    assert blocker.args[0] == "save" and blocker.args[2] == ["saved.fits"]  # not cancelled
    qtbot.waitUntil(lambda: runner.active_threads() == 0, timeout=5000)
    assert idle == [True]


def test_workers_are_destroyed_in_the_gui_thread(qtbot) -> None:
    # Destroyed in its own thread, a worker disconnected from its Python-made QThread
    # while holding a Qt connection lock and waited there for the interpreter, which the
    # GUI thread could hold while waiting for a lock of the same pool: the window froze
    # (seen once, a save failing as the lane's thread ended). Every worker must be
    # destroyed in the GUI thread, whichever way its job ends.
    runner = JobRunner()
    where: list[int] = []

    def watch(job_id: int) -> None:
        worker = runner._running[job_id].worker
        worker.destroyed.connect(lambda *_: where.append(threading.get_ident()))

    def failing(progress, token):
        raise OSError("disk full")

    for n, job in enumerate((lambda progress, token: 1, failing), start=1):
        with qtbot.waitSignal(runner.idle, timeout=5000):
            watch(runner.submit("save", job))
        qtbot.waitUntil(lambda n=n: len(where) == n, timeout=5000)
    watch(runner.submit("run", _waiting_job(threading.Event(), 2)))
    runner.shutdown()  # cancels the job and waits for its thread
    qtbot.waitUntil(lambda: len(where) == 3, timeout=5000)
    assert where == [threading.get_ident()] * 3


def test_jobs_are_lent_threads_until_shutdown(qtbot, monkeypatch) -> None:
    monkeypatch.setattr("diffviewer.gui.worker.default_threads", lambda: 2)
    runner = JobRunner()

    def job(progress, token):
        # What the engine does with them: run its tiles on them, off this thread.
        lent = progress.executor.map(lambda _: threading.current_thread(), range(4))
        return list(lent), threading.current_thread()

    with qtbot.waitSignal(runner.finished, timeout=5000) as blocker:
        runner.submit("run", job)
    lent, caller = blocker.args[2]
    assert all(t.name.startswith("diffviewer-lent") for t in lent) and caller not in lent
    qtbot.waitUntil(lambda: runner.active_threads() == 0, timeout=5000)
    runner.shutdown()
    assert not any(t.is_alive() for t in lent)


def test_on_one_core_jobs_are_lent_no_thread(qtbot, monkeypatch) -> None:
    monkeypatch.setattr("diffviewer.gui.worker.default_threads", lambda: 1)
    runner = JobRunner()
    with qtbot.waitSignal(runner.finished, timeout=5000) as blocker:
        runner.submit("run", lambda progress, token: progress.executor)
    assert blocker.args[2] is None
    qtbot.waitUntil(lambda: runner.active_threads() == 0, timeout=5000)
