"""The window's robustness: closing during work, one save at a time, inputs never written,
verdicts kept to their pair, and pairs lists that cannot be read."""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

import pytest
from PyQt6.QtCore import QSettings, QTimer

from diffviewer.engine.progress import CancelToken, Reporter
from diffviewer.errors import InputError, OutputError
from diffviewer.gui import model, verdicts
from diffviewer.gui.model import Pair
from diffviewer.gui.window import MainWindow, isolated_window
from diffviewer.io import demo_pair
from diffviewer.synthetic import make_pair
from tests.gui.helpers import RUN_TIMEOUT_MS, finish, run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _copied_demo(folder: Path) -> tuple[Path, Path]:
    """The demo pair copied into ``folder`` (tests that try to write over inputs use copies)."""
    folder.mkdir(parents=True, exist_ok=True)
    sci, tmpl = (Path(shutil.copy(p, folder / p.name)) for p in demo_pair())
    return sci, tmpl


def _runner_until_cancelled():
    """An engine stand-in that reports progress until it is cancelled (as the engine does)."""
    never = threading.Event()

    def runner(science, template, config, progress=None, cancel=None):
        rep = Reporter(progress, cancel)
        with rep.step("waiting", 0.0, 1.0):
            while not never.wait(0.01):
                rep.update(0.5)  # raises Cancelled once the token is set

    return runner


def test_closing_during_a_run_cancels_it_and_closes_when_the_thread_has_ended(
    qtbot, tmp_path: Path
) -> None:
    win = isolated_window(tmp_path)
    qtbot.addWidget(win)
    win.runner = _runner_until_cancelled()
    pair = make_pair((64, 64), n_stars=5, seed=2)
    with qtbot.waitSignal(
        win.jobs.progress, timeout=RUN_TIMEOUT_MS, check_params_cb=lambda *a: a[2] == "waiting"
    ):
        win.open_pair(Pair(pair.science, pair.template, "slow"))
    assert not win.close()  # refused while the thread runs: Qt would abort destroying it
    assert win.isVisible() and not win.isEnabled() and not win.is_running()
    win.run()  # nothing new starts while closing
    assert not win.is_running()
    with qtbot.waitSignal(win.jobs.idle, timeout=RUN_TIMEOUT_MS):
        pass
    assert not win.isVisible() and win.jobs.active_threads() == 0


def test_closing_during_a_save_lets_it_finish_then_closes(qtbot, window: MainWindow) -> None:
    release = threading.Event()

    def slow_save(progress, token: CancelToken) -> list[Path]:
        while not release.wait(0.01):
            pass  # a save is not cancelled on close: it writes all or nothing
        return [Path("/out/difference.fits")]

    window.jobs.submit("save", slow_save)
    assert not window.close()
    assert window.isVisible() and window.is_saving()
    assert "waiting for the save to finish" in window.log_view.toPlainText()
    with qtbot.waitSignal(window.jobs.finished, timeout=RUN_TIMEOUT_MS) as blocker:
        release.set()
    assert blocker.args[0] == "save"  # finished, not cancelled
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=RUN_TIMEOUT_MS)
    assert "saved 1 files to /out" in window.log_view.toPlainText()


def test_a_save_failing_while_closing_keeps_the_window_open(qtbot, window: MainWindow) -> None:
    release = threading.Event()

    def failing_save(progress, token: CancelToken) -> list[Path]:
        while not release.wait(0.01):
            pass
        raise OutputError("cannot write /out/difference.fits (No space left on device)")

    window.jobs.submit("save", failing_save)
    assert not window.close()
    with qtbot.waitSignal(window.jobs.idle, timeout=RUN_TIMEOUT_MS):
        release.set()
    assert window.isVisible() and window.isEnabled()
    assert "Save failed" in window.error_label.text() and "No space" in window.error_label.text()
    assert window.close()  # nothing runs now: closes at once


