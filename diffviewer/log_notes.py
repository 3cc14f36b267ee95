"""diffviewer's log warnings as one-line notes: printed by the command line, collected
for the window (what the reader says of its inputs: a saturation level taken from the
data, an unreadable WCS, which image of a file was read)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

#: The logger every diffviewer module logs under.
LOGGER = "diffviewer"


def one_line(record: logging.LogRecord) -> str:
    """A record's message on one line (its whitespace runs made single spaces)."""
    return " ".join(record.getMessage().split())


class _ThreadNotes(logging.Handler):
    """Keeps the warnings logged on one thread, as one-line notes."""

    def __init__(self, notes: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.notes = notes
        self.thread = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        """Keep a record logged on the thread that made this handler."""
        if record.thread == self.thread:
            self.notes.append(one_line(record))


@contextlib.contextmanager
def collected_warnings() -> Iterator[list[str]]:
    """The warnings diffviewer logs on this thread while the block runs, one line each.

    Yields
    ------
    list of str
        Filled as the block runs (other threads' warnings are not taken).
    """
    notes: list[str] = []
    handler = _ThreadNotes(notes)
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    try:
        yield notes
    finally:
        logger.removeHandler(handler)
