"""Unique 64-bit DIA source ids, as the seed's ``makeIdFactory`` makes them.

The exposure id sits in the high ``exposure_bits`` bits of an unsigned 64-bit integer
and a running number from 1 in the low bits.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from diffviewer.errors import ConfigError, InputError

#: Bits of an unsigned 64-bit DIA source id.
ID_BITS = 64


class IdFactory:
    """Unique 64-bit DIA source ids: exposure id in the high bits, a running number below.

    Parameters
    ----------
    exposure_id : int
        Id of the exposure, at least 0 and below ``2**exposure_bits``.
    exposure_bits : int
        High bits reserved for the exposure id (1-63).

    Raises
    ------
    ConfigError
        When the exposure id does not fit in ``exposure_bits`` bits.
    """

    def __init__(self, exposure_id: int, exposure_bits: int) -> None:
        if not 1 <= exposure_bits < ID_BITS:
            raise ConfigError(
                f"measurement.exposure_bits = {exposure_bits} must be between 1 and {ID_BITS - 1}"
            )
        if exposure_id < 0 or exposure_id >= 1 << exposure_bits:
            raise ConfigError(
                f"measurement.exposure_id = {exposure_id} does not fit in "
                f"measurement.exposure_bits = {exposure_bits} bits (largest "
                f"{(1 << exposure_bits) - 1}); raise exposure_bits or use a "
                "smaller id"
            )
        self.sequence_bits = ID_BITS - exposure_bits
        self._base = exposure_id << self.sequence_bits
        self._next = 1

    @property
    def capacity(self) -> int:
        """Largest running number (how many ids one exposure can have)."""
        return (1 << self.sequence_bits) - 1

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` ids as a uint64 array.

        Raises
        ------
        InputError
            When the running number would overflow its ``64 - exposure_bits`` bits.
        """
        if self._next + n - 1 > self.capacity:
            raise InputError(
                f"{self._next + n - 1} DIA sources do not fit in the "
                f"{self.sequence_bits} low bits of the id (at most {self.capacity}); "
                "lower measurement.exposure_bits"
            )
        seq = np.arange(self._next, self._next + n, dtype=np.uint64)
        self._next += n
        return np.uint64(self._base) | seq

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        return int(self.take(1)[0])


def make_id_factory(exposure_id: int, exposure_bits: int) -> IdFactory:
    """The seed's ``makeIdFactory``: an iterator of unique 64-bit DIA source ids.

    Parameters
    ----------
    exposure_id : int
        Id of the exposure (stored in the high bits).
    exposure_bits : int
        Number of high bits for the exposure id.

    Returns
    -------
    IdFactory
        ``next(factory)`` gives one id, ``factory.take(n)`` a uint64 array.
    """
    return IdFactory(exposure_id, exposure_bits)
