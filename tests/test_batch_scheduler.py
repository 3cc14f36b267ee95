"""``--scheduler`` addresses where no dask scheduler answers: said in seconds, one line.

The servers are real: a plain socket server (one that accepts and never answers, one
that writes bytes that are not dask's), an HTTP server (as the dashboard's port is),
a TLS server that completes TLS's handshake and says nothing, and dask workers and
schedulers of ``LocalCluster`` s (over TCP and over TLS, with certificates made by
``openssl``). The batch runs as a process of its own, so a
batch that hangs fails its test after ``BOUND_S`` instead of holding the suite.
"""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from diffviewer.batch import runner
from diffviewer.io import demo_pair

REPO = Path(__file__).resolve().parents[1]
#: Longest a refused batch may take: the probe's handshake wait, the interpreter's start.
BOUND_S = runner.PROBE_S + runner.HANDSHAKE_S + 20.0
#: The environment variable of dask's distributed.comm.require-encryption.
REQUIRE_ENCRYPTION = "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"
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


@contextlib.contextmanager
def scheduler_at(protocol: str, security: Any = None) -> Iterator[str]:
    """The address of the scheduler of a ``LocalCluster`` in this process, without
    workers, over ``protocol`` (with ``security``, a :class:`distributed.Security`, for
    TLS), its HTTP server not on the dashboard's 8787."""
    from dask.distributed import LocalCluster

    http = {"dashboard": False, "dashboard_address": "127.0.0.1:0"}
    with LocalCluster(
        n_workers=0,
        processes=False,
        host="127.0.0.1",
        protocol=protocol,
        security=security,
        dashboard_address=None,
        scheduler_kwargs=http,
    ) as cluster:
        yield cluster.scheduler_address


def batch_at(
    tmp_path: Path, address: str, env: dict[str, str] | None = None
) -> tuple[int, str, float]:
    """``diffviewer batch`` of the demo pair into ``tmp_path / "out"`` on the scheduler
    ``address``, as a process (with ``env`` added to its environment): its exit status,
    standard error and seconds."""
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
        env={**os.environ, **(env or {})},
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


def test_an_unencrypted_address_where_dask_requires_encryption_is_refused(tmp_path: Path) -> None:
    # dask's client refused it once connected: "error: internal error (RuntimeError:
    # encryption required by Dask configuration, refusing communication from/to ...)"
    import dask

    with scheduler_at("tcp") as address:
        code, err, _ = batch_at(tmp_path, address, {REQUIRE_ENCRYPTION: "true"})
        with dask.config.set({"distributed.comm.require-encryption": False}):
            assert runner.scheduler_problem(address) is None
    assert code == 2, err
    assert err.startswith(
        f"error: --scheduler {address}: dask's config sets "
        "distributed.comm.require-encryption, and a tcp:// address is not encrypted; give "
        "the scheduler's tls:// address and set distributed.comm.tls.ca-file and "
    ), err
    assert err.endswith(
        "or unset distributed.comm.require-encryption (in ~/.config/dask/, or the variable "
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION) to connect without encryption"
    ), err
    assert "internal" not in err and "\n" not in err
    assert not (tmp_path / "out").exists()


# tls:// addresses (the audit of the command line of 2026-12-08): they were not probed,
# so a port that completed TLS's handshake and never answered dask's held a batch without
# a word until it was killed, and a silent one for dask's 30 s connect timeout.


def _certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own authority) and its key."""
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    names = ["-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]
    subprocess.run(
        [*request, "-keyout", str(key), "-out", str(cert), *names],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Two self-signed certificates: the cluster's, and one of another authority."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: no certificate for a TLS scheduler")
    folder = tmp_path_factory.mktemp("tls")
    return {name: _certificate(folder, name) for name in ("cluster", "stranger")}


def tls_settings(cert: Path, key: Path) -> dict[str, str]:
    """dask's TLS settings of a client, as the environment variables dask reads."""
    prefix = "DASK_DISTRIBUTED__COMM__TLS__"
    return {
        f"{prefix}CA_FILE": str(cert),
        f"{prefix}CLIENT__CERT": str(cert),
        f"{prefix}CLIENT__KEY": str(key),
    }


def client_settings(cert: Path, key: Path, ca: Path | None = None) -> dict[str, str | None]:
    """The same as dask config keys (for ``dask.config.set``); ``ca`` trusted, else ``cert``."""
    return {
        "distributed.comm.tls.ca-file": str(ca or cert),
        "distributed.comm.tls.client.cert": str(cert),
        "distributed.comm.tls.client.key": str(key),
    }


def cluster_security(cert: Path, key: Path) -> Any:
    """A cluster's :class:`distributed.Security`: ``cert`` its authority, every role's
    certificate, with ``key``; encryption required."""
    from distributed.security import Security

    roles = {
        f"tls_{role}_{kind}": str(path)
        for role in ("scheduler", "worker", "client")
        for kind, path in (("cert", cert), ("key", key))
    }
    return Security(tls_ca_file=str(cert), require_encryption=True, **roles)


