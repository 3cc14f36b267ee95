"""The layering rule: the engine and the shared vocabulary never load Qt."""

import subprocess
import sys

QT_ROOTS = ("PyQt6", "pyqtgraph", "PySide6", "qtpy", "superqt")


def test_engine_and_vocabulary_import_no_qt() -> None:
    code = (
        "import sys\n"
        "import diffviewer.engine, diffviewer.engine.pipeline, diffviewer.config, diffviewer.io, "
        "diffviewer.exposure, diffviewer.display, diffviewer.outputs, diffviewer.cli\n"
        f"print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in {QT_ROOTS!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"Qt modules loaded by the engine layer: {out.stdout}"
