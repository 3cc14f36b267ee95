"""Progress reporting, cancellation and step timing for the engine (no threads here)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from diffviewer.errors import Cancelled

#: ``callback(step_name, fraction)`` with fraction in [0, 1] over the whole run.
ProgressCallback = Callable[[str, float], None]
#: ``callback(stage_name, products)``: a step's products (name -> array) as soon as it ends.
StageCallback = Callable[[str, Mapping[str, np.ndarray]], None]


class CancelToken:
    """A flag another thread sets to ask a run to stop at its next check."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the run to stop."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._event.is_set()


@dataclass
class Reporter:
    """Carries the progress callback and the cancel token through the engine.

    Parameters
    ----------
    callback : callable, optional
        Called as ``callback(step, fraction)``.
    token : CancelToken, optional
        Checked by :meth:`check` and :meth:`update`.
    timings : dict
        Wall-clock seconds per step, filled by :meth:`step`.
    stage_callback : callable, optional
        Called by :meth:`stage` with a step's intermediate products.
    """

    callback: ProgressCallback | None = None
    token: CancelToken | None = None
    timings: dict[str, float] = field(default_factory=dict)
    stage_callback: StageCallback | None = None
    _step: str = "start"
    _span: tuple[float, float] = (0.0, 1.0)

    def check(self) -> None:
        """Raise :class:`Cancelled` if the run was cancelled."""
        if self.token is not None and self.token.cancelled:
            raise Cancelled(f"run cancelled during step '{self._step}'")

    def update(self, fraction: float) -> None:
        """Report progress within the current step and check for cancellation.

        Parameters
        ----------
        fraction : float
            How far the current step is, in [0, 1].
        """
        self.check()
        if self.callback is not None:
            lo, hi = self._span
            self.callback(self._step, lo + (hi - lo) * min(max(fraction, 0.0), 1.0))

    def stage(self, name: str, products: Mapping[str, np.ndarray]) -> None:
        """Hand a finished step's products to whoever shows them before the run ends.

        Parameters
        ----------
        name : str
            The step (``warp``, ``subtract``, ``difference``, ``score``).
        products : mapping of str to numpy.ndarray
            Images by name (``science``, ``template``, ``matched``, ``difference``,
            ``score``), on the science pixel grid; read-only views, never copies.
        """
        if self.stage_callback is not None:
            self.stage_callback(name, products)

    @contextlib.contextmanager
    def step(self, name: str, start: float, end: float) -> Iterator[None]:
        """Time one engine step and report its start and end.

        Parameters
        ----------
        name : str
            Step name, as shown to the user and stored in the timings.
        start, end : float
            The part of the whole run this step covers, in [0, 1].
        """
        self._step, self._span = name, (start, end)
        self.update(0.0)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0
        self.update(1.0)


def null_reporter() -> Reporter:
    """A reporter that reports nothing and is never cancelled."""
    return Reporter()