def test_one_save_at_a_time_and_every_outcome_is_reported(
    qtbot, demo_window: MainWindow, tmp_path: Path
) -> None:
    win = demo_window
    first, second = tmp_path / "first", tmp_path / "second"
    with qtbot.waitSignal(win.jobs.finished, timeout=RUN_TIMEOUT_MS) as blocker:
        win.saver.save_outputs(first)
        assert win.is_saving() and not win.menus.save_action.isEnabled()
        win.saver.save_outputs(second)  # refused: it would supersede the first one silently
        assert "a save is under way" in win.error_label.text() and win.error_box.isVisible()
    assert blocker.args[0] == "save" and not second.exists()
    assert (first / "difference.fits").is_file() and (first / verdicts.VERDICTS_FILE).is_file()
    assert win.menus.save_action.isEnabled()
    assert f"saved {len(blocker.args[2])} files to {first}" in win.log_view.toPlainText()
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    with qtbot.waitSignal(win.jobs.failed, timeout=RUN_TIMEOUT_MS):
        win.saver.save_outputs(blocked)
    assert "Save failed" in win.error_label.text() and str(blocked) in win.error_label.text()
    assert win.menus.save_action.isEnabled()


def test_no_write_of_the_window_replaces_an_input_file(
    qtbot, window: MainWindow, tmp_path: Path
) -> None:
    sci, tmpl = _copied_demo(tmp_path / "in")
    before = sci.read_bytes()
    run(qtbot, window, Pair(str(sci), str(tmpl), "copy"))
    writes = {
        "config": lambda: window.saver.save_config(sci),
        "catalog": lambda: window.review.export_catalog(sci),
        "png": lambda: window.saver.save_png(sci),
    }
    for what, write in writes.items():
        window.hide_error()
        write()
        assert window.error_box.isVisible(), what
        assert "refusing to write" in window.error_label.text(), what
        assert sci.read_bytes() == before, what
    with pytest.raises(OutputError, match="refusing to write"):
        verdicts.save_verdicts(sci, {}, window.pair, "digest")
    assert sci.read_bytes() == before


def test_a_png_is_written_whole_and_atomically(
    qtbot, demo_window: MainWindow, tmp_path: Path
) -> None:
    path = tmp_path / "pngs" / "difference.png"
    path.parent.mkdir()
    demo_window.saver.save_png(path, demo_window.area.panels["difference"])
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    assert [p.name for p in path.parent.iterdir()] == ["difference.png"]  # no temporary left
    demo_window.saver.save_png(tmp_path / "missing" / "x.png")
    assert "Cannot save PNG" in demo_window.error_label.text()


def test_default_output_folders_tell_apart_files_of_the_same_name(tmp_path: Path) -> None:
    root = tmp_path / "out"
    tmpl = str(tmp_path / "tmpl.fits")
    a = model.default_output_dir(Pair(str(tmp_path / "n1" / "sci.fits"), tmpl), root)
    b = model.default_output_dir(Pair(str(tmp_path / "n2" / "sci.fits"), tmpl), root)
    assert a != b and a.parent == root
    assert re.fullmatch(r"sci__tmpl__[0-9a-f]{8}", a.name)
    # the same files written differently (relative folder parts, an extension) map alike
    same = Pair(str(tmp_path / "n1" / ".." / "n1" / "sci.fits"), tmpl)
    assert model.default_output_dir(same, root) == a
    ext = model.default_output_dir(Pair(str(tmp_path / "n1" / "sci.fits[SCI]"), tmpl), root)
    assert ext != a and ext.name.startswith("sci__tmpl__")
    assert model.default_output_dir(Pair("a.fits", "b.fits", "night1"), root) == root / "night1"


@pytest.mark.parametrize("name", ["a/b", "..", ".", "/abs", "a\\b"])
def test_a_pair_name_must_be_a_plain_folder_name(name: str) -> None:
    with pytest.raises(InputError, match="not a plain name"):
        Pair("a.fits", "b.fits", name)


