"""Issue 9, start-up: a run imports only what it uses.

``scipy.signal`` imports ``scipy.stats``: together 0.6-0.7 s of every run's start-up on
the development machine (``python -X importtime``), for functions the engine computes
through ``scipy.fft`` (:mod:`diffviewer.engine.fftconv`).
"""

import subprocess
import sys

#: Modules whose import costs a run more than it would use of them (photutils: the test
#: oracle of the aperture sums only, diffviewer.engine.apertures).
UNUSED_HEAVY = ("scipy.signal", "scipy.stats", "photutils")


def test_a_run_imports_neither_scipy_signal_nor_scipy_stats_nor_photutils() -> None:
    code = (
        "import sys\n"
        "import diffviewer.engine.pipeline, diffviewer.io, diffviewer.outputs, diffviewer.cli\n"
        f"print(' '.join(sorted(m for m in sys.modules if m.startswith({UNUSED_HEAVY!r}))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"loaded by a run: {out.stdout}"
