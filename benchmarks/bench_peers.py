"""Whole process against whole process: ``diffviewer run`` and HOTPANTS on the same pairs.

For each pair and each round, HOTPANTS (built from ``../shared/peers`` with its
recommended flags) and then each diffviewer tree (``python -m diffviewer run SCI TMPL
--out DIR``, default config: score, detection and measurement included, every output
written) run in turn as child processes; each is timed from start to reaped, with its
own peak RSS. The table prints the median over rounds of the per-round ratio
diffviewer / HOTPANTS (wall and RSS) with the wall ratios' range and the highest RSS
ratio (a peak target is met only if every round meets it), the engine's own time (``metadata.json``:
``run_subtraction`` from the read exposures to the result, no reading or writing) and
that engine time as a multiple of one ``rfft2`` + ``irfft2`` pair of the image's size
(float32, one thread, best of 5, measured in the same run): the physical floor of an
FFT-based subtraction. A timeline follows: where each tree's wall time goes (``timings_s``
``import``, ``read``, ``total`` and ``write``; the rest, interpreter start, the command's
own imports and checks and the exit, as ``other``). A tree that records no
``import``/``read``/``write`` counts them in ``other``, and its ``total`` includes
reading the template.

Usage::

    python benchmarks/bench_peers.py [--pairs goto synthetic1k ...] [--rounds 3]
        [--baseline DIR] [--minimal] [--threads N]

``--baseline DIR`` adds a column for another source tree (e.g. ``git archive`` of an
older commit unpacked in DIR): "today" beside "new". ``--minimal`` adds a run with
``--products minimal``, ``--threads N`` one with N threads lent to the engine.
Synthetic pairs are rendered once per invocation, outside the timings. Pairs whose
data is absent are skipped with the reason printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.fft
from peers import PAIRS, ROOT, diffviewer_env, hotpants_binary, hotpants_command, run_process

#: Issue 9's targets: whole-process wall ratio to HOTPANTS, per pair (None: no target).
WALL_TARGET = {"synthetic1k": 0.7, "goto": 0.5, "synthetic2kx4k": 0.4, "synthetic4k": None}
#: Peak RSS against HOTPANTS's on every pair.
RSS_TARGET = 2.0
#: The engine's steps that a HOTPANTS run does too (its stamps, its kernel fit, its
#: convolution and difference); the others (the registration check, PSFs, backgrounds,
#: decorrelation, renormalisation, score, detection, measurement, runDebug's figures) are
#: diffviewer's beyond it.
HOTPANTS_STEPS = ("kernel candidates", "kernel fit", "subtract")
#: ``metadata.json`` ``timings_s`` keys that are not engine steps: loading the engine's
#: modules, reading the inputs, the engine itself, writing every other output.
OUTSIDE_ENGINE = ("import", "read", "total", "write")


def fft_floor(shape: tuple[int, int], repeat: int = 5) -> float:
    """Seconds of one ``rfft2`` + ``irfft2`` pair of a float32 image of ``shape`` (best of 5)."""
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        scipy.fft.irfft2(scipy.fft.rfft2(image), s=shape)
        best = min(best, time.perf_counter() - t0)
    return float(best)


def run_diffviewer(
    tree: Path, science: Path, template: Path, out: Path, extra: list[str]
) -> dict[str, float]:
    """One whole ``diffviewer run`` process of a source tree, with its engine time."""
    argv = [sys.executable, "-m", "diffviewer", "run", str(science), str(template)]
    argv += ["--out", str(out), "--quiet", *extra]
    figures = run_process(argv, env=diffviewer_env(tree), log=out.with_suffix(".log"), cwd=tree)
    if figures.returncode != 0:
        raise RuntimeError(f"diffviewer failed on {science}; see {out.with_suffix('.log')}")
    meta = json.loads((out / "metadata.json").read_text())
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    timings = meta["timings_s"]
    steps = {f"step {k}": float(v) for k, v in timings.items() if k not in OUTSIDE_ENGINE}
    # Trees older than the import/read/write timings: those phases count as "other".
    phases = {f"phase {k}": float(timings.get(k, 0.0)) for k in ("import", "read", "write")}
    other = figures.wall_s - float(timings["total"]) - sum(phases.values())
    return {
        "wall": figures.wall_s,
        "rss": figures.peak_rss_mb,
        "engine": float(timings["total"]),
        "written_mb": size,
        **phases,
        "phase other": other,
        **steps,
    }


Trees = dict[str, tuple[Path, list[str]]]


def measure_pair(
    key: str, folder: Path, binary: Path | None, trees: Trees, rounds: int
) -> dict[str, object] | None:
    """All rounds of one pair: per program the runs' figures."""
    pair = PAIRS[key]
    files = pair.make(folder)
    if files is None:
        print(f"skipping {pair.name}: its data is absent from {ROOT.parent / 'shared' / 'data'}")
        return None
    science, template = files
    from astropy.io import fits

    shape = fits.getdata(science).shape
    runs: dict[str, list[dict[str, float]]] = {"HOTPANTS": [], **{t: [] for t in trees}}
    for r in range(rounds):
        if binary is not None:
            out = folder / f"{key}_hp{r}"
            hp = run_process(
                hotpants_command(binary, pair, science, template, out), log=out / "log.txt"
            )
            if hp.returncode != 0:
                raise RuntimeError(f"HOTPANTS failed on {pair.name}; see {out / 'log.txt'}")
            runs["HOTPANTS"].append({"wall": hp.wall_s, "rss": hp.peak_rss_mb})
        for label, (tree, extra) in trees.items():
            out = folder / f"{key}_{label.replace(' ', '_')}{r}"
            runs[label].append(run_diffviewer(tree, science, template, out, extra))
    return {"name": pair.name, "shape": shape, "floor": fft_floor(shape), "runs": runs}


