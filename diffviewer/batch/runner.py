"""Run a list of pairs on ``dask.distributed``: plan (resume), cluster, results, summary.

Every pair is one task (:func:`diffviewer.batch.task.run_job`) on a ``LocalCluster``
of worker processes sized to the machine, or on a running scheduler. Workers read the
inputs and write the outputs themselves; only the summary rows travel back. The
summary is rewritten atomically as rows arrive (at most every ``SUMMARY_EVERY_S``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import logging
import math
import socket
import ssl
import sys
import textwrap
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any, TextIO

from diffviewer.atomic import remove_stale_staging, wait_for_running_staging
from diffviewer.batch import worker_signals
from diffviewer.batch.summary import (
    ERROR_KINDS,
    SUMMARY_ECSV,
    SUMMARY_FITS,
    complete_row,
    has_outputs,
    read_summary,
    row_of_outputs,
    rows_of,
    summary_lock,
    verdict_columns,
    write_summary,
)
from diffviewer.batch.task import PairJob, run_job
from diffviewer.companions import Companions, none_given
from diffviewer.config import SubtractionConfig
from diffviewer.errors import ClusterLost, DiffviewerError, InputError
from diffviewer.paths import (
    TEMPLATE_SEPARATOR,
    absolute_spec,
    batch_folder,
    ensure_not_input,
    parse_spec,
    template_specs,
)
from diffviewer.results import incomplete_reason
from diffviewer.termination import raise_if_terminated

#: Seconds between two summary writes while results arrive.
SUMMARY_EVERY_S = 2.0
#: Longest wait, seconds, for a pair still being written when a batch stops.
SETTLE_S = 120.0
#: Resident memory of a worker before its first pair (imports), bytes.
WORKER_BASE_BYTES = 300e6
#: Peak resident memory per science pixel of one pair, bytes: the GOTO pair (1850 x 1850)
#: peaks at 625 MB in a fresh process that holds 175 MB before (130 B/px); the limit is
#: twice the estimate. benchmarks/bench_batch.py prints the figure of the pairs it runs.
BYTES_PER_PIXEL = 150.0


@dataclasses.dataclass(frozen=True)
class BatchOptions:
    """How to run a batch.

    Attributes
    ----------
    out : Path
        Batch folder (``OUT/<name>/`` per pair, ``OUT/summary.ecsv``).
    config : SubtractionConfig
        Effective config of every pair.
    overwrite, strict : bool
        As ``diffviewer run``'s flags.
    retry_failed : bool
        Rerun pairs the previous summary lists as failed.
    products, compress : str, bool
        Which outputs each pair writes, and whether mask planes are compressed.
    workers : int or None
        Worker processes of the local cluster (None: sized to the machine).
    scheduler : str or None
        Address of a running scheduler (no local cluster then).
    read_files : tuple of Path
        Files the batch read (pairs list, config): never written over.
    companions : mapping of str to (Companions, tuple of Companions)
        Each pair's companion files and bit map, by name
        (:func:`diffviewer.companions.read_pairs_with_companions`); a pair not there has none.
    """

    out: Path
    config: SubtractionConfig
    overwrite: bool = False
    strict: bool = False
    retry_failed: bool = False
    products: str = "full"
    compress: bool = False
    workers: int | None = None
    scheduler: str | None = None
    read_files: tuple[Path, ...] = ()
    companions: Mapping[str, tuple[Companions, tuple[Companions, ...]]] = dataclasses.field(
        default_factory=dict
    )


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a (re)run does: the pairs to run, and the rows of pairs it does not run.

    Attributes
    ----------
    jobs : list of PairJob
        Pairs to run.
    kept : dict of str to dict
        Rows of pairs not run: ``skipped`` (complete outputs found), ``failed`` in the
        previous summary with the same inputs and config and not retried, ``refused``
        (another run's outputs are in the pair's folder and ``overwrite`` is off: the row
        is read from them, its error says why), or ``failed`` when what is in the way
        cannot be read as outputs.
    order : list of str
        Pair names in list order (the summary's row order).
    kept_failed : tuple of str
        The names of the pairs kept as failed from the previous summary (not retried).
    """

    jobs: list[PairJob]
    kept: dict[str, dict[str, Any]]
    order: list[str]
    kept_failed: tuple[str, ...] = ()


def _previous_rows(out: Path) -> dict[str, dict[str, Any]]:
    """Rows of the batch folder's previous summary, by name (none when absent/unreadable)."""
    if not (out / SUMMARY_ECSV).is_file():
        return {}
    try:
        return {str(r["name"]): r for r in rows_of(read_summary(out))}
    except InputError:
        return {}


