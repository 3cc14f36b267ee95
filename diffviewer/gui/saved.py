"""A saved run in the inspector: its outputs read back, nothing re-run.

``diffviewer open OUTDIR`` and File > Open results… read an output folder with
:func:`diffviewer.results.read_saved_run` in the worker and show it as a finished run:
the views, kernel mosaic, stamps, residual histograms, catalog and verdicts are the
saved ones. Run (Ctrl+R) re-runs the pair; the saved run stays as the A/B reference.
A folder holding the difference and its catalog alone (``--products minimal``) cannot
be shown so: its pair is made ready with the folder's config, and Run (or the batch
review's "Run again in the inspector") runs it again from the inputs it records
(:func:`rerun_saved`), writing nothing to the folder.
The verdict on the whole pair (Verdict > Pair: good / bad subtraction) is saved in
the folder beside the per-source verdicts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from PyQt6.QtWidgets import QFileDialog

from diffviewer.batch.summary import SUMMARY_ECSV, set_summary_verdict
from diffviewer.engine.progress import CancelToken, ProgressCallback
from diffviewer.errors import DiffviewerError, InputError
from diffviewer.gui import model
from diffviewer.gui.model import Pair, RunOutcome
from diffviewer.gui.qtapp import application, run_event_loop
from diffviewer.results import (
    RecordedRun,
    difference_only,
    read_metadata,
    read_saved_run,
    recorded_companions,
    recorded_run,
    recorded_specs,
    write_pair_verdict,
)

if TYPE_CHECKING:
    from diffviewer.gui.window import MainWindow


def saved_pair(folder: Path) -> Pair:
    """The pair an output folder was made from (the input specs its metadata records:
    :func:`~diffviewer.results.recorded_specs`), named after it."""
    meta = read_metadata(folder)
    return Pair(*recorded_specs(meta), folder.name, recorded_companions(meta))


def saved_run_job(
    folder: Path, pair: Pair
) -> Callable[[ProgressCallback, CancelToken], RunOutcome]:
    """A worker job that reads a saved run and prepares its display (no engine run).

    Parameters
    ----------
    folder : Path
        The output folder.
    pair : Pair
        The pair it was made from (:func:`saved_pair`).

    Returns
    -------
    callable
        ``job(progress, token) -> RunOutcome``.
    """

    def job(progress: ProgressCallback, token: CancelToken) -> RunOutcome:
        t0 = time.perf_counter()
        progress("read saved run", 0.0)
        run = read_saved_run(folder)
        t1 = time.perf_counter()
        progress("display", 0.8)
        images, levels = model.prepare_display(run)
        t2 = time.perf_counter()
        return RunOutcome(pair, run, images, levels, t2 - t0, {"read": t1 - t0, "display": t2 - t1})

    return job


def open_saved(window: MainWindow, folder: str | Path) -> None:
    """Show the run saved in ``folder`` in ``window`` (its verdicts go to that folder).

    Parameters
    ----------
    window : MainWindow
        The inspector.
    folder : str or Path
        An output folder of ``diffviewer run``, a batch pair or Save all outputs.
    """
    out = Path(folder).expanduser().resolve()
    if difference_only(out):
        _open_difference_only(window, out)
        return
    try:
        pair = saved_pair(out)
    except DiffviewerError as exc:
        window.report_problem(exc, "Cannot open the saved run")
        return
    window.open_pair(pair, run=False)
    window.saved_folder = out
    window.setWindowTitle(f"diffviewer — {pair.label} (saved run {out})")
    window.log(f"open: saved run {out} (Run re-runs the pair; the saved run stays for A/B)")
    window.jobs.submit("run", saved_run_job(out, pair))
    window.update_actions()


def _open_difference_only(window: MainWindow, folder: Path) -> None:
    """Open a folder that holds the difference and its catalog alone (``--products
    minimal``): its pair and config are made ready, and Run runs the pair again."""
    try:
        recorded = recorded_run(folder)
    except DiffviewerError as exc:
        window.report_problem(exc, "Cannot open the saved run")
        return
    prepare_rerun(window, recorded)
    note = (
        f"{folder} holds the difference and its catalog only (--products minimal; the "
        "batch review window shows them): Run (Ctrl+R) runs the pair again from its "
        "inputs with the folder's config.toml, now in the parameters; nothing is written "
        "to the folder (Save all outputs… writes the new run where you choose)"
    )
    window.warnings.set_notes([note, *_changed_note(recorded)])
    window.log(f"open: {note}")


def prepare_rerun(window: MainWindow, recorded: RecordedRun) -> None:
    """Make a saved pair the inspector's again, to be run from the inputs its folder
    records with the folder's config (shown in the parameters); nothing is run, and its
    verdicts go to its folder, as for a saved run opened whole.

    Parameters
    ----------
    window : MainWindow
        The inspector.
    recorded : RecordedRun
        The folder's inputs and config (:func:`~diffviewer.results.recorded_run`).
    """
    pair = Pair(recorded.science, recorded.template, recorded.folder.name, recorded.companions)
    window.open_pair(pair, run=False)
    window.saved_folder = recorded.folder
    window.params.set_config(recorded.config)
    window.setWindowTitle(f"diffviewer — {pair.label} (run again from {recorded.folder})")


def rerun_saved(window: MainWindow, recorded: RecordedRun) -> None:
    """Run a saved pair again in the inspector, in the background, from the inputs its
    folder records and with the folder's own config.

    Nothing is written to the folder: the run is on screen only, as any run of the
    inspector, until the user saves it elsewhere (verdicts go to the folder, as for any
    saved pair).

    Parameters
    ----------
    window : MainWindow
        The inspector.
    recorded : RecordedRun
        The folder's inputs and config (:func:`~diffviewer.results.recorded_run`).
    """
    prepare_rerun(window, recorded)
    window.log(
        f"run again: {recorded.folder.name} from {recorded.science} and {recorded.template} "
        f"with {recorded.folder / 'config.toml'} (config {recorded.config.digest()}); "
        f"nothing is written to {recorded.folder}"
    )
    for note in _changed_note(recorded):
        window.log(f"note: {note}")
    window.runs.run(recorded.config)


def _changed_note(recorded: RecordedRun) -> list[str]:
    """What to know of a re-run whose input changed since the folder's run (none: nothing)."""
    if recorded.changed is None:
        return []
    return [
        f"{recorded.changed} was replaced or changed since the run that wrote "
        f"{recorded.folder}: run again, the pair gives another difference than the folder's"
    ]