@contextlib.contextmanager
def tls_server(cert: Path, key: Path) -> Iterator[str]:
    """A TLS server on localhost that completes TLS's handshake with every client and then
    says nothing (an HTTPS server, a TLS proxy); its ``tls://`` address."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def handshake(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):  # a client that gave up
            held.append(context.wrap_socket(conn, server_side=True))

    def serve() -> None:
        with contextlib.suppress(OSError):  # the server closed: the test is over
            while True:
                conn, _ = server.accept()
                threading.Thread(target=handshake, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"tls://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
        for conn in held:
            conn.close()


@pytest.mark.parametrize(
    ("server", "why"),
    [
        # accepts and never answers: dask's connect timed out after 30 s
        (lambda c: socket_server(None), "no TLS handshake within 5 s"),
        # TLS's handshake made, dask's never: the batch hung until it was killed
        (lambda c: tls_server(*c), "no dask handshake within 5 s"),
    ],
    ids=["silent", "tls-silent"],
)
def test_a_tls_port_where_no_dask_scheduler_answers_is_said_in_seconds(
    tmp_path: Path, certificates: dict[str, tuple[Path, Path]], server, why: str
) -> None:
    with server(certificates["cluster"]) as address:
        address = address.replace("tcp://", "tls://")
        code, err, seconds = batch_at(tmp_path, address, tls_settings(*certificates["cluster"]))
    assert code == 2, err
    assert err.startswith(f"error: --scheduler {address}: answered but is not a dask scheduler")
    assert why in err and "'Scheduler at: tls://host:port'" in err and "\n" not in err, err
    assert seconds < runner.PROBE_S + runner.HANDSHAKE_S + 10.0
    assert not (tmp_path / "out").exists()


def test_a_tls_address_without_dask_tls_settings_says_which_to_give(
    certificates: dict[str, tuple[Path, Path]],
) -> None:
    # dask's client failed with "TLS expects a `ssl_context` argument ... (perhaps check
    # your TLS configuration?)", naming no setting, and the message asked for tcp://.
    import dask
    import distributed  # noqa: F401  (its config's defaults, which dask.config.set updates)

    unset = dict.fromkeys(client_settings(*certificates["cluster"]))
    with socket_server(None) as address, dask.config.set(unset):
        t0 = time.monotonic()
        problem = runner.scheduler_problem(address.replace("tcp://", "tls://"))
        assert time.monotonic() - t0 < 1.0  # said before any connection
    assert problem is not None and problem.startswith(
        "a tls:// address needs dask's TLS settings for a client, and none are set; give "
        "distributed.comm.tls.ca-file and distributed.comm.tls.client.cert"
    )
    assert "DASK_DISTRIBUTED__COMM__TLS__CA_FILE" in problem
    # The CA alone: no client context either, and which one is set is said.
    ca_only = {**unset, "distributed.comm.tls.ca-file": str(certificates["cluster"][0])}
    with socket_server(None) as address, dask.config.set(ca_only):
        problem = runner.scheduler_problem(address.replace("tcp://", "tls://"))
    assert problem is not None and problem.startswith(
        "a tls:// address needs dask's TLS settings for a client, and only "
        "distributed.comm.tls.ca-file is set; give "
    ), problem
    assert problem.endswith(", or give the scheduler's tcp:// address if it listens on one")
    # Where dask requires encryption the tcp:// address is not offered: it was refused in
    # turn ("... a tcp:// address is not encrypted").
    required = {**unset, "distributed.comm.require-encryption": True}
    with socket_server(None) as address, dask.config.set(required):
        problem = runner.scheduler_problem(address.replace("tcp://", "tls://"))
    assert problem is not None and problem.startswith("a tls:// address needs dask's TLS")
    assert "tcp://" not in problem, problem
    missing = client_settings(*certificates["cluster"], ca=Path("/nonexistent/ca.pem"))
    with socket_server(None) as address, dask.config.set(missing):
        problem = runner.scheduler_problem(address.replace("tcp://", "tls://"))
    assert problem is not None and problem.startswith("dask's TLS settings cannot be used (")
    assert "distributed.comm.tls.ca-file = /nonexistent/ca.pem" in problem


def test_a_tls_scheduler_is_taken_and_one_without_tls_or_of_another_authority_named(
    certificates: dict[str, tuple[Path, Path]],
) -> None:
    import dask

    with scheduler_at("tls", cluster_security(*certificates["cluster"])) as address:
        assert address.startswith("tls://")
        with dask.config.set(client_settings(*certificates["cluster"])):
            assert runner.scheduler_problem(address) is None
        # a tls:// address is taken where dask's config requires encryption
        required = {"distributed.comm.require-encryption": True}
        with dask.config.set({**client_settings(*certificates["cluster"]), **required}):
            assert runner.scheduler_problem(address) is None
        stranger = client_settings(*certificates["stranger"])
        with dask.config.set(stranger):
            problem = runner.scheduler_problem(address)
    assert problem is not None and problem.startswith(
        "its TLS certificate is not one dask's TLS settings trust ("
    )
    assert "distributed.comm.tls.ca-file" in problem
    with scheduler_at("tcp") as address:
        hostport = address.removeprefix("tcp://")
        with dask.config.set(client_settings(*certificates["cluster"])):
            problem = runner.scheduler_problem(f"tls://{hostport}")
        required = {"distributed.comm.require-encryption": True}
        with dask.config.set({**client_settings(*certificates["cluster"]), **required}):
            refused = runner.scheduler_problem(f"tls://{hostport}")
    assert problem is not None and problem.startswith("it answered without TLS (")
    assert problem.endswith(f"give its address as tcp://{hostport}")
    # where dask requires encryption, no tcp:// address is offered
    assert refused is not None and refused.startswith("it answered without TLS (")
    assert "tcp://" not in refused and "distributed.comm.require-encryption" in refused


# ws://, wss:// and ucx:// addresses: they were not probed, so a port where nothing
# listened, or that never answered, held a batch for dask's 30 s connect timeout, with a
# message that asked for a tcp:// address; a ws:// one was taken where dask's config
# requires encryption (dask's ws client does not check it); a ucx:// one failed "Can't
# instantiate abstract class UCXConnector".


@pytest.mark.parametrize("scheme", ["ws", "wss"])
def test_a_websocket_port_where_no_dask_scheduler_answers_is_said_in_seconds(
    certificates: dict[str, tuple[Path, Path]], scheme: str
) -> None:
    import dask
    import distributed  # noqa: F401  (its config's defaults, which dask.config.set updates)

    nothing = socket.create_server(("127.0.0.1", 0))
    port = nothing.getsockname()[1]
    nothing.close()
    with dask.config.set(client_settings(*certificates["cluster"])):
        refused = runner.scheduler_problem(f"{scheme}://127.0.0.1:{port}")
        with socket_server(None) as address:
            t0 = time.monotonic()
            silent = runner.scheduler_problem(address.replace("tcp://", f"{scheme}://"))
            seconds = time.monotonic() - t0
    assert refused is not None and refused.startswith("cannot connect to a dask scheduler there (")
    assert refused.endswith(
        f"give its address as {scheme}://host:port and check that it runs (dask scheduler)"
    )
    assert silent is not None and silent.startswith("answered but is not a dask scheduler (no ")
    assert f"'Scheduler at: {scheme}://host:port'" in silent, silent
    assert seconds < runner.HANDSHAKE_S + 2.0


def test_websocket_schedulers_are_taken_and_ws_refused_where_dask_requires_encryption(
    certificates: dict[str, tuple[Path, Path]],
) -> None:
    import dask

    required = {"distributed.comm.require-encryption": True}
    with scheduler_at("ws") as address:
        assert address.startswith("ws://")
        assert runner.scheduler_problem(address) is None
        with dask.config.set(required):
            unencrypted = runner.scheduler_problem(address)
    assert unencrypted is not None and unencrypted.startswith(
        "dask's config sets distributed.comm.require-encryption, and a ws:// address is not "
        "encrypted; give the scheduler's wss:// address and set distributed.comm.tls.ca-file"
    ), unencrypted
    settings = client_settings(*certificates["cluster"])
    with scheduler_at("wss", cluster_security(*certificates["cluster"])) as address:
        assert address.startswith("wss://")
        with dask.config.set({**settings, **required}):
            assert runner.scheduler_problem(address) is None
        with dask.config.set(dict.fromkeys(settings)):
            unset = runner.scheduler_problem(address)
    assert unset is not None and unset.startswith(
        "a wss:// address needs dask's TLS settings for a client, and none are set; give "
    )
    assert unset.endswith("or give the scheduler's ws:// address if it listens on one")


def test_a_ucx_address_without_its_package_names_the_package(tmp_path: Path) -> None:
    if importlib.util.find_spec("distributed_ucxx") is not None:
        pytest.skip("distributed-ucxx is installed: dask speaks ucx:// here")
    code, err, _ = batch_at(tmp_path, "ucx://127.0.0.1:8786")
    assert code == 2, err
    assert err == (
        "error: --scheduler ucx://127.0.0.1:8786: dask speaks ucx:// only with the package "
        "distributed-ucxx (conda-forge; on PyPI distributed-ucxx-cu12 or -cu13, for CUDA 12 "
        "or 13), which is not installed here; install it, or give the scheduler's tcp:// "
        "address if it listens on one"
    )
    assert not (tmp_path / "out").exists()