def _ratios(a: list[dict[str, float]], b: list[dict[str, float]], key: str) -> list[float]:
    """The per-round ratios a[key] / b[key]."""
    return [x[key] / y[key] for x, y in zip(a, b, strict=True)]


def print_tables(results: dict[str, dict[str, object]], trees: list[str]) -> None:
    """The ratio table (one row per pair and program) and the cost against the FFT floor."""
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load average at the end "
        f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    head = (
        f"{'pair':36} {'program':26} {'wall s':>7} {'/HP wall':>9} {'range':>11} {'target':>7} "
        f"{'RSS MB':>7} {'/HP RSS':>8} {'worst':>6} {'engine s':>9} {'xFFT':>6} {'out MB':>7}"
    )
    print(head)
    print("-" * len(head))
    for key, res in results.items():
        runs: dict[str, list[dict[str, float]]] = res["runs"]  # type: ignore[assignment]
        floor: float = res["floor"]  # type: ignore[assignment]
        hp = runs["HOTPANTS"]
        target = WALL_TARGET.get(key)
        if hp:
            wall = statistics.median(r["wall"] for r in hp)
            rss = statistics.median(r["rss"] for r in hp)
            blank = f"{'':>9} {'':>11} {'':>7}"  # no ratio, range or target
            print(f"{res['name']:36} {'HOTPANTS':26} {wall:7.2f} {blank} {rss:7.0f}")
        for label in trees:
            mine = runs[label]
            wall = statistics.median(r["wall"] for r in mine)
            rss = statistics.median(r["rss"] for r in mine)
            engine = statistics.median(r["engine"] for r in mine)
            size = statistics.median(r["written_mb"] for r in mine)
            walls, rsss = (_ratios(mine, hp, k) if hp else [] for k in ("wall", "rss"))
            ratio = f"{statistics.median(walls):9.2f}" if hp else f"{'-':>9}"
            spread = f"{min(walls):5.2f}-{max(walls):5.2f}" if hp else f"{'-':>11}"
            rss_ratio = f"{statistics.median(rsss):8.2f}" if hp else f"{'-':>8}"
            worst = f"{max(rsss):6.2f}" if hp else f"{'-':>6}"
            goal = f"{target:7.2f}" if target else f"{'-':>7}"
            print(
                f"{'':36} {'diffviewer ' + label:26} {wall:7.2f} {ratio} {spread} {goal} "
                f"{rss:7.0f} {rss_ratio} {worst} {engine:9.2f} {engine / floor:6.0f} {size:7.0f}"
            )
        print(f"{'':36} {'rfft2+irfft2 (floor)':26} {floor:7.3f}   (shape {res['shape']})")
    print_steps(results, "new")
    print_timeline(results, trees)
    print_budget(results, "new")
    print(
        f"\nwall: start to reaped, reading and writing included; /HP: median over rounds of "
        "the per-round ratio; range: the lowest and highest of those wall ratios; worst: the "
        f"highest per-round RSS ratio (the peak a user can meet); RSS target <= {RSS_TARGET}x "
        "HOTPANTS; engine: metadata.json timings_s.total; xFFT: engine / (rfft2 + irfft2) of "
        "that shape."
    )


