"""The files read beside an input image (its mask, variance or weight) and how its mask's
bits are read: what ``diffviewer run --science-mask ...`` gives, what a run records of each
input, and what reads the input again (a saved run, a run again).

HOTPANTS takes a mask image beside each input (``-imi``, ``-tmi``; and a noise image,
``-ini``, ``-tni``) and masks every nonzero mask pixel. Survey masks are bit masks whose
bits mean different things (a ZTF ``mskimg`` marks the pixels of detected sources among
its defects, and a pipeline's own bits differ from release to release), so a mask without
LSST's ``MP_<NAME>`` cards may be read through a map of its bits onto this program's
planes (:attr:`Companions.mask_bits`); the bits it leaves out are good pixels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from diffviewer.errors import InputError
from diffviewer.paths import (
    absolute_spec,
    parse_spec,
    read_pairs_rows,
    resolve_spec,
    template_specs,
)

#: Planes a mask's bits may be read into: what a file can say of its pixels (EDGE, the
#: detections' planes and SAT_TEMPLATE are the engine's own).
MASK_BIT_PLANES = ("BAD", "SAT", "CR", "INTRP", "SUSPECT", "NO_DATA")

#: Highest bit a mask's integer holds (read as int64).
MAX_MASK_BIT = 62

#: The kinds of companion file, as :class:`Companions`, options and columns name them.
KINDS = ("mask", "variance", "weight")


@dataclasses.dataclass(frozen=True)
class Companions:
    """The planes of an input read from other files than its image's, and the map of its
    mask's bits.

    Attributes
    ----------
    mask : str or None
        A mask image spec (``file.fits``, ``file.fits[DQ]``): LSST planes when its header
        has ``MP_*`` cards, else read through ``mask_bits``, else every nonzero value BAD.
    variance : str or None
        A variance image spec (image units squared).
    weight : str or None
        An inverse-variance image spec (weight 0 is NO_DATA); not with ``variance``.
    mask_bits : tuple of (int, str)
        ``(bit, plane)`` pairs, in bit order: each bit of a mask without ``MP_*`` cards
        that masks its pixels, and the plane it sets (one of :data:`MASK_BIT_PLANES`).
        Empty: every nonzero value is BAD.

    Raises
    ------
    InputError
        When both a variance and a weight are given, a bit is outside 0-62 or given twice,
        or a plane is not one of :data:`MASK_BIT_PLANES`.
    """

    mask: str | None = None
    variance: str | None = None
    weight: str | None = None
    mask_bits: tuple[tuple[int, str], ...] = ()

    def __post_init__(self) -> None:
        if self.variance is not None and self.weight is not None:
            raise InputError(
                f"both a variance ({self.variance}) and a weight ({self.weight}) were given "
                "for one image: give one of them"
            )
        for bit, plane in self.mask_bits:
            if plane not in MASK_BIT_PLANES:
                raise InputError(
                    f"mask bit {bit} is given the plane {plane!r}, which a mask cannot set: "
                    f"give one of {', '.join(MASK_BIT_PLANES)}"
                )
            if not 0 <= bit <= MAX_MASK_BIT:
                raise InputError(
                    f"mask bit {bit} ({plane}) is outside 0-{MAX_MASK_BIT}: give the bits of "
                    "the mask's integer, numbered from 0"
                )
            planes = [p for b, p in self.mask_bits if b == bit]
            if len(planes) > 1:
                raise InputError(
                    f"mask bit {bit} is given {len(planes)} times ({', '.join(planes)}): give "
                    "each bit of the mask's integer one plane"
                )
        object.__setattr__(self, "mask_bits", tuple(sorted(self.mask_bits)))

    @property
    def named(self) -> list[tuple[str, str]]:
        """The companion files given, each with its kind (:data:`KINDS`)."""
        return [(kind, spec) for kind in KINDS if (spec := getattr(self, kind)) is not None]

    @property
    def specs(self) -> list[str]:
        """The companion files' specs given (mask, variance, weight)."""
        return [spec for _, spec in self.named]

    def describe(self) -> str:
        """In words: ``mask m.fits, weight w.fits; mask bits SAT=8 BAD=0,9`` (empty when
        nothing is given)."""
        files = ", ".join(f"{kind} {spec}" for kind, spec in self.named)
        bits = bits_text(self.mask_bits)
        return "; ".join(part for part in (files, f"mask bits {bits}" if bits else "") if part)

    def absolute(self) -> Companions:
        """The same with every spec's path made absolute (what a run records)."""
        mask, variance, weight = (
            None if spec is None else absolute_spec(spec)
            for spec in (self.mask, self.variance, self.weight)
        )
        return Companions(mask, variance, weight, self.mask_bits)

    def as_dict(self) -> dict[str, Any]:
        """What metadata records: the specs given (absent ones left out) and the bit map
        (``{"SAT": [8], ...}``) when there is one."""
        out: dict[str, Any] = dict(self.named)
        if self.mask_bits:
            out["mask_bits"] = planes_to_bits(self.mask_bits)
        return out

    @classmethod
    def from_dict(cls, record: Mapping[str, Any] | None) -> Companions:
        """The companions :meth:`as_dict` recorded (none for a run that recorded none)."""
        record = record or {}
        bits = record.get("mask_bits") or {}
        return cls(
            mask=record.get("mask"),
            variance=record.get("variance"),
            weight=record.get("weight"),
            mask_bits=tuple((int(b), str(p)) for p, bs in bits.items() for b in bs),
        )