def open_saved_dialog(window: MainWindow) -> None:
    """File > Open results…: choose an output folder and show it."""
    folder = QFileDialog.getExistingDirectory(
        window, "Open saved results (an output folder)", str(window.output_root)
    )
    if folder:
        open_saved(window, folder)


def set_pair_verdict(window: MainWindow, verdict: str) -> None:
    """Save a verdict on the whole subtraction (with the comment typed) in its folder, and
    in its batch's summary row when it is a batch's pair (a verdict given here reached
    neither the summary nor the review window before)."""
    folder = window.output_dir()
    if folder is None or window.outcome is None:
        return
    comment = window.review.comment.text().strip()
    try:
        if not (folder / "metadata.json").is_file():
            raise InputError(
                f"{folder} holds no saved run; save all outputs first (the pair verdict is "
                "kept beside them)"
            )
        saved = write_pair_verdict(folder, verdict, comment)
    except DiffviewerError as exc:
        window.report_problem(exc, "Cannot save the pair verdict")
        return
    window.review.comment.clear()
    window.log(f"pair verdict: {saved.verdict} subtraction ({saved.comment or 'no comment'})")
    if (folder.parent / SUMMARY_ECSV).is_file():  # a batch's pair: its summary row too
        try:
            set_summary_verdict(folder.parent, folder.name, saved.verdict, saved.comment)
        except DiffviewerError as exc:  # saved in the folder all the same
            window.log(f"pair verdict: not in the batch's summary: {exc}")
    window.pair_verdict_saved.emit(str(folder), saved.verdict, saved.comment)


def launch_saved(folder: str | Path) -> int:
    """Open the inspector on a saved run (``diffviewer open OUTDIR``).

    Returns
    -------
    int
        The exit code of the event loop.
    """
    from diffviewer.gui.window import MainWindow

    app = application()
    window = MainWindow()
    window.show()
    app.aboutToQuit.connect(window.jobs.shutdown)
    open_saved(window, folder)
    return run_event_loop(app)
