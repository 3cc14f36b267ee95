"""Regenerate ``screenshots/*.png`` from the real application, offscreen, on real data.

Runs the main window on the bundled demo pair and, when ``../shared/data/goto`` is
present, on the GOTO pair, and saves:

- ``main_window.png`` (demo pair) and ``main_window_goto.png``: the linked views with
  kernel sources and DIA sources, the catalog, the cutouts and the parameters;
- ``kernel_diagnostics.png``: the kernel mosaic, kernel-sum and centroid-shift maps,
  the basis, and one kernel source's stamp panel;
- ``kernel_psfs.png``: the Kernel tab's PSFs page (science, template, the convolved one
  through the kernel, the residual);
- ``kernel_psfs_cell.png``: the same page after a click on a corner cell of its mosaic:
  the PSFs matched through the kernel there;
- ``residual_histograms.png``: the four runDebug residual panels against N(0, 1);
- ``catalog_cutouts.png``: a selected DIA source in the table and its cutouts;
- ``ab_comparison.png``: the first run kept as A and the latest as B after two runs
  with changed parameters, with the parameters that differ;
- ``ab_saved_run_1280x720.png``: a run saved by ``diffviewer run`` opened from its folder,
  run again without the decorrelation, and the saved run kept as A (Keep A), on a
  1280 x 720 screen: its folder's name giving way in A's title (and in the status bar's
  message where the bar is narrow);
- ``mid_run.png``: a run under way, its final difference already on screen (before the
  score, detection and measurement);
- ``main_window_1280x720.png``: the same review on a 1280 x 720 screen;
- ``batch_review.png``: ``diffviewer review`` on a batch of the demo pair run with three
  configs (the summary's QA columns, worst first);
- ``batch_review_minimal.png``: the same batch written with ``--products minimal``, its
  worst pair selected: its difference, DIA sources and catalog shown beside the table.

Usage: ``python scripts/make_screenshots.py [--out screenshots]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyqtgraph as pg  # noqa: E402
from PyQt6.QtCore import QEventLoop, QPointF, Qt, QTimer  # noqa: E402
from PyQt6.QtTest import QTest  # noqa: E402
from PyQt6.QtWidgets import QApplication  # noqa: E402

from diffviewer import cli  # noqa: E402
from diffviewer.batch.summary import row_from_outputs, write_summary  # noqa: E402
from diffviewer.config import SubtractionConfig, apply_overrides  # noqa: E402
from diffviewer.gui.batch_review import ReviewWindow  # noqa: E402
from diffviewer.gui.difference_preview import READ_LANE  # noqa: E402
from diffviewer.gui.model import Pair  # noqa: E402
from diffviewer.gui.qtapp import application  # noqa: E402
from diffviewer.gui.saved import open_saved  # noqa: E402
from diffviewer.gui.window import MainWindow, isolated_window  # noqa: E402
from diffviewer.gui.worker import JobRunner  # noqa: E402
from diffviewer.io import demo_pair  # noqa: E402

GOTO = ROOT.parent / "shared" / "data" / "goto"
SIZE = (1920, 1080)
SMALL = (1280, 720)
RUN_TIMEOUT_MS = 600_000
#: The saved run kept as A: a folder name as long as a night's (it gives way at 1280 x 720).
SAVED_FOLDER = "2026-12-06_night_reference_run_default_config"


def wait_for_lane(jobs: JobRunner, lane: str, start: object) -> None:
    """Call ``start()`` and spin the event loop until the lane's job of ``jobs`` has ended."""
    loop = QEventLoop()

    def done(which: str, *args: object) -> None:
        if which == lane:
            loop.quit()

    for signal in (jobs.finished, jobs.failed, jobs.cancelled):
        signal.connect(done)
    QTimer.singleShot(RUN_TIMEOUT_MS, loop.quit)
    QTimer.singleShot(0, start)  # type: ignore[arg-type]
    loop.exec()
    for signal in (jobs.finished, jobs.failed, jobs.cancelled):
        signal.disconnect(done)


def wait_for(window: MainWindow, lane: str, start: object) -> None:
    """Call ``start()`` and spin the event loop until the window's job of ``lane`` has
    ended; stop if the window reports an error."""
    wait_for_lane(window.jobs, lane, start)
    if window.last_error is not None:
        raise SystemExit(f"run failed: {window.last_error.message}")


def click(canvas: pg.GraphicsView, item: pg.GraphicsObject, x: float, y: float) -> None:
    """Click the left mouse button on ``item`` at (x, y) in its coordinates, as a user does:
    a press and a release on ``canvas``'s viewport, which pyqtgraph turns into the item's
    click."""
    pos = canvas.mapFromScene(item.mapToScene(QPointF(x, y)))
    QTest.mouseClick(canvas.viewport(), Qt.MouseButton.LeftButton, pos=pos)