def plan_batch(pairs: Sequence[tuple[str, str, str]], options: BatchOptions) -> Plan:
    """Decide, pair by pair, what a run into ``options.out`` does.

    A pair whose output folder is complete for these inputs and this config
    (:func:`diffviewer.results.incomplete_reason`) is skipped, its row read from the
    outputs; a pair the previous summary lists as failed with these inputs and this
    config is kept as failed unless ``retry_failed``; a pair whose folder holds another
    run's outputs is refused unless ``overwrite``, its row read from them (their figures,
    config digest and verdict stay in the summary) with what they are and how to replace
    them; a folder holding something else fails the pair at once; every other pair is
    run. A pair not run keeps the timings of the previous summary's row when that row
    describes the run its folder holds (:func:`_with_timings`).

    Parameters
    ----------
    pairs : sequence of (str, str, str)
        Science spec, template spec and name of each pair.
    options : BatchOptions

    Returns
    -------
    Plan
    """
    previous = _previous_rows(options.out)
    digest = options.config.digest()
    jobs: list[PairJob] = []
    kept: dict[str, dict[str, Any]] = {}
    kept_failed: list[str] = []
    for science, template, name in pairs:
        sci = absolute_spec(science)
        tmpl = TEMPLATE_SEPARATOR.join(absolute_spec(p) for p in template_specs(template))
        folder = options.out / name
        before = previous.get(name, {})
        given = options.companions.get(name) or none_given(len(template_specs(tmpl)))
        asked = (options.products, options.compress)
        reason = incomplete_reason(folder, sci, tmpl, digest, asked, given)
        if folder.exists() and not folder.is_dir():
            kept[name] = _refused_row(
                name,
                sci,
                tmpl,
                folder,
                digest,
                f"the pair's output folder {folder} is a file, not a folder; give the pair "
                "another name (the list's name column), or another --out",
            )
        elif reason is None:
            row = row_of_outputs(name, sci, tmpl, folder, "skipped", options.strict)
            kept[name] = _with_timings(row, before)
        elif (
            before.get("status") == "failed"
            and same_run(before, sci, tmpl, digest)
            and not options.retry_failed
        ):
            kept[name] = before
            kept_failed.append(name)
        elif not options.overwrite and folder.is_dir() and any(folder.iterdir()):
            kept[name] = _in_the_way(name, sci, tmpl, folder, digest, reason, before)
        else:
            jobs.append(
                PairJob(
                    name,
                    sci,
                    tmpl,
                    str(folder),
                    options.config,
                    overwrite=options.overwrite,
                    strict=options.strict,
                    read_files=tuple(str(p) for p in options.read_files),
                    products=options.products,
                    compress=options.compress,
                    companions=given,
                )
            )
    return Plan(jobs, kept, [name for _, _, name in pairs], tuple(kept_failed))


def _in_the_way(
    name: str,
    science: str,
    template: str,
    folder: Path,
    digest: str,
    reason: str,
    before: dict[str, Any],
) -> dict[str, Any]:
    """The row of a pair not run because its folder holds what this run is not to replace.

    Another run's outputs (other inputs, config or products): ``refused``, the row read
    from them, so a rerun with the config left off no longer turned complete pairs into
    failures with NaN figures and dropped their verdicts; ``--overwrite`` replaces them.
    Anything else (not readable as outputs of this version: the user's own folder, say):
    ``failed``, ``input``, saying so (it was called "another run's outputs (... is not a
    diffviewer output folder)").
    """
    try:
        row = row_of_outputs(name, science, template, folder, "refused", strict=False)
    except (DiffviewerError, KeyError, TypeError, ValueError):  # not outputs, or of another version
        return _refused_row(
            name,
            science,
            template,
            folder,
            digest,
            f"output folder {folder} holds files this batch cannot read as a run's outputs "
            f"({reason}); give the pair another name (the list's name column), or rerun "
            "with --overwrite --retry-failed to write its outputs there (files of the names "
            "a run writes are replaced, others kept)",
        )
    error = (
        f"not run: output folder {folder} holds another run's outputs ({reason}), which this "
        "row describes; rerun with --overwrite to replace them, or give the pair another name"
    )
    return _with_timings(row, before) | {"error_kind": "input", "error": error}


def same_run(before: dict[str, Any], science: str, template: str, digest: str) -> bool:
    """Whether a previous summary's row is of a run of these inputs and this config: its
    specs equal, its config digest equal or, from a summary older than the column,
    absent (unknown: taken as the same, so an old summary's failures are kept unless
    ``--retry-failed``, as before)."""
    return (
        bool(before)
        and (before.get("science"), before.get("template")) == (science, template)
        and before.get("config_digest", "") in ("", digest)
    )