def print_timeline(results: dict[str, dict[str, object]], trees: list[str]) -> None:
    """Where each diffviewer tree's wall time goes (median seconds over rounds)."""
    print(
        "\ntimeline (median s): import = the engine's modules, read = both inputs, engine = "
        "timings_s.total, write = every output but metadata.json, other = wall - the rest "
        "(interpreter start, the command's own imports and checks, the last flushes to "
        "disk and the move into place, exit)"
    )
    for res in results.values():
        runs: dict[str, list[dict[str, float]]] = res["runs"]  # type: ignore[assignment]
        for label in trees:
            if label not in runs:
                continue
            cells = [
                f"{key} {statistics.median(r[f'phase {key}'] for r in runs[label]):.2f}"
                for key in ("import", "read")
            ]
            cells.append(f"engine {statistics.median(r['engine'] for r in runs[label]):.2f}")
            cells += [
                f"{key} {statistics.median(r[f'phase {key}'] for r in runs[label]):.2f}"
                for key in ("write", "other")
            ]
            print(f"  {res['name']}, {label}: " + ", ".join(cells))


def print_budget(results: dict[str, dict[str, object]], label: str) -> None:
    """Where a wall target's budget goes: HOTPANTS's wall times the target, against one
    tree's seconds outside the engine, in the steps HOTPANTS does too and in the rest."""
    print(
        f"\nbudget of diffviewer {label} (median s): target x HOTPANTS's wall; outside = "
        "import + read + write + other; HOTPANTS's steps = "
        + " + ".join(HOTPANTS_STEPS)
        + "; beyond = the engine's other steps"
    )
    for key, res in results.items():
        runs: dict[str, list[dict[str, float]]] = res["runs"]  # type: ignore[assignment]
        target = WALL_TARGET.get(key)
        if target is None or not runs["HOTPANTS"] or label not in runs:
            continue
        mine = runs[label]
        budget = target * statistics.median(r["wall"] for r in runs["HOTPANTS"])
        outside = statistics.median(
            sum(r[f"phase {k}"] for k in ("import", "read", "write", "other")) for r in mine
        )
        own = statistics.median(sum(r.get(f"step {k}", 0.0) for k in HOTPANTS_STEPS) for r in mine)
        engine = statistics.median(r["engine"] for r in mine)
        print(
            f"  {res['name']}: budget {budget:.2f}, outside {outside:.2f}, HOTPANTS's steps "
            f"{own:.2f}, beyond {engine - own:.2f}"
        )


def print_steps(results: dict[str, dict[str, object]], label: str) -> None:
    """The engine's steps (median seconds) of one diffviewer tree, and in FFT floors."""
    print(f"\nengine steps of diffviewer {label}: median s (multiple of rfft2 + irfft2)")
    for res in results.values():
        if label not in res["runs"]:  # type: ignore[operator]
            continue
        runs: list[dict[str, float]] = res["runs"][label]  # type: ignore[index]
        floor: float = res["floor"]  # type: ignore[assignment]
        steps = [k for k in runs[0] if k.startswith("step ")]
        cells = []
        for step in steps:
            t = statistics.median(r[step] for r in runs)
            cells.append(f"{step[5:]} {t:.2f} ({t / floor:.0f}x)")
        print(f"  {res['name']}: " + ", ".join(cells))


def main() -> int:
    """Run the chosen pairs and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="another source tree to run beside this")
    parser.add_argument("--minimal", action="store_true", help="also run --products minimal")
    parser.add_argument(
        "--threads", type=int, metavar="N", help="also run with --threads N (threads lent)"
    )
    parser.add_argument("--json", type=Path, help="also save every run's figures there")
    args = parser.parse_args()
    binary = hotpants_binary()
    if binary is None:
        print("HOTPANTS could not be built (see ../shared/peers/README.md): no ratios")
    trees: Trees = {}
    if args.baseline is not None:
        trees["today"] = (args.baseline.resolve(), [])
    trees["new"] = (ROOT, [])
    if args.minimal:
        trees["new minimal"] = (ROOT, ["--products", "minimal"])
    if args.threads:
        trees[f"new threads {args.threads}"] = (ROOT, ["--threads", str(args.threads)])
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.pairs:
            t0 = time.perf_counter()
            res = measure_pair(key, Path(tmp), binary, trees, args.rounds)
            if res is not None:
                results[key] = res
                print(f"{res['name']}: done in {time.perf_counter() - t0:.0f} s", flush=True)
                print_tables({key: res}, list(trees))  # each pair as soon as it is done
                if args.json is not None:
                    args.json.write_text(json.dumps(results, indent=1))
    print("\nall pairs:")
    print_tables(results, list(trees))
    return 0


if __name__ == "__main__":
    sys.exit(main())