def grab_mid_run(window: MainWindow, pair: Pair, path: Path) -> None:
    """Open ``pair`` and save the window as soon as the run has put its final difference on
    screen (score, detection and measurement still to come), then wait for the run to end."""
    grabbed: list[bool] = []

    def on_partial(lane: str, job_id: int, views: object) -> None:
        if lane == "run" and "difference" in views and not grabbed:  # type: ignore[operator]
            window.grab().save(str(path), "PNG")
            grabbed.append(window.outcome is None)

    window.jobs.partial.connect(on_partial)
    wait_for(window, "run", lambda: window.open_pair(pair))
    window.jobs.partial.disconnect(on_partial)
    if grabbed != [True]:
        raise SystemExit("the run ended before its difference was shown")


def demo_batch(folder: Path, products: str = "full") -> Path:
    """A batch folder of the demo pair run with the default config, without the
    decorrelation and with a 3 sigma threshold, by the batch's own pieces (one run per
    pair writing ``products``, rows from the outputs, the summary), without a cluster."""
    sci, tmpl = demo_pair()
    rows = []
    configs = (
        ("demo", []),
        ("demo_not_decorrelated", ["decorrelation.enabled=false"]),
        ("demo_threshold_3", ["detection.threshold=3.0"]),
    )
    for name, overrides in configs:
        out = folder / name
        config = apply_overrides(SubtractionConfig(), overrides)
        cli.run_pair(
            str(sci),
            str(tmpl),
            out,
            config,
            overwrite=False,
            strict=False,
            quiet=True,
            products=products,
        )
        pair = {"name": name, "science": str(sci), "template": str(tmpl), "output": str(out)}
        rows.append({**pair, "status": "ok", **row_from_outputs(out)})
    write_summary(folder, rows)
    return folder


def settle(app: QApplication) -> None:
    """Let pending layout and paint events run."""
    for _ in range(5):
        app.processEvents()


def brightest_source(window: MainWindow, positive: bool = True) -> int:
    """Id of the highest-S/N unflagged DIA source of the given sign."""
    dia = window.outcome.result.diasources  # type: ignore[union-attr]
    snr = np.asarray(dia["snr"], float) * (1 if positive else -1)
    snr[np.asarray(dia["flagged"], bool)] = -np.inf
    return int(dia["id"][int(np.nanargmax(snr))])