def test_verdicts_of_another_pair_in_the_folder_are_ignored(
    qtbot, window: MainWindow, tmp_path: Path
) -> None:
    sci, tmpl = _copied_demo(tmp_path / "n1")
    other_sci, _ = _copied_demo(tmp_path / "n2")
    run(qtbot, window, Pair(str(sci), str(tmpl), "night"))
    window.select_source(int(window.outcome.result.diasources["id"][0]))
    window.set_verdict("real")
    saved = verdicts.load_verdicts(window.review.verdict_path())
    assert saved.belongs_to(window.pair) and len(saved.verdicts) == 1
    # same name, same template, another science file: one folder, but not its verdicts
    run(qtbot, window, Pair(str(other_sci), str(tmpl), "night"))
    assert window.review.verdicts == {} and window.review.catalog.model.verdicts == {}
    assert "not to this pair: ignored" in window.log_view.toPlainText()
    # a verdict on this pair refuses to write over the other pair's verdicts
    before = window.review.verdict_path().read_bytes()
    window.select_source(int(window.outcome.result.diasources["id"][0]))
    window.set_verdict("bogus")
    assert "holds the verdicts of" in window.error_label.text()
    assert window.review.verdict_path().read_bytes() == before


def _bad_lists(folder: Path) -> dict[str, Path]:
    """Pairs lists that cannot be opened, each for its own reason."""
    sci, tmpl = (str(p) for p in demo_pair())
    lists = {
        "missing": folder / "missing.csv",
        "folder": folder / "a_folder.csv",
        "latin1": folder / "latin1.csv",
        "short": folder / "short.csv",
        "name": folder / "name.csv",
    }
    lists["folder"].mkdir()
    lists["latin1"].write_bytes(b"science,template\nd\xe9j\xe0.fits,b.fits\n")
    lists["short"].write_text("science,template\nonly_one.fits\n")
    lists["name"].write_text(f"science,template,name\n{sci},{tmpl},../escape\n")
    return lists


def test_every_unreadable_pairs_list_becomes_a_message(window: MainWindow, tmp_path: Path) -> None:
    for what, path in _bad_lists(tmp_path).items():
        window.hide_error()
        window.opener.open_pairs_file(str(path))
        assert window.error_box.isVisible(), what
        assert str(path) in window.error_label.text(), what
        assert window.pair is None and not window.is_running() and window.pairs == [], what


def test_launch_with_a_bad_pairs_list_shows_the_message(qtbot, tmp_path: Path) -> None:
    from PyQt6.QtWidgets import QApplication

    from diffviewer.config import SubtractionConfig
    from diffviewer.gui.app import launch

    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, str(tmp_path))
    bad = _bad_lists(tmp_path)["short"]
    seen: list[MainWindow] = []

    def check() -> None:  # after launch's own start-up call has opened the list
        win = next(w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow))
        seen.append(win)
        QApplication.exit(0)

    QTimer.singleShot(0, lambda: QTimer.singleShot(0, check))
    assert launch(None, None, pairs=str(bad), config=SubtractionConfig()) == 0
    win = seen[0]
    assert win.error_box.isVisibleTo(win) and str(bad) in win.error_label.text()
    assert win.pair is None
    win.close()


def test_a_pairs_list_opens_after_a_bad_one(qtbot, window: MainWindow, tmp_path: Path) -> None:
    window.opener.open_pairs_file(str(tmp_path / "missing.csv"))
    sci, tmpl = demo_pair()
    good = tmp_path / "good.csv"
    good.write_text(f"science,template,name\n{sci},{tmpl},first\n")
    finish(qtbot, window, "run", lambda: window.opener.open_pairs_file(str(good)))
    assert window.pair is not None and window.pair.name == "first"
    assert not window.error_box.isVisible()
