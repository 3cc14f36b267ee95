"""Many pairs as ``dask.distributed`` tasks: plan (resume), run, summary. No Qt.

``diffviewer batch`` is :func:`run_batch`; a pair is one task
(:func:`diffviewer.batch.task.run_job`), and ``summary.ecsv`` is written by
:mod:`diffviewer.batch.summary`.
"""

from diffviewer.batch.runner import BatchOptions, failure_kind, plan_batch, run_batch
from diffviewer.batch.summary import badness, read_summary, write_summary

__all__ = [
    "BatchOptions",
    "badness",
    "failure_kind",
    "plan_batch",
    "read_summary",
    "run_batch",
    "write_summary",
]
