"""Ctrl-C, SIGTERM and SIGHUP unwind alike, even when a finaliser swallows the exception."""

from __future__ import annotations

import os
import signal
import time

import pytest

from diffviewer.termination import Terminated, raise_if_terminated, terminate_like_interrupt


def test_sigterm_and_sighup_unwind_like_ctrl_c() -> None:
    before = signal.getsignal(signal.SIGTERM)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with pytest.raises(Terminated) as caught, terminate_like_interrupt():
            os.kill(os.getpid(), sig)
            time.sleep(5)  # the handler raises before this ends
        assert caught.value.signum == sig
    assert signal.getsignal(signal.SIGTERM) is before


class _SignalledWhileFinalised:
    """An object whose finaliser is where the signal's handler runs, as dask's can be."""

    def __init__(self, sig: int) -> None:
        self.sig = sig

    def __del__(self) -> None:
        os.kill(os.getpid(), self.sig)
        time.sleep(5)  # the handler raises here; Python prints and drops the exception


@pytest.mark.parametrize(
    ("sig", "raised"), [(signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)]
)
def test_a_signal_swallowed_by_a_finaliser_is_raised_again(capsys, sig, raised) -> None:
    # A Ctrl-C lost so in a dask weakref callback let a batch run on to its end, exit 0
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN in a shell's background job
    with terminate_like_interrupt():
        raise_if_terminated()  # nothing received: nothing raised
        started = time.monotonic()
        _SignalledWhileFinalised(sig)  # finalised at once; its exception is lost
        assert time.monotonic() - started < 4  # the handler did run inside it
        with pytest.raises(raised) as caught:
            raise_if_terminated()
        assert type(caught.value) is raised
    raise_if_terminated()  # the record ends with the block
    assert signal.getsignal(signal.SIGINT) == before  # the handler found comes back
    assert "Traceback" not in capsys.readouterr().err  # the lost exception printed nothing


def test_a_window_quits_on_sigterm() -> None:
    # Qt's event loop runs no Python between events, so the handler that raises never
    # ran: `timeout 20 diffviewer review DIR` was still running ten minutes on. The
    # window (here the main one, on the demo pair) quits, and the command ends as a
    # terminated one (128 + the signal).
    import subprocess
    import sys

    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "diffviewer"], env=env, stderr=subprocess.PIPE, text=True
    )
    time.sleep(4.0)  # the window is up and running the demo pair
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 128 + signal.SIGTERM
    # A window writes only on Save, atomically: no "unfinished pair" to speak of (the
    # README audit of 2026-12-07 found the batch's words there).
    err = proc.stderr.read() if proc.stderr else ""
    assert "terminated by SIGTERM" in err and "unfinished pair" not in err
