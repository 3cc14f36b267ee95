"""Saving from the window: all outputs (in the worker), the config, PNGs of views and panels.

Every write is atomic and never replaces one of the pair's input files; a failure
becomes a message in the window.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PyQt6.QtCore import QBuffer, QByteArray, QIODevice
from PyQt6.QtWidgets import QFileDialog, QInputDialog, QMessageBox, QWidget

from diffviewer.config import load_toml, to_toml
from diffviewer.errors import ConfigError, DiffviewerError
from diffviewer.gui import model, verdicts
from diffviewer.gui.model import Pair
from diffviewer.gui.worker import ErrorReport
from diffviewer.results import SavedRun

if TYPE_CHECKING:
    from diffviewer.gui.window import MainWindow


class Saver:
    """The window's File > Save actions.

    Parameters
    ----------
    window : MainWindow
        Gives the run on screen, its input files and its message bar.
    """

    def __init__(self, window: MainWindow) -> None:
        self.w = window
        self._saving: dict[int, tuple[Pair, Path]] = {}
        window.jobs.finished.connect(self._on_finished)
        window.jobs.failed.connect(self._on_failed)

    def is_saving(self) -> bool:
        """Whether a save of all outputs is under way (Save is disabled meanwhile)."""
        return self.w.jobs.is_busy("save")

    def save_outputs(self, out_dir: Path, overwrite: bool = False) -> None:
        """Write every output of the run on screen (in the worker), then the verdicts.

        One save at a time: while one runs, Save is disabled and a further request is
        refused with a message, so two saves never write into one folder. The outcome
        always shows: the files written in the log, a failure in the message bar (and a
        failure while the window waits to close keeps it open).
        """
        w = self.w
        if w.outcome is None or w.pair is None or w.closing:
            return
        if self.is_saving():
            message = f"a save is under way; save to {out_dir} once it has finished"
            w.show_report(ErrorReport("Save refused", message, "", True))
            return
        if self._refused_as_saved():
            return
        result, inputs, read_notes = w.outcome.result, w.pair.files, w.outcome.read_notes
        judged, unmatched, pair = dict(w.review.verdicts), w.review.unmatched, w.pair

        def job(progress: Any, token: Any) -> list[Path]:
            from diffviewer.outputs import write_outputs

            written = write_outputs(
                result, out_dir, inputs, overwrite=overwrite, cancel=token, read_notes=read_notes
            )
            file = out_dir / verdicts.VERDICTS_FILE
            verdicts.save_verdicts(file, judged, pair, result.config.digest(), unmatched)
            return [*written, file]

        w.log(f"saving to {out_dir}")
        self._saving[w.jobs.submit("save", job)] = (pair, out_dir)
        w.update_actions()

    def _refused_as_saved(self) -> bool:
        """Refuse (with a message) to save a run read back from its folder: it holds its
        products as files, not all of them in memory; whether it was refused."""
        outcome = self.w.outcome
        if outcome is None or not isinstance(outcome.result, SavedRun):
            return False
        message = (
            f"the run on screen was read back from {outcome.result.folder}: copy that "
            "folder, or Re-run (Ctrl+R) and save the new run"
        )
        self.w.show_report(ErrorReport("Save refused", message, "", True))
        return True

    def save_outputs_dialog(self) -> None:
        """Ask for an output folder and save everything there."""
        w = self.w
        if self._refused_as_saved():
            return
        default = w.output_dir()
        start = w.settings.value("last_output_folder", str(default.parent if default else ""))
        folder = QFileDialog.getExistingDirectory(w, "Output folder", str(start))
        if not folder:
            return
        out = Path(folder)
        w.settings.setValue("last_output_folder", str(out.parent))
        overwrite = False
        if out.exists() and any(out.iterdir()):
            answer = QMessageBox.question(
                w, "Folder not empty", f"{out} is not empty. Write into it anyway?"
            )
            if answer != QMessageBox.StandardButton.Yes:
                return
            overwrite = True
        self.save_outputs(out, overwrite)

    def _on_finished(self, lane: str, job_id: int, value: Any) -> None:
        if lane == "save":
            pair, out_dir = self._saving.pop(job_id, (None, None))
            if pair is not None and out_dir is not None:
                self.w.remember_output_dir(pair, out_dir)  # its verdicts now live there
            self.w.log(f"saved {len(value)} files to {value[0].parent if value else '?'}")
            self.w.message.say(f"saved {len(value)} files", 5000)
            self.w.update_actions()

    def _on_failed(self, lane: str, job_id: int, report: ErrorReport) -> None:
        if lane != "save":
            return
        self._saving.pop(job_id, None)
        w = self.w
        if w.closing:  # the window stays open, so the failure is seen
            w.closing = False
            w.jobs.idle.disconnect(w.close)
            w.setEnabled(True)
            w.message.say("not closed: the save failed", 10000)
        w.show_report(dataclasses.replace(report, title=f"Save failed ({report.title})"))
        w.update_actions()

    def save_config_dialog(self) -> None:
        """Save the edited config as TOML."""
        path = self.w.opener.ask_file(
            "Save config", "last_config_folder", "TOML (*.toml)", "config.toml", save=True
        )
        if path is not None:
            self.save_config(path)

    def save_config(self, path: Path) -> None:
        """Write the parameter panel's config to ``path`` and say whether it is the run's
        on screen or edits not run yet (errors become a message)."""
        from diffviewer.atomic import atomic_write_text

        w = self.w
        try:
            config = w.params.config()
            atomic_write_text(path, to_toml(config), protect=w.input_files())
        except (OSError, DiffviewerError) as exc:
            w.report_problem(exc, "Cannot save config")
            return
        message = f"saved config {config.digest()} to {path}: " + _whose(
            config.digest(), w.outcome.result.config.digest() if w.outcome else None
        )
        w.log(message)
        w.message.say(message, 15000, str(path))  # a long path gives way in its middle

    def load_config_dialog(self) -> None:
        """Load a config TOML into the parameter panel (press Run to apply it)."""
        path = self.w.opener.ask_file("Load config", "last_config_folder", "TOML (*.toml)")
        if path is not None:
            self.load_config(path)

    def load_config(self, path: Path) -> None:
        """Show a config file's values in the parameter panel (errors become a message)."""
        try:
            config = load_toml(path)
        except DiffviewerError as exc:
            self.w.report_problem(exc)
            return
        failed = self.w.params.show_values(config)
        if failed:
            message = f"{path.name}: these fields could not be shown: {'; '.join(failed)}"
            self.w.report_problem(ConfigError(message), "Config loaded in part")

    def png_targets(self) -> dict[str, QWidget]:
        """Widgets that can be saved as PNG, by name."""
        w = self.w
        targets: dict[str, QWidget] = {"whole window": w, "current tab": w.tabs}
        targets.update({f"view: {model.VIEW_TITLES[n]}": p for n, p in w.area.panels.items()})
        targets.update(
            {
                "kernel diagnostics": w.tabs.kernel_panel,
                "residual histograms": w.tabs.residual_panel,
                "A/B comparison": w.tabs.ab_panel,
            }
        )
        for title, dock in w.docks.items():
            widget = dock.widget()
            if widget is not None:
                targets[f"panel: {title}"] = widget
        return targets

    def save_png_dialog(self) -> None:
        """Ask which view or panel to save, and where."""
        targets = self.png_targets()
        name, ok = QInputDialog.getItem(self.w, "Save PNG", "Save:", list(targets), 1, False)
        if not ok:
            return
        stem = name.split(":")[-1].strip().lower().replace(" ", "_")
        path = self.w.opener.ask_file(
            "Save PNG", "last_png_folder", "PNG (*.png)", f"{stem}.png", save=True
        )
        if path is not None:
            self.save_png(path, targets[name])

    def save_png(self, path: Path, widget: QWidget | None = None) -> None:
        """Grab a widget (the current tab when None) into a PNG file, written atomically
        and never over an input file (errors become a message)."""
        from diffviewer.atomic import atomic_write_bytes

        target = widget if widget is not None else self.w.tabs.currentWidget()
        if target is None:
            return
        self.w.tabs.fill(target)  # a diagnostics panel is drawn when first shown
        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        if not target.grab().save(buffer, "PNG"):
            self.w.report_problem(OSError(f"could not encode {path} as PNG"), "Cannot save PNG")
            return
        try:
            atomic_write_bytes(path, data.data(), protect=self.w.input_files())
        except (OSError, DiffviewerError) as exc:
            self.w.report_problem(exc, "Cannot save PNG")


def _whose(saved: str, on_screen: str | None) -> str:
    """Whose config a saved one is: the run on screen's, or edits not run (``on_screen``:
    the digest of the run on screen, None without one)."""
    if on_screen is None:
        return "the parameter panel's (no run on screen)"
    if saved == on_screen:
        return "the config of the run on screen"
    return f"the parameter panel's edits, not run (the run on screen is {on_screen})"
