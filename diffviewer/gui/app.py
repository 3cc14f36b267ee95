"""Starting the inspection application (called by ``diffviewer`` with no subcommand)."""

from __future__ import annotations

from PyQt6.QtCore import QTimer

from diffviewer.companions import Companions
from diffviewer.config import SubtractionConfig
from diffviewer.errors import DiffviewerError
from diffviewer.gui.model import Pair
from diffviewer.gui.qtapp import application, run_event_loop
from diffviewer.gui.window import MainWindow


def launch(
    science: str | None,
    template: str | None,
    *,
    pairs: str | None,
    config: SubtractionConfig,
    companions: tuple[Companions, tuple[Companions, ...]] | None = None,
) -> int:
    """Open the main window on a pair, a list of pairs or the demo pair, and run it.

    Parameters
    ----------
    science, template : str or None
        Specs of the pair (``file.fits``, ``file.fits[SCI]``, ``file.fits[3]``; a template
        in pieces as their specs joined by ``;``); the bundled demo pair when both are
        None and no ``pairs`` list is given.
    pairs : str or None
        A CSV list of pairs (columns science, template, optional name) to step through.
    config : SubtractionConfig
        The config of the first run.
    companions : (Companions, tuple of Companions), optional
        The files given beside the pair's science image and template pieces, and the
        bit map (:func:`diffviewer.companions.input_companions`); none when absent.

    Returns
    -------
    int
        The exit code of the event loop.
    """
    app = application()
    window = MainWindow(config)
    window.show()
    # however the event loop ends, no background thread outlives it (Qt would abort)
    app.aboutToQuit.connect(window.jobs.shutdown)

    def start() -> None:
        if pairs is not None:
            window.opener.open_pairs_file(pairs)
        elif science is not None and template is not None:
            pair = Pair(science, template)
            if companions is not None:
                pair = Pair(science, template, "", companions)
            window.open_pair(pair)
        else:
            from diffviewer.io import demo_pair

            try:
                sci, tmpl = demo_pair()
            except DiffviewerError as exc:
                window.report_problem(exc)
                return
            window.open_pair(Pair(str(sci), str(tmpl), "demo"))

    QTimer.singleShot(0, start)
    return run_event_loop(app)