def nearest_source(window: MainWindow, x: float, y: float) -> int:
    """Id of the DIA source nearest (x, y)."""
    dia = window.outcome.result.diasources  # type: ignore[union-attr]
    d = np.hypot(np.asarray(dia["x"], float) - x, np.asarray(dia["y"], float) - y)
    return int(dia["id"][int(np.argmin(d))])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "screenshots"), help="output folder")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # The application's own, with its one BLAS thread: the engine's catalog then is
    # ``diffviewer run``'s to the bit (BLAS's default two threads round differently and
    # moved a GOTO source across the threshold: 522 rows against 521).
    app = application()
    written: list[Path] = []

    def save(window: MainWindow, name: str) -> None:
        settle(app)
        path = out / name
        window.grab().save(str(path), "PNG")
        written.append(path)

    with tempfile.TemporaryDirectory() as tmp:
        sci, tmpl = demo_pair()
        demo = isolated_window(Path(tmp), SIZE)
        wait_for(demo, "run", lambda: demo.open_pair(Pair(str(sci), str(tmpl), "demo")))
        # the demo pair's known transient (resources/demo/README.md): x = 60, y = 181
        demo.select_source(nearest_source(demo, 60.0, 181.0))
        save(demo, "main_window.png")
        # File > Planes files of this pair…, as it opens over the demo pair
        demo.opener.planes_dialog()
        planes = demo.opener.planes
        if planes is None:
            raise SystemExit("File > Planes files of this pair… opened no dialog")
        settle(app)
        planes.grab().save(str(out / "planes_dialog.png"), "PNG")
        written.append(out / "planes_dialog.png")
        planes.reject()
        demo.close()

        if (GOTO / "1.fits").is_file():
            window = isolated_window(Path(tmp) / "goto", SIZE)
            pair = Pair(str(GOTO / "1.fits"), str(GOTO / "2.fits"), "goto")
        else:
            window = isolated_window(Path(tmp) / "demo2", SIZE)
            pair = Pair(str(sci), str(tmpl), "demo")
        wait_for(window, "run", lambda: window.open_pair(pair))
        if pair.name == "goto":
            window.select_source(brightest_source(window))
            window.area.centre_on(*window.area.view_centre(), half_width=250)
            save(window, "main_window_goto.png")
        # a kernel source's stamp panel beside the kernel diagnostics
        window.menus.cand_action.setChecked(True)
        window.refresh_overlays()
        cands = window.overlays.candidate_items["science"]
        good = [
            p
            for p in cands.points()
            if window.outcome.result.kernel.candidates["status"][int(p.data())] == "GOOD"
        ]
        window.overlays._on_candidate_clicked(cands, good[:1] or cands.points()[:1])
        window.tabs.setCurrentWidget(window.tabs.kernel_panel)
        save(window, "kernel_diagnostics.png")
        kernel = window.tabs.kernel_panel
        kernel.pages.setCurrentIndex(1)
        save(window, "kernel_psfs.png")
        # a corner cell of the page's mosaic (7 x 7 cells: the last one's centre is at 13/14
        # of its side) clicked: the PSFs matched through the kernel there
        middle = kernel.psf_cell
        side = kernel.picker.image.shape[0]
        click(kernel.psf_canvas, kernel.picker, side * 13 / 14, side * 13 / 14)
        if kernel.psf_cell in (None, middle):
            raise SystemExit("the click on the PSFs page's mosaic chose no other cell")
        save(window, "kernel_psfs_cell.png")
        kernel.pages.setCurrentIndex(0)
        window.tabs.setCurrentWidget(window.tabs.residual_panel)
        save(window, "residual_histograms.png")
        # catalog with cutouts: zoom onto the selected source
        window.tabs.setCurrentWidget(window.area)
        source = (
            brightest_source(window, positive=False)
            if pair.name == "goto"
            else brightest_source(window)
        )
        window.select_source(source)
        window.area.centre_on(*window.area.view_centre(), half_width=60)
        window.docks["Cutouts"].raise_()
        window.docks["Catalog"].raise_()
        save(window, "catalog_cutouts.png")
        # A/B: the first run kept as A; the same pair with a spatially constant kernel,
        # then with a higher detection threshold too, is B
        window.menus.keep_action.trigger()
        window.params.set_value("kernel", "spatial_order", 0)
        wait_for(window, "run", window.run)
        window.params.set_value("detection", "threshold", 8.0)
        wait_for(window, "run", window.run)
        window.tabs.setCurrentWidget(window.tabs.ab_panel)
        save(window, "ab_comparison.png")
        window.close()

        # a run under way: its difference on screen before the result
        mid = isolated_window(Path(tmp) / "mid", SIZE)
        settle(app)
        grab_mid_run(mid, pair, out / "mid_run.png")
        written.append(out / "mid_run.png")
        mid.close()

        # the same review on a 1280 x 720 screen
        small = isolated_window(Path(tmp) / "small", SMALL)
        settle(app)
        wait_for(small, "run", lambda: small.open_pair(pair))
        small.select_source(
            brightest_source(small) if pair.name == "goto" else nearest_source(small, 60.0, 181.0)
        )
        save(small, "main_window_1280x720.png")
        small.close()

        # a run saved by diffviewer run, opened from its folder, run again without the
        # decorrelation, and the saved run (A) kept to tune against, on a 1280 x 720 screen
        folder = Path(tmp) / SAVED_FOLDER
        code = cli.run_pair(
            pair.science,
            pair.template,
            folder,
            SubtractionConfig(),
            overwrite=False,
            strict=False,
            quiet=True,
        )
        if code != 0:
            raise SystemExit(f"diffviewer run of {pair.label} failed ({code})")
        saved = isolated_window(Path(tmp) / "saved", SMALL)
        wait_for(saved, "run", lambda: open_saved(saved, folder))
        saved.params.set_value("decorrelation", "enabled", False)
        wait_for(saved, "run", saved.run)
        saved.tabs.setCurrentWidget(saved.tabs.ab_panel)
        saved.tabs.ab_panel.keep_button.click()  # Keep A: the saved run
        if saved.kept is None or saved.kept is saved.outcome:
            raise SystemExit("Keep A did not keep the saved run")
        save(saved, "ab_saved_run_1280x720.png")
        saved.close()

        # the review of a night's batch, worst first
        review = ReviewWindow(demo_batch(Path(tmp) / "batch"))
        review.resize(*SIZE)
        review.show()
        settle(app)
        review.grab().save(str(out / "batch_review.png"), "PNG")
        written.append(out / "batch_review.png")
        review.close()

        # the same batch of the difference and catalog alone (--products minimal): the
        # worst pair's folder shown beside the table
        minimal = ReviewWindow(demo_batch(Path(tmp) / "minimal", products="minimal"))
        minimal.resize(*SIZE)
        minimal.show()
        settle(app)
        worst = minimal.visible_names()[0]
        wait_for_lane(minimal.jobs, READ_LANE, lambda: minimal.select_name(worst))
        if minimal.preview.shown is None:
            raise SystemExit(f"the preview of {worst} failed: {minimal.preview.inputs.text()}")
        settle(app)
        minimal.grab().save(str(out / "batch_review_minimal.png"), "PNG")
        written.append(out / "batch_review_minimal.png")
        minimal.close()
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
