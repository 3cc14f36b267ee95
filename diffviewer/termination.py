"""Ctrl-C, SIGTERM and SIGHUP (Slurm, ``timeout``, systemd) unwind a command alike.

The handler raises :class:`KeyboardInterrupt` (Ctrl-C) or :class:`Terminated` (the
others) in the main thread, at whatever line it is running, so every clean-up of the
command runs on the way out. Python runs a signal handler at the next instruction of the
main thread, which may be inside a finaliser (``__del__``, a weakref callback, as
``dask.distributed`` runs while a batch waits): an exception raised there is lost
("Exception ignored in", with a traceback), and a batch ran on to its end after a Ctrl-C
lost so. The handler therefore also records the signal, a loop that must stop calls
:func:`raise_if_terminated`, which raises it again, and such a lost exception prints
nothing (the one line the command prints on its way out says what happened).
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


#: Signals that end a command the way Ctrl-C (SIGINT) does.
TERMINATING = ("SIGTERM", "SIGHUP")


def _exception_for(signum: int) -> KeyboardInterrupt:
    """The exception a handled signal raises: Ctrl-C's own, or :class:`Terminated`."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def _raise_for_signal(signum: int, _frame: object) -> None:
    """Signal handler: record the signal and raise its exception in the main thread."""
    _received.append(signum)
    raise _exception_for(signum)


def _unraisable_hook(previous: Callable[[Any], object]) -> Callable[[Any], None]:
    """``sys.unraisablehook`` that drops a :class:`KeyboardInterrupt` (so a
    :class:`Terminated`) and hands the rest to ``previous``."""

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            previous(unraisable)

    return hook


def raise_if_terminated() -> None:
    """Raise the first handled signal's exception if one arrived, even one a finaliser
    swallowed; nothing otherwise."""
    if _received:
        raise _exception_for(_received[0])


@contextlib.contextmanager
def _handled_by(handler: Callable[[int, Any], None], names: tuple[str, ...]) -> Iterator[bool]:
    """The signals ``names`` go to ``handler`` while in the block, then to the handlers
    found before; yields whether they were set (not outside the main thread, where
    signals are not ours to handle)."""
    wanted = [getattr(signal, n) for n in names if hasattr(signal, n)]
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
    """Handle Ctrl-C, SIGTERM and SIGHUP alike while in the block: raised, and recorded
    for :func:`raise_if_terminated`.

    The previous handlers and ``sys.unraisablehook`` come back afterwards, and the record
    of received signals is cleared on entry and exit; outside the main thread nothing
    changes.
    """
    _received.clear()
    unraisable = sys.unraisablehook
    try:
        with _handled_by(_raise_for_signal, ("SIGINT", *TERMINATING)) as handled:
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

    with _handled_by(handler, TERMINATING):
        yield
