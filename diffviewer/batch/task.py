"""One pair as one task: runs on a worker, reads and writes there, returns a small row.

The worker runs the pair with :func:`diffviewer.cli.run_pair` (the one pair runner of
``diffviewer run``) and sends back only the summary row and the warnings, which the
client prints with the pair's name; any failure becomes the row's status and reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import resource
import time
import warnings
from pathlib import Path
from typing import Any

from diffviewer.batch.summary import row_of_outputs
from diffviewer.companions import Companions, none_given
from diffviewer.config import SubtractionConfig
from diffviewer.errors import DiffviewerError, NoWorkFound, OutputError
from diffviewer.paths import template_specs
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
    companions : (Companions, tuple of Companions)
        The files given beside the science image and each template piece, and the bit
        map (:func:`diffviewer.companions.read_pairs_with_companions`); none by default.
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
    companions: tuple[Companions, tuple[Companions, ...]] | None = None

    @property
    def given(self) -> tuple[Companions, tuple[Companions, ...]]:
        """Its companions (none for each input when none were given)."""
        return self.companions or none_given(len(template_specs(self.template)))


def _reset_peak_memory() -> bool:
    """Reset the process's peak resident memory (Linux ``clear_refs`` 5); False if unsupported."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


#: Bytes in the kibibytes Linux counts resident memory in (``VmHWM``, ``ru_maxrss``).
KIB = 1024


def _peak_memory_mb(reset: bool) -> float:
    """Peak resident memory in MB (10^6 bytes): since the reset, else over the process's
    life. (Linux counts it in KiB; divided by 1024 it was MiB labelled MB, 171.79 for
    180.1 MB, and FITS units have no MiB.)"""
    if reset:
        with contextlib.suppress(OSError):
            for line in _STATUS.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * KIB / 1e6
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB / 1e6


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
    another task of the pair: an earlier attempt of this task whose worker died right
    after (dask retries the task on another worker), or a task a killed batch left
    running on a scheduler's worker. Its outputs are the result, not an obstacle.
    """
    asked = (job.products, job.compress)
    digest = job.config.digest()
    return incomplete_reason(job.out, job.science, job.template, digest, asked, job.given) is None


def run_job(job: PairJob) -> dict[str, Any]:
    """Run one pair and return its summary row (never raises for the pair's own errors).

    Parameters
    ----------
    job : PairJob
        The pair.

    Returns
    -------
    dict
        The summary row, plus ``"messages"``: the warnings of the run, one line each. A
        pair another task of it had landed (:func:`landed`), before this one ran or while
        it ran (its writing refused), is ``skipped`` and not timed (NaN): the time and
        memory of this task are not the pair's (0.001 s, and the worker's peak before).
    """
    from diffviewer.cli import run_pair

    reset = _reset_peak_memory()
    row: dict[str, Any] = {
        "name": job.name,
        "science": job.science,
        "template": job.template,
        "output": job.out,
        "config_digest": job.config.digest(),
    }
    t0 = time.perf_counter()
    stderr = io.StringIO()
    caught: list[warnings.WarningMessage] = []
    skipped = landed(job)
    try:
        if not skipped:
            try:
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
                        companions=job.given,
                        read_files=[Path(p) for p in job.read_files],
                        products=job.products,
                        compress=job.compress,
                    )
            except OutputError:
                # Writing refused: another task of the pair (a killed batch's, still
                # running) filled the folder meanwhile. With the same result the pair
                # is done, not failed ("already exists and is not empty" after 8.4 s).
                skipped = landed(job)
                if not skipped:
                    raise
        status = "skipped" if skipped else "ok"
        row |= row_of_outputs(job.name, job.science, job.template, job.out, status, job.strict)
    except Exception as exc:  # a bad pair never stops the batch: its row says why
        kind, text = _failure(exc)
        row.update(status="failed", error_kind=kind, error=text)
    row["seconds"] = math.nan if skipped else time.perf_counter() - t0
    row["peak_memory"] = math.nan if skipped else _peak_memory_mb(reset)
    lines = [ln.removeprefix("warning: ") for ln in stderr.getvalue().splitlines()]
    lines += [f"{w.category.__name__}: {w.message}" for w in caught]
    row["messages"] = [ln for ln in lines if ln.strip() and not ln.startswith("error:")]
    return row
