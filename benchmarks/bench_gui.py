"""GUI benchmark: Run-to-difference-on-screen on the GOTO pair, pan frame time on 4096^2 views.

Prints a table:

- ``run -> ... on screen``: from triggering Run on ``../shared/data/goto/1.fits``,
  ``2.fits`` (1850 x 1850) to the science and template panels first painted with this
  run's images, to the difference panel first painted with this run's *final* difference
  (the engine hands it over once decorrelated, while score, detection and measurement go
  on; the benchmark checks that the array painted is the one the outcome shows), and to
  the whole outcome on screen (overlays, catalog, diagnostics panels), with the engine's
  own time and the GUI's share (reading, display preparation, drawing); beside them
  HOTPANTS's whole process on the same pair (its recommended flags, built from
  ``../shared/peers``), run in turn with each Run, and the median of the per-round ratios
  (issue 9's target: Run to the difference on screen at most HOTPANTS's subtraction time,
  ratio <= 1);
- ``cancel -> thread ended``: from Cancel during the GOTO run to the worker thread's end
  (the window itself is idle at once);
- ``pan frame``: time to move the shared range and repaint every visible panel, with six
  linked 4096 x 4096 float32 views in the grid (and one view alone), zoomed out to the
  whole image and zoomed in to 1:1 (target: under 30 ms);
- responsiveness during a synthetic 4096 x 4096 run: how late a 10 ms timer that pans and
  repaints a view fires while the engine works in its thread.

Runs offscreen (``QT_QPA_PLATFORM=offscreen``): the figures are the raster paint engine's,
without a compositor or a GPU. Usage: ``python benchmarks/bench_gui.py [--repeat N]
[--run-only]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from peers import PAIRS, hotpants_binary, hotpants_command, run_process  # noqa: E402
from PyQt6.QtCore import QEventLoop, QTimer  # noqa: E402
from PyQt6.QtWidgets import QApplication  # noqa: E402

from diffviewer import display  # noqa: E402
from diffviewer.gui.model import Pair  # noqa: E402
from diffviewer.gui.qtapp import application  # noqa: E402
from diffviewer.gui.window import MainWindow, isolated_window  # noqa: E402

GOTO = ROOT.parent / "shared" / "data" / "goto"
SIZE = (1800, 1060)


def spin_until(app: QApplication, condition, timeout_s: float = 600.0) -> None:
    """Process events until ``condition()`` holds (no sleeping: the loop blocks on events)."""
    deadline = time.perf_counter() + timeout_s
    loop = QEventLoop()
    timer = QTimer()
    timer.setInterval(1)
    timer.timeout.connect(
        lambda: loop.quit() if condition() or time.perf_counter() > deadline else None
    )
    timer.start()
    loop.exec()
    timer.stop()


def bench_run(app: QApplication, folder: Path, repeat: int) -> list[tuple[str, str]]:
    """Run -> inputs, difference and whole outcome on screen, and cancel latency, on GOTO."""
    if not (GOTO / "1.fits").is_file():
        return [("run -> difference on screen", f"skipped: {GOTO} absent")]
    window = isolated_window(folder, SIZE)
    window.open_pair(Pair(str(GOTO / "1.fits"), str(GOTO / "2.fits"), "goto"), run=False)
    first: dict[str, tuple[float, np.ndarray]] = {}  # view -> (time painted, array painted)

    def paint(lane: str, job_id: int, views: dict) -> None:  # after the window's own slot
        for name in views:
            if lane == "run" and name in ("science", "template", "difference"):
                panel = window.area.panels[name]
                panel.canvas.viewport().repaint()
                first.setdefault(name, (time.perf_counter(), panel.data))

    window.jobs.partial.connect(paint)
    times: dict[str, list[float]] = {k: [] for k in ("science", "template", "difference")}
    times["outcome"] = []
    stages: dict[str, list[float]] = {k: [] for k in ("read", "engine", "early", "display", "gui")}
    binary = hotpants_binary()
    hotpants: list[float] = []
    for _ in range(repeat):
        if binary is not None:
            argv = hotpants_command(
                binary, PAIRS["goto"], GOTO / "1.fits", GOTO / "2.fits", folder / "hotpants"
            )
            hotpants.append(run_process(argv).wall_s)
        before = window.outcome
        first.clear()
        t0 = time.perf_counter()
        window.menus.run_action.trigger()
        spin_until(app, lambda b=before: window.outcome is not b or window.last_error is not None)
        if window.last_error is not None:
            raise SystemExit(window.last_error.message)
        window.area.panels["difference"].canvas.viewport().repaint()  # the outcome painted
        times["outcome"].append(time.perf_counter() - t0)
        outcome = window.outcome
        if "difference" not in first or first["difference"][1] is not outcome.images["difference"]:
            raise SystemExit("the difference painted before the outcome is not the outcome's")
        for name in ("science", "template", "difference"):
            times[name].append(first[name][0] - t0)
        for key, value in outcome.stages.items():
            stages[key].append(value)
        timings = outcome.result.timings
        until = list(timings)[: list(timings).index("decorrelate") + 1]
        stages["early"].append(sum(timings[k] for k in until))
        stages["gui"].append(times["outcome"][-1] - outcome.elapsed)
    label = {
        "science": "run -> science on screen (read)",
        "template": "run -> template on screen (read, warped)",
        "difference": "run -> difference on screen (its final pixels)",
        "outcome": "run -> whole outcome on screen (markers, catalog, panels)",
    }
    rows = []
    for key, values in times.items():
        rows.append(
            (
                f"{label[key]} (GOTO 1850^2)" if key == "difference" else label[key],
                f"median {statistics.median(values):.2f} s over {repeat} (min {min(values):.2f} s)",
            )
        )
        if hotpants and key in ("difference", "outcome"):
            ratios = [t / h for t, h in zip(values, hotpants, strict=True)]
            target = " (target <= 1)" if key == "difference" else ""
            rows.append(
                (
                    "  / HOTPANTS whole process, run in turn",
                    f"median {statistics.median(ratios):.2f}x{target}; rounds "
                    + " ".join(f"{r:.2f}" for r in ratios),
                )
            )
    if hotpants:
        rows.append(("HOTPANTS whole process", f"median {statistics.median(hotpants):.2f} s"))
    else:
        rows.append(("HOTPANTS whole process", "skipped: it could not be built"))
    labels = {
        "read": "reading the pair (io.read_exposure)",
        "engine": "engine (run_subtraction)",
        "early": "engine, its steps up to the final difference (warp .. decorrelate)",
        "display": "display arrays + levels (worker, after the engine)",
        "gui": "GUI thread: outcome on screen, queue",
    }
    rows += [
        (f"  of which {labels[k]}", f"median {statistics.median(v):.2f} s")
        for k, v in stages.items()
    ]
    # cancel during the longest step (measurement): time until the worker thread has ended
    window.menus.run_action.trigger()
    spin_until(app, lambda: window.step_label.text().startswith("measure"))
    step = window.step_label.text().split(":")[0]
    t0 = time.perf_counter()
    window.cancel()
    idle = time.perf_counter() - t0
    spin_until(app, lambda: window.jobs.active_threads() == 0)
    ended = time.perf_counter() - t0
    rows.append((f"cancel during '{step}' -> window idle", f"{idle * 1e3:.1f} ms"))
    rows.append((f"cancel during '{step}' -> engine thread ended", f"{ended * 1e3:.0f} ms"))
    window.close()
    return rows


def _frames(
    app: QApplication, window: MainWindow, names: list[str], half: float, n: int = 40
) -> list[float]:
    """Pan the shared view ``n`` times by 2% of its width and repaint every visible panel."""
    master = window.area.panels["science"]
    master.centre_on(2048.0, 2048.0, half)
    app.processEvents()
    for name in names:  # first paint renders the images into QImages (not a pan cost)
        window.area.panels[name].canvas.viewport().repaint()
    times = []
    for i in range(n):
        x = 2048.0 + (i % 20 - 10) * 0.02 * 2 * half
        t0 = time.perf_counter()
        master.centre_on(x, 2048.0)
        for name in names:
            window.area.panels[name].canvas.viewport().repaint()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def bench_pan(app: QApplication, folder: Path) -> list[tuple[str, str]]:
    """Pan frame time with 4096 x 4096 views."""
    window = isolated_window(folder, SIZE)
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 1.0, (4096, 4096)).astype(np.float32)
    levels = display.compute_levels(image, display.DisplaySettings())
    grid = window.area.visible_views()  # the five main views and the spare cell's
    for name in grid:
        window.area.panels[name].set_image(image, levels)
    app.processEvents()
    rows = []
    for layout, names in (
        (f"grid, {len(grid)} linked views", grid),
        ("tabs, 1 view", ["science"]),
    ):
        window.area.set_mode("grid" if layout.startswith("grid") else "tabs")
        app.processEvents()
        for zoom, half in (("whole image", 2048.0), ("1:1 zoom", 150.0)):
            t = _frames(app, window, names, half)
            rows.append(
                (
                    f"pan frame, {layout}, {zoom}",
                    f"median {statistics.median(t):.1f} ms, p90 {np.percentile(t, 90):.1f} ms",
                )
            )
    window.close()
    return rows


def bench_responsive(app: QApplication, folder: Path) -> list[tuple[str, str]]:
    """Event-loop stalls and pan frames on the GUI thread while a 4096^2 run is under way."""
    from diffviewer.synthetic import make_pair

    pair = make_pair((4096, 4096), n_stars=3000, seed=5)
    window = isolated_window(folder, SIZE)
    gaps: list[float] = []
    frames: list[float] = []
    last = [time.perf_counter()]
    master = window.area.panels["science"]
    image = np.asarray(pair.science.image)
    master.set_image(image, display.compute_levels(image, display.DisplaySettings()))

    def tick() -> None:  # every 10 ms: note the gap, pan and repaint the science view
        now = time.perf_counter()
        if not window.is_running():  # the run ended: what follows is drawing its result
            return
        gaps.append((now - last[0]) * 1e3)
        last[0] = now
        master.centre_on(2048.0 + (len(gaps) % 20 - 10) * 20.0, 2048.0, 300.0)
        master.canvas.viewport().repaint()
        frames.append((time.perf_counter() - now) * 1e3)

    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(tick)
    t0 = time.perf_counter()
    window.open_pair(Pair(pair.science, pair.template, "synthetic 4096"))
    last[0] = time.perf_counter()
    timer.start()
    spin_until(app, lambda: not window.is_running())
    timer.stop()
    elapsed = time.perf_counter() - t0
    shown = elapsed - window.outcome.elapsed if window.outcome is not None else float("nan")
    window.close()
    waits = np.array(gaps[1:]) - 10.0
    return [
        (
            "4096^2 synthetic run, GUI thread meanwhile",
            f"run {elapsed:.1f} s; {len(gaps)} pan+repaint ticks of 10 ms",
        ),
        (
            "  tick lateness (event-loop stall)",
            f"median {np.median(waits):.1f} ms, p99 {np.percentile(waits, 99):.0f} ms, "
            f"max {waits.max():.0f} ms",
        ),
        (
            "  pan frame during the run (1 view)",
            f"median {np.median(frames):.1f} ms, p90 {np.percentile(frames, 90):.1f} ms",
        ),
        ("  GUI thread drawing the 4096^2 result", f"{shown:.2f} s"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs of the GOTO pair")
    parser.add_argument("--run-only", action="store_true", help="only the GOTO run rows")
    args = parser.parse_args(argv)
    app = application()  # the application's own, with its thread settings
    with tempfile.TemporaryDirectory() as tmp:
        rows = bench_run(app, Path(tmp) / "run", args.repeat)
        if not args.run_only:
            rows += bench_pan(app, Path(tmp) / "pan") + bench_responsive(app, Path(tmp) / "busy")
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  result")
    print(f"{'-' * width}  {'-' * 40}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
