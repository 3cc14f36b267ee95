"""SIGTERM and SIGHUP (Slurm, ``timeout``, systemd) handled like Ctrl-C.

The handler raises :class:`Terminated` in the main thread, at whatever line it is
running, so every clean-up of the command runs on the way out. Python runs a signal
handler at the next instruction of the main thread, which may be inside a finaliser
(``__del__``, a weakref callback, as ``dask.distributed`` runs while a batch waits): an
exception raised there is lost ("Exception ignored in", with a traceback). The handler
therefore also records the signal, a loop that must stop calls
:func:`raise_if_terminated`, which raises it again, and such a lost :class:`Terminated`
prints nothing (the one line the command prints on its way out says what happened).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

#: Signals received inside :func:`terminate_like_interrupt`, in order.
_received: list[int] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwound like Ctrl-C, so every clean-up runs.

    Parameters
    ----------
    signum : int
        The signal.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, _frame: object) -> None:
    """Signal handler: record the signal and raise :class:`Terminated` in the main thread."""
    _received.append(signum)
    raise Terminated(signum)


def _unraisable_hook(previous: Callable[[Any], object]) -> Callable[[Any], None]:
    """``sys.unraisablehook`` that drops a :class:`Terminated` and hands the rest to
    ``previous``."""

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, Terminated):
            previous(unraisable)

    return hook


def raise_if_terminated() -> None:
    """Raise :class:`Terminated` if a handled signal arrived, even one whose exception a
    finaliser swallowed; nothing otherwise."""
    if _received:
        raise Terminated(_received[0])


@contextlib.contextmanager
def _handled_by(handler: Callable[[int, Any], None]) -> Iterator[bool]:
    """SIGTERM and SIGHUP go to ``handler`` while in the block, then to the handlers found
    before; yields whether they were set (not outside the main thread, where signals are
    not ours to handle)."""
    wanted = [getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]
    try:
        previous = {s: signal.signal(s, handler) for s in wanted}
    except ValueError:
        previous = {}
    try:
        yield bool(previous)
    finally:
        for sig, found in previous.items():
            signal.signal(sig, found)


@contextlib.contextmanager
def terminate_like_interrupt() -> Iterator[None]:
    """Handle SIGTERM and SIGHUP like Ctrl-C while in the block.

    The previous handlers and ``sys.unraisablehook`` come back afterwards, and the record
    of received signals is cleared on entry and exit; outside the main thread nothing
    changes.
    """
    _received.clear()
    unraisable = sys.unraisablehook
    try:
        with _handled_by(_raise_terminated) as handled:
            if handled:
                sys.unraisablehook = _unraisable_hook(unraisable)
            yield
    finally:
        sys.unraisablehook = unraisable
        _received.clear()


@contextlib.contextmanager
def quit_on_termination(quit: Callable[[], None]) -> Iterator[None]:
    """While in the block, SIGTERM and SIGHUP record the signal and call ``quit`` instead of
    raising; the handlers found come back afterwards.

    An event loop (Qt's) runs Python only in its callbacks, where a raised
    :class:`Terminated` would not unwind the loop: ``quit`` ends the loop, and the caller's
    :func:`raise_if_terminated` after it raises the signal as the command's outcome. Outside
    the main thread nothing changes.
    """

    def handler(signum: int, _frame: object) -> None:
        _received.append(signum)
        quit()

    with _handled_by(handler):
        yield
