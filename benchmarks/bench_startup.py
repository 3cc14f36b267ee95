"""Start-up: how long ``diffviewer`` takes to answer when there is nothing to compute.

Times whole processes (``python -m diffviewer ...``, start to reaped, with their own
peak RSS): ``--help``, ``config``, and ``run`` on a mistyped science path (the
one-line error). Prints the median of ``--repeat`` runs of each (target: 0.5 s), and a
bare ``python -c pass`` for the interpreter's own share.

Usage: ``python benchmarks/bench_startup.py [--repeat 5] [--tree DIR]`` (``--tree``: the
source tree whose ``diffviewer`` runs; this one by default).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from peers import ROOT, diffviewer_env, run_process

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "diffviewer --help": ["-m", "diffviewer", "--help"],
    "diffviewer config": ["-m", "diffviewer", "config"],
    "diffviewer run <mistyped path>": [
        "-m",
        "diffviewer",
        "run",
        "no_such_science.fits",
        "no_such_template.fits",
        "--out",
        "out",
    ],
}


def main() -> int:
    """Time each command and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tree", type=Path, default=ROOT)
    args = parser.parse_args()
    tree = args.tree.resolve()
    env = diffviewer_env(tree)
    print(f"tree: {tree}")
    print(f"{'command':34} {'median s':>9} {'max s':>7} {'RSS MB':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, argv in COMMANDS.items():
            runs = [
                run_process([sys.executable, *argv], env=env, log=Path(tmp) / "log.txt", cwd=tree)
                for _ in range(args.repeat)
            ]
            walls = [r.wall_s for r in runs]
            rss = statistics.median(r.peak_rss_mb for r in runs)
            print(f"{label:34} {statistics.median(walls):9.3f} {max(walls):7.3f} {rss:7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