#: An input read from its own file alone.
NO_COMPANIONS = Companions()


def pair_record(companions: tuple[Companions, Sequence[Companions]]) -> dict[str, Any]:
    """A pair's companions as JSON-ready data (:meth:`Companions.as_dict` of the science's
    and of each piece's), read back by :func:`from_pair_record`."""
    return {
        "science": companions[0].as_dict(),
        "pieces": [c.as_dict() for c in companions[1]],
    }


def from_pair_record(record: Mapping[str, Any]) -> tuple[Companions, tuple[Companions, ...]]:
    """The companions :func:`pair_record` recorded."""
    return (
        Companions.from_dict(record.get("science")),
        tuple(Companions.from_dict(c) for c in record.get("pieces", [])),
    )


def planes_to_bits(mask_bits: Sequence[tuple[int, str]]) -> dict[str, list[int]]:
    """``(bit, plane)`` pairs as ``{plane: [bits]}``, planes in :data:`MASK_BIT_PLANES`'s
    order."""
    return {
        plane: [bit for bit, p in mask_bits if p == plane]
        for plane in MASK_BIT_PLANES
        if any(p == plane for _, p in mask_bits)
    }


def bits_text(mask_bits: Sequence[tuple[int, str]]) -> str:
    """``(bit, plane)`` pairs as :func:`parse_mask_bits` reads them, terms apart
    (``BAD=0,9 CR=7``; empty for none)."""
    return " ".join(
        f"{plane}={','.join(map(str, bits))}" for plane, bits in planes_to_bits(mask_bits).items()
    )


def parse_mask_bits(texts: Sequence[str]) -> tuple[tuple[int, str], ...]:
    """Read ``PLANE=BIT[,BIT...]`` texts (``SAT=8``, ``BAD=0,2,9``) into ``(bit, plane)``.

    Parameters
    ----------
    texts : sequence of str
        One plane's bits each, as typed after ``--mask-bits``.

    Returns
    -------
    tuple of (int, str)
        Checked as :class:`Companions` checks them.

    Raises
    ------
    InputError
        When a text is not ``PLANE=BIT[,BIT...]`` with integer bits, or the bits are
        not valid (:class:`Companions`).
    """
    pairs: list[tuple[int, str]] = []
    for text in texts:
        plane, sep, bits = text.partition("=")
        words = [b.strip() for b in bits.split(",")]
        if not sep or not all(w.isdigit() for w in words):
            raise InputError(
                f"--mask-bits {text!r} is not PLANE=BIT[,BIT...]: give a plane and the "
                "mask's bits (numbered from 0) that set it, e.g. --mask-bits SAT=8 "
                "--mask-bits BAD=0,2,9"
            )
        pairs += [(int(w), plane.strip().upper()) for w in words]
    return Companions(mask_bits=tuple(pairs)).mask_bits