def _with_timings(row: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """A row read from a pair's outputs, with the timings of the previous summary's row
    when that row describes the same run (same inputs, a config digest equal or, from an
    older summary, absent), else NaN: the batch alone times a pair."""
    same = same_run(before, row["science"], row["template"], row["config_digest"]) and (
        has_outputs(before)
    )
    timings = ("seconds", "peak_memory")
    return row | {k: float(before.get(k, math.nan)) if same else math.nan for k in timings}


def science_pixels(spec: str) -> int | None:
    """Pixels of an image from its FITS header (None when it cannot be told cheaply)."""
    from astropy.io import fits

    path, ext = parse_spec(spec)
    try:
        # Before any thread runs: the worker reading the pair says what is wrong with the
        # file, with the pair's name (astropy's "may have been truncated" came here first).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(path, memmap=True) as hdul:
                hdus = [hdul[ext]] if ext is not None else list(hdul)
                shapes = [getattr(hdu, "shape", ()) for hdu in hdus]
        for shape in shapes:
            if len(shape) >= 2:
                return int(math.prod(shape[-2:]))
    except (OSError, KeyError, IndexError, ValueError):
        return None
    return None


def worker_layout(
    jobs: Sequence[PairJob], workers: int | None, total_memory: float, cores: int
) -> tuple[int, float]:
    """Worker processes and the memory limit of each, from the size of the pairs.

    One pair needs about ``WORKER_BASE_BYTES + BYTES_PER_PIXEL * pixels`` (the
    largest science image of the list, from every pair's header: sized on the first 20,
    a night of cutouts followed by one large pair had its worker killed twice there);
    the limit is twice that, and there are as many workers as cores, pairs and 90 % of
    the memory allow.

    Parameters
    ----------
    jobs : sequence of PairJob
        The pairs to run.
    workers : int or None
        Workers asked for (None: as many as fit). Never more than ``cores`` nor the
        pairs: a one-thread worker beyond them only shares the cores and costs its
        start-up (on 2 cores, ``--workers 16`` ran the demo pair in 33 s, not 8.5 s;
        the audit's 64 took 155 s).
    total_memory : float
        Memory of the machine, bytes.
    cores : int
        CPU cores.

    Returns
    -------
    (int, float)
        Workers, and the memory limit of each in bytes.
    """
    sizes = [science_pixels(j.science) for j in jobs]
    pixels = max([s for s in sizes if s is not None], default=4096 * 2048)
    need = 2.0 * (WORKER_BASE_BYTES + BYTES_PER_PIXEL * pixels)
    budget = 0.9 * total_memory
    fit = max(1, int(budget // need))
    most = max(1, min(cores, len(jobs)))
    n = min(workers, most) if workers else min(most, fit)
    return n, min(need, budget / n) if n <= fit else budget / n


def fewer_workers_note(asked: int, started: int, cores: int) -> str:
    """The line saying that ``--workers asked`` started ``started`` (:func:`worker_layout`
    caps it at the ``cores`` this process may run on and at the pairs to run)."""
    why = (
        f"as many as the cores this process may run on ({cores})"
        if started == cores
        else "one per pair to run"
    )
    return (
        f"note: --workers {asked}: starting {started}, {why}; a worker runs one pair on one "
        "thread, so more would only share the cores, each costing 0.3 GB and seconds to start"
    )


#: Loggers whose messages while closing an interrupted batch are shutdown noise.
SHUTDOWN_LOGGERS = ("distributed", "tornado", "asyncio")


@contextlib.contextmanager
def _quiet_when_interrupted() -> Iterator[None]:
    """Silence dask's, tornado's and asyncio's logs while an interrupted batch closes.

    Closing workers that still hold a pair (Ctrl-C, SIGTERM, SIGHUP) makes them log
    connection and timeout tracebacks on a loaded machine; the user asked for the stop,
    and the summary says which pairs finished.
    """
    try:
        yield
    except BaseException:
        for name in SHUTDOWN_LOGGERS:
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)
        raise


#: The dask client's loggers that report a lost scheduler (with tracebacks).
CLIENT_LOGGERS = ("distributed.client", "distributed.batched")


@contextlib.contextmanager
def _client_errors_silenced() -> Iterator[None]:
    """Silence the dask client's own error log while the block runs.

    A client that loses its scheduler logs each failed reconnection with a traceback,
    and its batched stream to the scheduler logs the stream closing with another
    (:data:`CLIENT_LOGGERS`); the batch says it once (:class:`~diffviewer.errors.ClusterLost`)
    with what to do.
    """
    loggers = [logging.getLogger(name) for name in CLIENT_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


#: Seconds a scheduler's TCP port is given to accept a probe before the client is made.
PROBE_S = 5.0
#: Seconds a scheduler is given to answer dask's handshake and say what it is (and, at a
#: ``tls://`` or ``wss://`` address, to answer the TLS handshake before it). A dask
#: server sends its handshake as soon as it accepts a connection (0.2 ms on localhost);
#: dask's client waits for it without a limit, so a port that accepts and never answers
#: (the dashboard's 8787, any HTTP server; over TLS, any server that completes TLS's
#: handshake and no more) held a batch for minutes in silence.
HANDSHAKE_S = 5.0
#: The port a dask scheduler listens on by default (its dashboard: 8787).
SCHEDULER_PORT = 8786
#: The protocols whose addresses are probed: dask's TCP, TLS over TCP, and its WebSocket,
#: plain and over TLS (all of them over a TCP port).
PROBED = ("tcp", "tls", "ws", "wss")
#: The encrypted protocols, each with the unencrypted one it runs over TLS.
ENCRYPTED = {"tls": "tcp", "wss": "ws"}
#: Protocols dask speaks only through a package of its own: the package's module, and the
#: package as it is installed.
PROTOCOL_PACKAGES = {
    "ucx": (
        "distributed_ucxx",
        "distributed-ucxx (conda-forge; on PyPI distributed-ucxx-cu12 or -cu13, for CUDA 12 or 13)",
    )
}
#: dask's settings (under ``distributed.comm.tls``) of the files a ``tls://`` (and
#: ``wss://``) client reads.
TLS_FILES = ("ca-file", "client.cert", "client.key")
#: dask's settings a ``tls://`` (and ``wss://``) client needs (its config keys).
TLS_SETTINGS = (
    "distributed.comm.tls.ca-file and distributed.comm.tls.client.cert (and "
    "distributed.comm.tls.client.key, when the key is in a file of its own)"
)


def _known_address(address: str) -> tuple[str, str, int] | None:
    """Protocol, host and port of an ``address`` of a protocol probed (:data:`PROBED`) or
    brought by a package (:data:`PROTOCOL_PACKAGES`); None for another protocol, or an
    address dask cannot parse (its client says what is wrong with it)."""
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        scheme, location = parse_address(address)
        host, port = parse_host_port(location)
    except (ValueError, TypeError):
        return None
    known = scheme in PROBED or scheme in PROTOCOL_PACKAGES
    return (scheme, host, int(port)) if known else None


def _as_said(setting: str) -> str:
    """A TLS setting for a message: the file it names, or ``PEM text`` for one given inline."""
    return "PEM text" if "\n" in setting else setting


def _tls_context(scheme: str) -> tuple[ssl.SSLContext | None, str | None]:
    """The TLS context dask's client takes for a ``scheme://`` address, ``tls://`` or
    ``wss://`` (from dask's config, as :class:`distributed.security.Security` reads it),
    or None and why there is none.

    Without it dask's client failed with "TLS expects a `ssl_context` argument of type
    ssl.SSLContext (perhaps check your TLS configuration?)", naming no setting.
    """
    import dask
    from distributed.security import Security

    try:
        context = Security().get_connection_args("client")["ssl_context"]
    except (OSError, ValueError) as exc:  # a missing file, a bad PEM (ssl.SSLError), a version
        given = {key: dask.config.get(f"distributed.comm.tls.{key}", None) for key in TLS_FILES}
        named = ", ".join(
            f"distributed.comm.tls.{key} = {_as_said(str(value))}"
            for key, value in given.items()
            if value
        )
        return None, (
            f"dask's TLS settings cannot be used ({exc}; {named}); check the files they name"
        )
    if context is None:
        set_keys = [
            f"distributed.comm.tls.{key}"
            for key in TLS_FILES
            if dask.config.get(f"distributed.comm.tls.{key}", None)
        ]
        verb = "is" if len(set_keys) == 1 else "are"
        which = f"only {' and '.join(set_keys)} {verb} set" if set_keys else "none are set"
        return None, (
            f"a {scheme}:// address needs dask's TLS settings for a client, and {which}; give "
            f"{TLS_SETTINGS} in dask's config (~/.config/dask/distributed.yaml, or the "
            "variables DASK_DISTRIBUTED__COMM__TLS__CA_FILE, "
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT and ..._CLIENT__KEY)"
            + _unencrypted_way(scheme)
        )
    return context, None


def _encryption_required() -> bool:
    """Whether dask's config requires encryption (``distributed.comm.require-encryption``),
    read as dask's client reads it."""
    from distributed.security import Security

    return bool(Security().require_encryption)


def _unencrypted_way(scheme: str) -> str:
    """The clause offering the unencrypted protocol ``scheme://`` runs over TLS, for a
    problem with a ``tls://`` or ``wss://`` address; empty where dask's config requires
    encryption (the ``tcp://`` address offered was then refused in turn)."""
    if _encryption_required():
        return ""
    return f", or give the scheduler's {ENCRYPTED[scheme]}:// address if it listens on one"


def _encryption_problem(scheme: str) -> str | None:
    """Why dask's config forbids a ``scheme://`` address: it requires encryption
    (``distributed.comm.require-encryption``, read as dask's client reads it) and the
    protocol is not encrypted; None when it may be used.

    dask's client refused a ``tcp://`` address only once connected, with a RuntimeError
    ("encryption required by Dask configuration, refusing communication"): an internal
    error to the batch; a ``ws://`` one it does not check at all, and would have sent the
    batch unencrypted.
    """
    if scheme in ENCRYPTED or not _encryption_required():
        return None
    encrypted = {plain: tls for tls, plain in ENCRYPTED.items()}.get(scheme, "tls")
    return (
        f"dask's config sets distributed.comm.require-encryption, and a {scheme}:// "
        f"address is not encrypted; give the scheduler's {encrypted}:// address and set "
        f"{TLS_SETTINGS} in dask's config, or unset distributed.comm.require-encryption "
        "(in ~/.config/dask/, or the variable DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION) "
        "to connect without encryption"
    )


def _package_problem(scheme: str) -> str | None:
    """Why dask cannot speak ``scheme://`` here: the package that brings it
    (:data:`PROTOCOL_PACKAGES`) is not installed; None when it is, or none is needed.

    Without ``distributed-ucxx`` dask's client failed a ``ucx://`` address with "Can't
    instantiate abstract class UCXConnector", and the batch asked for a ``tcp://`` one.
    """
    if scheme not in PROTOCOL_PACKAGES:
        return None
    module, package = PROTOCOL_PACKAGES[scheme]
    if importlib.util.find_spec(module) is not None:
        return None
    return (
        f"dask speaks {scheme}:// only with the package {package}, which is not installed "
        "here; install it, or give the scheduler's tcp:// address if it listens on one"
    )


def _refused(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot answer, when that is known at once (its host has no
    address, nothing listens on its port); None when it accepts a connection, or when it
    is slow or filtered (the handshake's wait decides).

    dask's client retries a refused connection until its timeout: a mistyped port was
    reported after 30 s.
    """
    try:
        with socket.create_connection((host, port), timeout=PROBE_S):
            return None
    except (ConnectionRefusedError, socket.gaierror) as exc:
        return exc.strerror or str(exc)
    except OSError:
        return None


def _not_a_scheduler(answer: str, scheme: str) -> str:
    """The problem of an address where something that is no dask scheduler answered."""
    return (
        f"answered but is not a dask scheduler ({answer}; the dashboard's port? a scheduler "
        f"listens on {SCHEDULER_PORT} by default); give the address the scheduler prints "
        f"when it starts ('Scheduler at: {scheme}://host:port')"
    )


def _tls_problem(scheme: str, host: str, port: int, context: ssl.SSLContext) -> str | None:
    """What is wrong with the server at ``host:port`` for a ``scheme://`` address
    (``tls://`` or ``wss://``): None when it completes TLS's handshake with ``context``
    within :data:`HANDSHAKE_S`, else a clause to follow ``--scheduler ADDRESS:``.

    dask's client gives a silent port its connect timeout (30 s) for this handshake,
    and, once it is made, waits for dask's own without a limit.
    """
    try:
        with (
            socket.create_connection((host, port), timeout=HANDSHAKE_S) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return None
    except ssl.SSLCertVerificationError as exc:
        return (
            f"its TLS certificate is not one dask's TLS settings trust ({exc.verify_message}); "
            "check that distributed.comm.tls.ca-file names the authority that signed the "
            "scheduler's certificate"
        )
    except TimeoutError:
        return _not_a_scheduler(f"no TLS handshake within {HANDSHAKE_S:g} s", scheme)
    except (ssl.SSLEOFError, ConnectionError):
        return _not_a_scheduler("it closed the connection during the TLS handshake", scheme)
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "ALERT" in reason:  # the server refused this client (its certificate, a version)
            return (
                f"it refused the TLS handshake ({reason}); check that it takes this "
                f"client's certificate ({TLS_SETTINGS})"
            )
        if _encryption_required():
            return (
                f"it answered without TLS ({reason}), and dask's config requires "
                "encryption (distributed.comm.require-encryption): a scheduler without TLS "
                "cannot be used; give the address of one with TLS"
            )
        return (
            f"it answered without TLS ({reason}); if it is a scheduler without TLS, give "
            f"its address as {ENCRYPTED[scheme]}://{host}:{port}"
        )
    except OSError as exc:
        return _not_a_scheduler(f"the TLS handshake failed: {exc}", scheme)


async def _server_type(address: str, context: ssl.SSLContext | None) -> str:
    """The type of the dask server at ``address`` (``Scheduler``, ``Worker``, ``Nanny``):
    dask's handshake (over TLS with ``context``), then its ``identity`` call. Raises
    whatever a peer that does not speak dask's protocol makes dask's reader raise."""
    from distributed.comm import connect

    tls = {} if context is None else {"ssl_context": context}
    comm = await connect(address, timeout=HANDSHAKE_S, **tls)
    try:
        await comm.write({"op": "identity", "reply": True})
        reply = await comm.read()
    finally:
        comm.abort()
    return str(reply.get("type", "")) if isinstance(reply, dict) else ""


def scheduler_problem(address: str) -> str | None:
    """What is wrong with ``--scheduler address``, in a few seconds; None when a dask
    scheduler answers there (or for a protocol dask's client judges: one neither probed
    nor brought by a package, one brought by a package that is installed, and an address
    dask cannot parse).

    An unencrypted protocol is refused when dask's config requires encryption
    (:func:`_encryption_problem`), and one whose package is not installed
    (:func:`_package_problem`). The port of a probed protocol (:data:`PROBED`) is checked
    to be in range, the connection to be accepted (:func:`_refused`), and the server to
    answer dask's handshake and to say it is a scheduler within :data:`HANDSHAKE_S`.
    Anything else answering there (an HTTP server such as the dashboard, a port that
    never answers, one that sends other bytes, which dask read as a 3 EiB message and
    failed with a MemoryError) is said to be no scheduler, with the likely mix-up. A
    ``tls://`` or ``wss://`` address needs dask's TLS settings (:func:`_tls_context`), and
    its server to complete TLS's handshake with them within :data:`HANDSHAKE_S` first
    (:func:`_tls_problem`).

    Parameters
    ----------
    address : str
        The scheduler's address, ``tcp://host:port``, ``tls://host:port``,
        ``ws://host:port``, ``wss://host:port`` or ``ucx://host:port``.

    Returns
    -------
    str or None
        The problem, a clause to follow ``--scheduler ADDRESS:``.
    """
    where = _known_address(address)
    if where is None:
        return None
    scheme, host, port = where
    problem = _encryption_problem(scheme) or _package_problem(scheme)
    if problem is not None or scheme not in PROBED:
        return problem
    if not 0 < port < 65536:
        return (
            f"port {port} is out of range (1-65535); a dask scheduler listens on "
            f"{SCHEDULER_PORT} by default"
        )
    context = None
    if scheme in ENCRYPTED:
        context, problem = _tls_context(scheme)
        if problem is not None:
            return problem
    why = _refused(host, port)
    if why is not None:
        return (
            f"cannot connect to a dask scheduler there ({why}); give its address as "
            f"{scheme}://host:port and check that it runs (dask scheduler)"
        )
    if context is not None:
        problem = _tls_problem(scheme, host, port, context)
        if problem is not None:
            return problem
    try:
        kind = asyncio.run(asyncio.wait_for(_server_type(address, context), HANDSHAKE_S))
    except TimeoutError:
        answer = f"no dask handshake within {HANDSHAKE_S:g} s"
    except OSError:  # dask's CommClosedError too
        answer = "it closed the connection without a dask handshake" + (
            "" if context is None else " (after TLS's: does it take this client's certificate?)"
        )
    except Exception:  # whatever dask's reader makes of other bytes (MemoryError, ValueError)
        answer = "it sent bytes that are not dask's protocol"
    else:
        if kind == "Scheduler":
            return None
        return (
            f"answered as a dask {kind or 'server'}, not a scheduler; give the scheduler's "
            f"address (its workers' logs name it: 'Registered to: "
            f"{scheme}://host:{SCHEDULER_PORT}')"
        )
    return _not_a_scheduler(answer, scheme)


def _connected(address: str) -> Any:
    """A client of the scheduler at ``address``; an address that cannot be reached, or
    where no dask scheduler answers (:func:`scheduler_problem`), is the user's to mend
    (:class:`~diffviewer.errors.InputError`), not an internal error."""
    from dask.distributed import Client

    problem = scheduler_problem(address)
    if problem is not None:
        raise InputError(f"--scheduler {address}: {problem}")
    try:
        return Client(address, timeout="30s")
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(
            f"--scheduler {address}: cannot connect to a dask scheduler there ({exc}); "
            "give its address as tcp://host:port and check that it runs (dask scheduler)"
        ) from None


@contextlib.contextmanager
def dask_client(
    options: BatchOptions,
    jobs: Sequence[PairJob],
    say: Callable[[str], None] | None = None,
) -> Iterator[Any]:
    """A client of a fresh ``LocalCluster``, or of the scheduler at ``options.scheduler``.

    The local workers are one-thread processes (the engine's numpy work is not shared
    between pairs), no more than the cores this process may run on (its CPU affinity: a
    Slurm allocation, ``taskset``) nor the pairs, ``--workers`` too (said through
    ``say``, standard error when None); dask's pause and spill thresholds are off, since
    a task holds no dask data, and a worker dying twice on one pair fails that pair.
    Their own logs are silenced: each pair's row and error line say what became of it.
    The local scheduler serves no dashboard, and its HTTP server (dask's health and
    metrics routes) takes a free port on localhost: on dask's default 8787 it printed
    dask's "Port 8787 is already in use" warning whenever another dask ran there.
    """
    import dask
    import psutil
    from dask.distributed import Client, LocalCluster

    from diffviewer.engine.lent import usable_cores

    settings = {
        "distributed.worker.memory.target": False,
        "distributed.worker.memory.spill": False,
        "distributed.worker.memory.pause": False,
        "distributed.scheduler.allowed-failures": 1,
        # A worker holds the one pair it runs: with dask's default of 1.1 a one-thread
        # worker was also handed the next pair, whose failure count rose when the worker
        # died under the first, so a pair that killed its worker twice failed a second
        # pair that never ran. (A running scheduler keeps its own setting.)
        "distributed.scheduler.worker-saturation": 1.0,
    }
    with dask.config.set(settings):
        if options.scheduler:
            with (
                _client_errors_silenced(),  # outermost: the client logs while it closes too
                _connected(options.scheduler) as client,
                _quiet_when_interrupted(),
            ):
                yield client
            return
        cores = usable_cores()
        n, limit = worker_layout(jobs, options.workers, psutil.virtual_memory().total, cores)
        if options.workers and n < options.workers:
            (say or _to_stderr)(fewer_workers_note(options.workers, n, cores))
        worker_signals.start_resource_tracker()
        with (
            LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                memory_limit=int(limit),
                dashboard_address=None,
                scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                silence_logs=logging.CRITICAL,
                preload=[worker_signals.__name__],
            ) as cluster,
            Client(cluster) as client,
            _quiet_when_interrupted(),
        ):
            yield client


def _to_stderr(text: str) -> None:
    """Print a line on standard error (where a batch's notes go without a progress bar)."""
    print(text, file=sys.stderr)


class BatchProgress:
    """A one-line progress display: pairs done, failed, rate, time left.

    Parameters
    ----------
    total : int
        Pairs to run.
    stream : TextIO
        Where to draw (a terminal).
    """

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream = total, stream
        self.done = self.failed = 0
        self.t0 = time.perf_counter()

    def line(self) -> str:
        """The current line."""
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        rate = self.done / elapsed * 60.0
        left = (self.total - self.done) / (self.done / elapsed) if self.done else math.nan
        eta = time.strftime("%H:%M:%S", time.gmtime(left)) if math.isfinite(left) else "--:--:--"
        return (
            f"{self.done}/{self.total} pairs done, {self.failed} failed, "
            f"{rate:.1f} pairs/min, {eta} left"
        )

    def update(self, failed: bool) -> None:
        """Count one finished pair and redraw."""
        self.done += 1
        self.failed += failed
        self.stream.write(f"\r{self.line()}\x1b[K")
        self.stream.flush()

    def say(self, text: str) -> None:
        """Print a line above the bar."""
        self.stream.write(f"\r\x1b[K{text}\n{self.line()}")
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line."""
        self.stream.write("\n")
        self.stream.flush()


def death_advice(client: Any, scheduler: str | None) -> str:
    """What to do about a pair whose worker died under it, on the cluster it ran on: the
    running scheduler's workers have limits of their own; the local ones, the limit
    :func:`worker_layout` gave them."""
    if scheduler:
        return "check the workers' memory limit (dask worker --memory-limit) and their logs"
    workers = client.scheduler_info().get("workers", {}).values()
    limits = [w.get("memory_limit") or 0 for w in workers]
    limit = f"{max(limits) / 1e9:.1f} GB" if any(limits) else "its memory limit"
    return (
        f"a worker may use {limit} (twice the need estimated from the list's largest "
        "science image): a pair that needs more, or that crashes the interpreter, kills it; "
        "run the pair alone with diffviewer run to see which"
    )


def _lost_row(job: PairJob, exc: BaseException, advice: str) -> dict[str, Any]:
    """The row of a pair whose task never returned (its worker died under it), with
    ``advice`` (:func:`death_advice`) and dask's reason, cut at a word."""
    reason = textwrap.shorten(" ".join(str(exc).split()), 300, placeholder=" ...")
    return {
        "name": job.name,
        "science": job.science,
        "template": job.template,
        "output": job.out,
        "config_digest": job.config.digest(),
        "status": "failed",
        "error_kind": "internal",
        "error": f"the worker running it died ({type(exc).__name__}: {reason}); {advice}",
    }


def _cluster_lost(options: BatchOptions, cancelled: Sequence[BaseException]) -> ClusterLost:
    """The error of a batch whose tasks were cancelled under it (scheduler or client lost),
    or whose results could not be fetched once it was."""
    reasons = sorted({str(getattr(exc, "reason", "")) or type(exc).__name__ for exc in cancelled})
    where = f"at {options.scheduler}" if options.scheduler else "of the local cluster"
    again = "restart it and its workers, then " if options.scheduler else ""
    return ClusterLost(
        f"lost the dask scheduler {where} ({', '.join(reasons)}); {len(cancelled)} pairs had "
        f"not come back: {options.out / SUMMARY_ECSV} lists those whose outputs are complete "
        f"and not the others; {again}rerun the same command to run them (finished pairs are "
        "skipped)"
    )


def no_workers_note(address: str) -> str:
    """What a batch says when the scheduler it joined has no worker: its pairs wait."""
    return (
        f"note: the dask scheduler at {address} has no workers; the pairs wait until one "
        f"joins (start one with: dask worker {address}), or press Ctrl+C to stop"
    )


def kept_failures_note(names: Sequence[str]) -> str:
    """The line saying which failures of the last run a rerun keeps without retrying them."""
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (
        f"note: {len(names)} failure{'s' if len(names) != 1 else ''} kept from the last run "
        f"({shown}; not retried; pass --retry-failed)"
    )


def run_batch(
    pairs: Sequence[tuple[str, str, str]],
    options: BatchOptions,
    *,
    progress: bool = False,
    say: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run a batch and write its summary; return the summary rows in list order.

    Parameters
    ----------
    pairs : sequence of (str, str, str)
        Science spec, template spec and name per pair.
    options : BatchOptions
    progress : bool
        Draw a progress line on standard error.
    say : callable, optional
        Where warnings and notes go, one line each (standard error when None).

    Returns
    -------
    list of dict
        The rows of the list's pairs, as written to ``summary.ecsv`` (which keeps after
        them the rows of pairs other lists ran into the same folder).
    """
    if options.out.exists() and not options.out.is_dir():
        raise InputError(
            f"--out {options.out} exists and is not a folder; choose a folder for the "
            "batch's outputs"
        )
    _refuse_summary_over_inputs(pairs, options)
    with batch_folder(options.out):
        remove_stale_staging(options.out)
        plan = plan_batch(pairs, options)
        return _run_plan(plan, options, progress=progress, say=say)


def _run_plan(
    plan: Plan,
    options: BatchOptions,
    *,
    progress: bool,
    say: Callable[[str], None] | None,
) -> list[dict[str, Any]]:
    """:func:`run_batch` once its folder is made and its plan drawn: the pairs to run run,
    and the summary written with the rows of those kept."""
    rows = dict(plan.kept)
    bar = BatchProgress(len(plan.jobs), sys.stderr) if progress and plan.jobs else None
    tell = say or (bar.say if bar else _to_stderr)
    if plan.kept_failed:
        tell(kept_failures_note(plan.kept_failed))
    for name, row in plan.kept.items():  # failed or refused before running (a folder in the way)
        if row["status"] in ("failed", "refused") and name not in plan.kept_failed:
            tell(f"error: {name}: {row['error']}")
    last_write = time.monotonic()

    def ordered() -> list[dict[str, Any]]:
        return [complete_row(_with_verdict(rows[n])) for n in plan.order if n in rows]

    try:
        if plan.jobs:
            from dask.distributed import as_completed

            with dask_client(options, plan.jobs, tell) as client:
                if options.scheduler and not client.scheduler_info()["workers"]:
                    tell(no_workers_note(options.scheduler))
                advice = death_advice(client, options.scheduler)
                futures = client.map(run_job, plan.jobs, pure=False)
                job_of = {f.key: j for f, j in zip(futures, plan.jobs, strict=True)}
                cancelled: list[BaseException] = []
                for future in as_completed(futures):
                    raise_if_terminated()  # a signal whose exception dask's code swallowed
                    job = job_of[future.key]
                    try:
                        row = future.result()
                    except Exception as exc:
                        if isinstance(exc, CancelledError | OSError) or client.status != "running":
                            # the scheduler is lost (a result finished before it went cannot
                            # be fetched either: CommClosedError, an OSError): not run, nor
                            # failed; its outputs, when complete, are listed below
                            # (_finished_unreported). A worker that died raises KilledWorker.
                            cancelled.append(exc)
                            future.release()
                            continue
                        row = _lost_row(job, exc, advice)  # the worker died
                    deaths = _worker_deaths(client, future.key)
                    future.release()
                    if deaths and row["status"] != "failed":
                        tell(
                            f"warning: {job.name}: the worker running it died {deaths} "
                            "time(s) (memory, a signal: see the worker's log); dask ran it "
                            "again on another, and its time and memory are the last run's"
                        )
                    for note in row.pop("messages", []):
                        tell(f"warning: {job.name}: {note}")
                    if row["status"] == "failed":
                        tell(f"error: {job.name}: {row['error']}")
                    rows[job.name] = row
                    if bar:
                        bar.update(row["status"] == "failed")
                    if time.monotonic() - last_write > SUMMARY_EVERY_S:
                        _write_rows(options.out, ordered)
                        last_write = time.monotonic()
                if cancelled:
                    raise _cluster_lost(options, cancelled)
    finally:
        if bar:
            bar.close()
        for path in wait_for_running_staging(options.out, SETTLE_S):
            tell(f"warning: {path.name} is still being written by a process of this machine")
        remove_stale_staging(options.out)
        rows |= _finished_unreported(plan.jobs, rows, options)
        if rows:  # nothing to summarise when no pair ran nor was kept (no scheduler)
            _write_rows(options.out, ordered)
    return ordered()


def _worker_deaths(client: Any, key: Any) -> int:
    """How many workers died running a finished task (the scheduler's count of them,
    ``TaskState.suspicious``, which dask's retry on another worker keeps); 0 when the
    scheduler no longer knows the task or cannot be asked."""
    try:
        return int(client.run_on_scheduler(_suspicious, key=key))
    except Exception:  # a scheduler going away: nothing to tell of the task
        return 0


def _suspicious(dask_scheduler: Any, key: Any) -> int:
    """On the scheduler: :func:`_worker_deaths` of ``key``."""
    task = dask_scheduler.tasks.get(key)
    return 0 if task is None else int(task.suspicious)


def _write_rows(out: Path, ordered: Callable[[], list[dict[str, Any]]]) -> None:
    """Write the summary under its lock: this run's rows (``ordered()``, made there, with
    the verdicts their folders hold), then the rows on disk of pairs this run's list does
    not name, as they are (another list run into the same folder: its rows were dropped,
    and Review and Export verdicts lost its pairs)."""
    with summary_lock(out):
        rows = ordered()
        names = {row["name"] for row in rows}
        others = [row for name, row in _previous_rows(out).items() if name not in names]
        write_summary(out, [*rows, *others])


def _refused_row(
    name: str, science: str, template: str, folder: Path, digest: str, error: str
) -> dict[str, Any]:
    """The row of a pair failed before running: its output folder is in the way, and holds
    no outputs to describe (``digest``: the config it was to run with)."""
    return {
        "name": name,
        "science": science,
        "template": template,
        "output": str(folder),
        "config_digest": digest,
        "status": "failed",
        "error_kind": "input",
        "error": error,
    }


def _with_verdict(row: dict[str, Any]) -> dict[str, Any]:
    """A pair's row with the verdict its folder holds now (given while the batch runs, in
    the review window), so no summary write drops it; a failed pair without outputs has
    none (one failed by ``--strict``'s guard is judged in the review)."""
    if not has_outputs(row):
        return row
    try:
        return row | verdict_columns(row["output"])
    except InputError:  # a damaged verdict file: the row as it was
        return row


def _refuse_summary_over_inputs(
    pairs: Sequence[tuple[str, str, str]], options: BatchOptions
) -> None:
    """Refuse, before anything runs, a batch whose summary files would be one of its inputs.

    Raises
    ------
    OutputError
        Naming the input (an image, its weight or mask, the pairs list, the config file
        or the star list) that ``OUT/summary.ecsv`` or ``OUT/summary.fits`` is.
    """
    inputs: list[str | Path] = [*options.read_files]
    for science, template, _ in pairs:
        inputs += [science, *template_specs(template)]
    if options.config.candidates.source_list:
        inputs.append(options.config.candidates.source_list)
    for name in (SUMMARY_ECSV, SUMMARY_FITS):
        ensure_not_input(options.out / name, inputs)


def _finished_unreported(
    jobs: Sequence[PairJob], rows: dict[str, dict[str, Any]], options: BatchOptions
) -> dict[str, dict[str, Any]]:
    """Rows of pairs whose outputs are complete but whose result never came back.

    An interrupted batch closes its workers after they finish the pair they hold; the
    summary then lists those pairs too, read from their outputs. Complete means complete
    for this run (its config, ``--products`` and ``--compress``), as a rerun judges it,
    so an earlier run's outputs of a pair this run never ran are not listed as done.
    """
    found = {}
    asked = (options.products, options.compress)
    digest = options.config.digest()
    for job in jobs:
        if job.name in rows or not Path(job.out).is_dir():
            continue
        if incomplete_reason(job.out, job.science, job.template, digest, asked, job.given) is None:
            found[job.name] = row_of_outputs(
                job.name, job.science, job.template, job.out, "ok", options.strict
            )
    return found


def failure_kind(rows: Sequence[dict[str, Any]]) -> str | None:
    """The most serious kind of failure among the rows (:data:`ERROR_KINDS` order), or None.

    A refused pair counts as its ``input`` error: the batch did not make what it was asked
    (this config's outputs), though the row keeps the outputs that are there.
    """
    kinds = {r["error_kind"] for r in rows if r["status"] in ("failed", "refused")}
    return next((k for k in ERROR_KINDS if k in kinds), "internal" if kinds else None)
