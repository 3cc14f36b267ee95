"""Menus, toolbar and keyboard shortcuts of the window (each action calls one part of it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PyQt6.QtGui import QAction, QKeySequence
from PyQt6.QtWidgets import QMenu, QMenuBar, QMessageBox, QToolBar

from diffviewer.gui import batch_review, model, saved
from diffviewer.results import PAIR_VERDICTS

if TYPE_CHECKING:
    from diffviewer.gui.window import MainWindow

#: A key, or several keys for one action (the first is the one menus show).
Shortcut = str | QKeySequence | QKeySequence.StandardKey | tuple[str, ...] | None


def _menu(parent: QMenuBar | QMenu, title: str) -> QMenu:
    made = parent.addMenu(title)
    assert made is not None
    return made


class Menus:
    """Builds the menu bar and toolbar of ``window`` and keeps the actions others enable.

    Parameters
    ----------
    window : MainWindow
        The window the actions act on.
    """

    def __init__(self, window: MainWindow) -> None:
        self.w = window
        w = window
        bar = w.menuBar()
        assert bar is not None

        file_menu = _menu(bar, "&File")
        self.action(
            file_menu, "Open pair…", w.opener.open_pair_dialog, QKeySequence.StandardKey.Open
        )
        self.action(file_menu, "Open multi-extension file…", w.opener.open_mef_dialog)
        self.action(file_menu, "Open pairs list (CSV)…", w.opener.open_pairs_dialog)
        self.action(file_menu, "Planes files of this pair…", w.opener.planes_dialog)
        self.action(file_menu, "Open results…", lambda: saved.open_saved_dialog(w))
        self.action(file_menu, "Open batch…", lambda: batch_review.open_batch_dialog(w))
        file_menu.addMenu(w.opener.recent_menu)
        self.next_action = self.action(file_menu, "Next pair", w.next_pair, "Ctrl+Right")
        self.prev_action = self.action(file_menu, "Previous pair", w.previous_pair, "Ctrl+Left")
        file_menu.addSeparator()
        self.save_action = self.action(
            file_menu,
            "Save all outputs…",
            w.saver.save_outputs_dialog,
            QKeySequence.StandardKey.Save,
        )
        self.action(file_menu, "Save config…", w.saver.save_config_dialog)
        self.action(file_menu, "Load config…", w.saver.load_config_dialog)
        self.action(file_menu, "Save verdicts", w.review.save_verdicts)
        self.action(file_menu, "Export catalog with verdicts…", w.review.export_catalog_dialog)
        self.action(file_menu, "Save PNG of a view or panel…", w.saver.save_png_dialog)
        file_menu.addSeparator()
        # Ctrl+Q on every platform (the standard key is none on some, e.g. offscreen)
        self.action(file_menu, "Quit", w.close, "Ctrl+Q")

        run_menu = _menu(bar, "&Run")
        self.run_action = self.action(run_menu, "Run", w.run, "Ctrl+R")
        self.cancel_action = self.action(run_menu, "Cancel", w.cancel, "Esc")
        run_menu.addSeparator()
        # the A/B tab's baseline: kept until released or another pair is opened
        self.keep_action = self.action(
            run_menu, "Keep this run as A", lambda: w.runs.keep("B"), "Ctrl+Shift+A"
        )
        self.release_action = self.action(run_menu, "Release A", w.runs.release)

        area = w.area
        view_menu = _menu(bar, "&View")
        self.action(view_menu, "Grid", lambda: area.set_mode("grid"), "Ctrl+1")
        self.action(view_menu, "Tabs", lambda: area.set_mode("tabs"), "Ctrl+2")
        self.action(view_menu, "Blink panel", lambda: area.set_mode("blink"), "Ctrl+3")
        self.action(view_menu, "Zoom to fit", area.zoom_fit, "Ctrl+0")
        self.action(view_menu, "Zoom 1:1", lambda: area.set_zoom(1.0), "1")
        zoom_in = ("Ctrl+=", "Ctrl++")  # Ctrl++: what other viewers use, and the keypad's +
        self.action(view_menu, "Zoom in", lambda: area.set_zoom(2 * area.zoom()), zoom_in)
        self.action(view_menu, "Zoom out", lambda: area.set_zoom(area.zoom() / 2), "Ctrl+-")
        self.action(view_menu, "Zoom on the selected source", w.review.zoom_on_source, "Z")
        view_menu.addSeparator()
        self.action(view_menu, "Blink: next frame", self._blink_step, "K")
        self.blink_action = self.action(
            view_menu, "Blink on/off", area.toggle_blink, "Ctrl+K", checkable=True
        )
        area.blinking.connect(self.blink_action.setChecked)
        self.action(
            view_menu,
            "Spare cell: variance / mask",
            lambda: area.set_spare_view("mask" if area.spare_view() == "variance" else "variance"),
            "M",
        )
        self.cand_action = self.action(
            view_menu, "Kernel sources", w.refresh_overlays, checkable=True
        )
        self.dia_action = self.action(view_menu, "DIA sources", w.refresh_overlays, checkable=True)
        self.cand_action.setChecked(True)
        self.dia_action.setChecked(True)
        view_menu.addSeparator()
        for dock in w.docks.values():
            view_menu.addAction(dock.toggleViewAction())

        verdict_menu = _menu(bar, "V&erdict")
        for key, label in model.VERDICT_KEYS.items():
            self.action(
                verdict_menu,
                f"{label.capitalize()} ({key})",
                lambda _=False, lab=label: w.set_verdict(lab),
                key,
            )
        verdict_menu.addSeparator()
        for verdict in PAIR_VERDICTS:
            self.action(
                verdict_menu,
                f"Pair: {verdict} subtraction",
                lambda _=False, v=verdict: saved.set_pair_verdict(w, v),
            )
        verdict_menu.addSeparator()
        self.advance_action = QAction("Advance to the next source after a verdict", w)
        self.advance_action.setCheckable(True)
        verdict_menu.addAction(self.advance_action)
        self.advance_action.setChecked(True)
        catalog = w.review.catalog
        self.action(verdict_menu, "Next source", lambda: catalog.step(1), "N")
        self.action(verdict_menu, "Previous source", lambda: catalog.step(-1), "P")

        help_menu = _menu(bar, "&Help")
        self.action(help_menu, "Keys", self.show_keys, "F1")

        tools = QToolBar("Run")
        tools.setObjectName("toolbar_run")
        tools.addAction(self.run_action)
        tools.addAction(self.cancel_action)
        tools.addSeparator()
        tools.addAction(self.prev_action)
        tools.addAction(self.next_action)
        tools.addSeparator()
        tools.addAction(self.blink_action)
        w.addToolBar(tools)

    def action(
        self,
        menu: QMenu,
        text: str,
        slot: Any,
        shortcut: Shortcut = None,
        checkable: bool = False,
    ) -> QAction:
        """Add an action to ``menu`` (and to the window, so its shortcut works anywhere)."""
        action = QAction(text, self.w)
        keys = shortcut if isinstance(shortcut, tuple) else (shortcut,)
        action.setShortcuts([QKeySequence(k) for k in keys if k is not None])
        action.setCheckable(checkable)
        action.triggered.connect(slot)
        menu.addAction(action)
        self.w.addAction(action)
        return action

    def key_rows(self) -> list[tuple[str, str]]:
        """Every keyboard shortcut of the window and what it does, in menu order (the
        Help > Keys table and the README's)."""
        rows = []
        for action in self.w.actions():
            key = ", ".join(
                k.toString(QKeySequence.SequenceFormat.PortableText) for k in action.shortcuts()
            )
            if key:
                rows.append((key, action.text().replace("&", "").rstrip("…")))
        return rows

    def show_keys(self) -> None:
        """Show the key table (Help > Keys)."""
        cells = "".join(f"<tr><td><b>{k}</b></td><td>{t}</td></tr>" for k, t in self.key_rows())
        box = QMessageBox(self.w)
        box.setWindowTitle("Keys")
        box.setText(f"<table cellspacing='4'>{cells}</table>")
        box.open()

    def _blink_step(self) -> None:
        area = self.w.area
        if area.mode != "blink":
            area.set_mode("blink")
        else:
            area.step_blink()
