"""One pair as one task: runs on a worker, reads and writes there, returns a small row.

The worker runs the pair with :func:`diffviewer.cli.run_pair` (the one pair runner of
``diffviewer run``) and sends back only the summary row and the warnings, which the
client prints with the pair's name; any failure becomes the row's status and reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import resource
import time
import warnings
from pathlib import Path
from typing import Any

from diffviewer.batch.summary import row_from_outputs
from diffviewer.config import SubtractionConfig
from diffviewer.errors import DiffviewerError, NoWorkFound
from diffviewer.results import incomplete_reason

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


@dataclasses.dataclass(frozen=True)
class PairJob:
    """What a worker needs to run one pair.

    Attributes
    ----------
    name : str
        Pair name (output folder name).
    science, template : str
        Absolute image specs (the worker reads them itself).
    out : str
        The pair's output folder.
    config : SubtractionConfig
        Effective config.
    overwrite, strict : bool
        As the command-line flags.
    read_files : tuple of str
        Other files the batch read (pairs list, config): never written over.
    products, compress : str, bool
        Which outputs to write, and whether mask planes are compressed.
    """

    name: str
    science: str
    template: str
    out: str
    config: SubtractionConfig
    overwrite: bool = False
    strict: bool = False
    read_files: tuple[str, ...] = ()
    products: str = "full"
    compress: bool = False


def _reset_peak_memory() -> bool:
    """Reset the process's peak resident memory (Linux ``clear_refs`` 5); False if unsupported."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def _peak_memory_mb(reset: bool) -> float:
    """Peak resident memory in MB: since the reset, else over the process's life."""
    if reset:
        with contextlib.suppress(OSError):
            for line in _STATUS.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _failure(exc: BaseException) -> tuple[str, str]:
    """The kind and one-line reason of a pair's failure."""
    if isinstance(exc, NoWorkFound):
        kind = "no_coverage"
    elif isinstance(exc, DiffviewerError):
        kind = "input"
    else:
        kind = "internal"
    text = " ".join(str(exc).split())
    if kind == "internal":
        text = f"internal error ({type(exc).__name__}: {text[:300]})"
    return kind, text


def landed(job: PairJob) -> bool:
    """Whether the pair's folder is already complete for this job (inputs, config, products).

    The plan sends only pairs whose folder is not, so such a folder was put in place by
    an earlier attempt of this task whose worker died right after (dask retries the
    task on another worker): its outputs are the result, not an obstacle.
    """
    asked = (job.products, job.compress)
    return incomplete_reason(job.out, job.science, job.template, job.config.digest(), asked) is None


def run_job(job: PairJob) -> dict[str, Any]:
    """Run one pair and return its summary row (never raises for the pair's own errors).

    Parameters
    ----------
    job : PairJob
        The pair.

    Returns
    -------
    dict
        The summary row, plus ``"messages"``: the warnings of the run, one line each.
    """
    from diffviewer.cli import run_pair

    reset = _reset_peak_memory()
    row: dict[str, Any] = {
        "name": job.name,
        "science": job.science,
        "template": job.template,
        "output": job.out,
    }
    t0 = time.perf_counter()
    stderr = io.StringIO()
    caught: list[warnings.WarningMessage] = []
    try:
        if not landed(job):
            with (
                warnings.catch_warnings(record=True) as record,
                contextlib.redirect_stderr(stderr),
            ):
                warnings.simplefilter("always")
                caught = record
                run_pair(
                    job.science,
                    job.template,
                    Path(job.out),
                    job.config,
                    overwrite=job.overwrite,
                    strict=job.strict,
                    quiet=True,
                    read_files=[Path(p) for p in job.read_files],
                    products=job.products,
                    compress=job.compress,
                )
        row.update(row_from_outputs(job.out))
        row["status"] = "ok"
        if job.strict and row["guard_tripped"]:  # run_pair's exit 4 (the metadata's guard)
            row.update(status="failed", error_kind="guard", error="bad-subtraction guard tripped")
    except Exception as exc:  # a bad pair never stops the batch: its row says why
        kind, text = _failure(exc)
        row.update(status="failed", error_kind=kind, error=text)
    row["seconds"] = time.perf_counter() - t0
    row["peak_memory"] = _peak_memory_mb(reset)
    lines = [ln.removeprefix("warning: ") for ln in stderr.getvalue().splitlines()]
    lines += [f"{w.category.__name__}: {w.message}" for w in caught]
    row["messages"] = [ln for ln in lines if ln.strip() and not ln.startswith("error:")]
    return row