def input_companions(
    science: Mapping[str, str | None],
    template: Mapping[str, Sequence[str] | None],
    mask_bits: Sequence[str],
    pieces: int,
    option: str = "--template-{}",
) -> tuple[Companions, tuple[Companions, ...]]:
    """The companions given to the science image and each template piece.

    Parameters
    ----------
    science : mapping
        ``{"mask": spec or None, "variance": ..., "weight": ...}`` of the science image.
    template : mapping
        The same of the template, each a spec per piece in the pieces' order (None: none
        for any piece).
    mask_bits : sequence of str
        ``--mask-bits``'s texts (:func:`parse_mask_bits`), for every input's mask.
    pieces : int
        How many pieces the template came in.
    option : str
        How a template's companions were given, formatted with the kind ("mask", ...),
        for the message.

    Returns
    -------
    (Companions, tuple of Companions)
        The science's, and each piece's.

    Raises
    ------
    InputError
        When a template option names another number of files than the pieces, or
        :func:`parse_mask_bits` or :class:`Companions` refuse what is given.
    """
    bits = parse_mask_bits(mask_bits)
    per_piece: dict[str, Sequence[str | None]] = {}
    for kind, specs in template.items():
        if specs is not None and len(specs) != pieces:
            raise InputError(
                f"{option.format(kind)} names {len(specs)} file(s) ({', '.join(specs)}) for "
                f"a template in {pieces} piece(s): give one for each piece, in the pieces' "
                "order"
            )
        per_piece[kind] = [None] * pieces if specs is None else specs
    return (
        Companions(science.get("mask"), science.get("variance"), science.get("weight"), bits),
        tuple(
            Companions(per_piece["mask"][i], per_piece["variance"][i], per_piece["weight"][i], bits)
            for i in range(pieces)
        ),
    )


#: The pairs-list column of a pair's own bit map: ``PLANE=BIT[,BIT...]`` terms apart.
MASK_BITS_COLUMN = "mask_bits"


def read_pairs_with_companions(
    path: str | Path, mask_bits: Sequence[str] = ()
) -> tuple[list[tuple[str, str, str]], dict[str, tuple[Companions, tuple[Companions, ...]]]]:
    """A pairs list's pairs (:func:`~diffviewer.paths.read_pairs_rows`) and each one's
    companions, the file read once.

    Columns ``science_mask``, ``science_variance``, ``science_weight`` and the template's
    (one spec per piece, joined by ``;`` as the pieces are) name them, relative to the
    list's folder as its images are; ``mask_bits`` gives a pair's bit map
    (``CR=7 BAD=0,9``), else ``mask_bits`` here (a batch's ``--mask-bits``).

    Parameters
    ----------
    path : str or Path
        The pairs list.
    mask_bits : sequence of str
        The bit map of the pairs whose row gives none.

    Returns
    -------
    (list of (str, str, str), dict)
        The pairs as :func:`~diffviewer.paths.read_pairs_csv` gives them, and
        ``{pair name: (science's, each piece's)}`` for every one.

    Raises
    ------
    InputError
        As :func:`~diffviewer.paths.read_pairs_rows`, or naming the line's pair when its
        companions are refused (:func:`input_companions`).
    """
    path = Path(path)
    rows = read_pairs_rows(path)
    out = {}
    for (_, template, name), row in rows:
        try:
            out[name] = _row_companions(row, path.parent, len(template_specs(template)), mask_bits)
        except InputError as exc:
            raise InputError(f"pairs list {path}, pair {name}: {exc}") from None
    return [pair for pair, _ in rows], out


def _row_companions(
    row: Mapping[str, str], folder: Path, pieces: int, mask_bits: Sequence[str]
) -> tuple[Companions, tuple[Companions, ...]]:
    """One pairs-list row's companions (:func:`read_pairs_with_companions`), its specs resolved
    against ``folder``."""
    specs = {
        column: [resolve_spec(v, folder) for v in template_specs(row[column])]
        for column in (f"{role}_{kind}" for role in ("science", "template") for kind in KINDS)
        if column in row
    }
    several = next((c for c in specs if c.startswith("science") and len(specs[c]) > 1), None)
    if several is not None:
        raise InputError(
            f"the {several} column names {len(specs[several])} files ({row[several]}); give "
            "the science image's one"
        )
    own = row.get(MASK_BITS_COLUMN)
    return input_companions(
        {kind: next(iter(specs.get(f"science_{kind}", [])), None) for kind in KINDS},
        {kind: specs.get(f"template_{kind}") for kind in KINDS},
        own.split() if own is not None else mask_bits,
        pieces,
        "the template_{} column",
    )


def none_given(pieces: int) -> tuple[Companions, tuple[Companions, ...]]:
    """No companion for the science image nor for any of a template's ``pieces``."""
    return NO_COMPANIONS, (NO_COMPANIONS,) * pieces


def absolute(
    companions: tuple[Companions, Sequence[Companions]],
) -> tuple[Companions, tuple[Companions, ...]]:
    """The science's and the pieces' companions with their paths absolute (as recorded)."""
    return companions[0].absolute(), tuple(c.absolute() for c in companions[1])


def companion_paths(companions: Sequence[Companions]) -> list[Path]:
    """The files the companions name (each spec's path)."""
    return [parse_spec(spec)[0] for c in companions for spec in c.specs]
