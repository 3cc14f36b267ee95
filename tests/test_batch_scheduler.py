"""``--scheduler`` addresses where no dask scheduler answers: said in seconds, one line.

The servers are real: a plain socket server (one that accepts and never answers, one
that writes bytes that are not dask's), an HTTP server (as the dashboard's port is),
and a dask worker of a ``LocalCluster``. The batch runs as a process of its own, so a
batch that hangs fails its test after ``BOUND_S`` instead of holding the suite.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from diffviewer.batch import runner
from diffviewer.io import demo_pair

REPO = Path(__file__).resolve().parents[1]
#: Longest a refused batch may take: the probe's handshake wait, the interpreter's start.
BOUND_S = runner.PROBE_S + runner.HANDSHAKE_S + 20.0
#: What a socket server that is not dask writes: an HTTP error, then bytes.
JUNK = b"HTTP/1.1 400 Bad Request\r\n\r\n" + bytes(range(256))


@contextlib.contextmanager
def socket_server(answer: bytes | None) -> Iterator[str]:
    """A TCP server on localhost that accepts every connection and writes ``answer`` to
    it (nothing when None), keeping it open; its ``tcp://`` address."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):  # the server closed: the test is over
            while True:
                conn, _ = server.accept()
                held.append(conn)
                if answer is not None:
                    conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
        for conn in held:
            conn.close()


@contextlib.contextmanager
def http_server() -> Iterator[str]:
    """An HTTP server on localhost (what the dask dashboard's port 8787 is)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"tcp://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def batch_at(tmp_path: Path, address: str) -> tuple[int, str, float]:
    """``diffviewer batch`` of the demo pair into ``tmp_path / "out"`` on the scheduler
    ``address``, as a process: its exit status, standard error and seconds."""
    science, template = demo_pair()
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"science,template,name\n{science},{template},a\n")
    command = [sys.executable, "-m", "diffviewer", "batch", str(pairs), "--out"]
    t0 = time.monotonic()
    done = subprocess.run(
        [*command, str(tmp_path / "out"), "--scheduler", address, "--quiet"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=BOUND_S,
    )
    return done.returncode, done.stderr.strip(), time.monotonic() - t0


@pytest.mark.parametrize(
    ("server", "why"),
    [
        # the dashboard's port, given for the scheduler's: silent for 120-200 s and more
        (http_server, "no dask handshake"),
        # a port that accepts and never answers: the same
        (lambda: socket_server(None), "no dask handshake"),
        # other bytes: "internal error (MemoryError: Unable to allocate 3.07 EiB ...)"
        (lambda: socket_server(JUNK), "not dask's protocol"),
    ],
    ids=["http", "silent", "junk"],
)
def test_a_port_where_no_dask_scheduler_answers_is_said_in_seconds(
    tmp_path: Path, server, why: str
) -> None:
    with server() as address:
        code, err, _ = batch_at(tmp_path, address)
    assert code == 2, err
    assert err.startswith(f"error: --scheduler {address}: answered but is not a dask scheduler")
    assert why in err and "8786" in err and "\n" not in err, err
    assert "internal" not in err
    # nothing left behind: the batch folder it made is removed again
    assert not (tmp_path / "out").exists()


def test_a_dask_worker_given_for_its_scheduler_is_named() -> None:
    from dask.distributed import LocalCluster

    local = {"host": "127.0.0.1", "protocol": "tcp", "dashboard_address": None}
    http = {"dashboard": False, "dashboard_address": "127.0.0.1:0"}  # not on 8787
    with LocalCluster(n_workers=1, processes=False, scheduler_kwargs=http, **local) as cluster:
        [worker] = cluster.scheduler_info["workers"]
        assert runner.scheduler_problem(cluster.scheduler_address) is None
        problem = runner.scheduler_problem(worker)
    assert problem is not None and problem.startswith("answered as a dask Worker, not a scheduler")
