"""Command-line entry points: ``diffviewer`` (the GUI), ``diffviewer run``, ``diffviewer batch``.

``diffviewer [SCIENCE TEMPLATE]`` opens the inspection application (the bundled demo
pair when no pair is given); ``diffviewer run SCIENCE TEMPLATE [TEMPLATE ...] --out DIR``
runs the engine headless and writes every output (several templates are pieces of one);
``diffviewer batch PAIRS.csv --out DIR`` does the same for a list of pairs on
``dask.distributed`` and writes a summary; ``diffviewer config`` prints the default
config. SIGTERM and SIGHUP are handled like Ctrl-C (staged outputs removed, one line
printed).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import importlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

from diffviewer import __version__
from diffviewer.companions import (
    KINDS,
    Companions,
    input_companions,
    none_given,
    read_pairs_with_companions,
)
from diffviewer.config import (
    SubtractionConfig,
    apply_overrides,
    config_files,
    from_dict,
    override_tables,
    read_toml_data,
    to_toml,
)
from diffviewer.errors import Cancelled, ConfigError, DiffviewerError, InputError, NoWorkFound
from diffviewer.log_notes import LOGGER, collected_warnings, one_line
from diffviewer.paths import (
    TEMPLATE_SEPARATOR,
    check_output_dir,
    parse_spec,
    require_file,
    template_specs,
)
from diffviewer.termination import Terminated, raise_if_terminated, terminate_like_interrupt

SUBCOMMANDS = ("run", "batch", "review", "open", "config")

EXIT_OK, EXIT_INTERNAL, EXIT_ERROR, EXIT_NO_WORK, EXIT_STRICT = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and ``--set`` to a parser."""
    parser.add_argument(
        "--config", metavar="FILE", help="config TOML file (see `diffviewer config`)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="SECTION.FIELD=VALUE",
        action="append",
        default=[],
        help="override one config value, e.g. --set kernel.spatial_order=1 (repeatable)",
    )


def _build_run_parser(prog: str) -> argparse.ArgumentParser:
    """Parser of ``diffviewer run``."""
    parser = argparse.ArgumentParser(
        prog=f"{prog} run",
        description="Subtract TEMPLATE from SCIENCE headless and write all outputs.",
    )
    parser.add_argument(
        "science", help="science image spec: file.fits, file.fits[SCI] or file.fits[1]"
    )
    parser.add_argument(
        "template",
        nargs="+",
        help="template image spec, same syntax; several specs are pieces of one template "
        "(each registered and warped to the science grid, then combined)",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder (must not exist, or be empty, unless --overwrite)",
    )
    _add_config_options(parser)
    parser.add_argument(
        "--overwrite", action="store_true", help="write into an existing output folder"
    )
    parser.add_argument(
        "--strict", action="store_true", help="fail (exit 4) when the bad-subtraction guard trips"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--threads",
        type=_thread_count,
        default=None,
        metavar="N",
        help="threads for the tiles of the convolutions and the chunks of kernel stamps, "
        "all allocating from one heap (default: 2 on two cores or more, else 1; on 2 "
        "cores, 2 shortened runs of 1024^2 to 4096^2 px by 2-16 %% at the same peak "
        "memory); the outputs are the same",
    )
    _add_output_options(parser)
    _add_companion_options(parser)
    return parser


def _add_companion_options(parser: argparse.ArgumentParser) -> None:
    """Add the inputs' planes in other files (``--science-mask`` ...) and ``--mask-bits``."""
    group = parser.add_argument_group(
        "planes in other files",
        "a mask, variance or inverse-variance weight image beside an input (a mask as "
        "HOTPANTS's -imi/-tmi; same shape as the image; a mask's planes join those of "
        "the image's own file)",
    )
    kinds = (
        ("mask", "mask image"),
        ("variance", "variance image (image units^2)"),
        ("weight", "inverse-variance weight image (0: no data)"),
    )
    for kind, what in kinds:
        group.add_argument(f"--science-{kind}", metavar="SPEC", help=f"the science image's {what}")
    for kind, what in kinds:
        group.add_argument(
            f"--template-{kind}",
            action="append",
            metavar="SPEC",
            help=f"a template piece's {what}, once per piece in the pieces' order",
        )
    _add_mask_bits_option(group, "")


def _add_mask_bits_option(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, which: str
) -> None:
    """Add ``--mask-bits`` (``which``: to whose masks it applies, if not every input's)."""
    parser.add_argument(
        "--mask-bits",
        action="append",
        default=[],
        metavar="PLANE=BIT[,BIT...]",
        help=f"for masks without LSST's MP_* cards{which}: the bits (numbered from 0) that "
        "set a plane (BAD, SAT, CR, INTRP, SUSPECT, NO_DATA), e.g. --mask-bits SAT=8 "
        "--mask-bits BAD=0,2,9; other bits are good pixels (default: every nonzero value "
        "is BAD) (repeatable)",
    )


def _thread_count(text: str) -> int:
    """``--threads``'s value: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--threads must be a whole number >= 1, not {text!r}")
    return value


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--products`` and ``--compress`` (which files are written, and how)."""
    parser.add_argument(
        "--products",
        choices=("full", "minimal"),
        default="full",
        help="full: every output (default); minimal: difference.fits, diasources.ecsv, "
        "config.toml and metadata.json only",
    )
    parser.add_argument(
        "--compress",
        action="store_true",
        help="tile-compress the mask planes of the FITS outputs (lossless)",
    )


def _build_batch_parser(prog: str) -> argparse.ArgumentParser:
    """Parser of ``diffviewer batch``."""
    parser = argparse.ArgumentParser(
        prog=f"{prog} batch",
        description="Run every pair of a CSV list (columns science, template, optional "
        "name; a template in pieces as a.fits;b.fits) as dask.distributed tasks into "
        "OUT/<name>/, with OUT/summary.ecsv (and .fits). A rerun skips pairs whose outputs "
        "are complete. Exit status: 0 all done, 1 an internal error, 2 bad input (or the "
        "scheduler lost: rerun to run the rest), 3 no coverage, 4 guard tripped (--strict), "
        "the most serious first.",
    )
    parser.add_argument(
        "pairs",
        help="CSV file with columns science,template[,name] and, optional, a pair's planes "
        "in files of their own: science_mask, science_variance, science_weight, "
        "template_mask, template_variance, template_weight (one per template piece, joined "
        "by ';'), and its mask_bits (PLANE=BIT[,BIT...] terms apart)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="parent output folder")
    _add_config_options(parser)
    parser.add_argument(
        "--overwrite", action="store_true", help="write into existing output folders"
    )
    parser.add_argument("--strict", action="store_true", help="treat a tripped guard as a failure")
    _add_output_options(parser)
    parser.add_argument(
        "--retry-failed", action="store_true", help="rerun the pairs the summary lists as failed"
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes of the local cluster (default: as many as cores and memory allow)",
    )
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="submit to a running dask scheduler (e.g. tcp://host:8786, or tls://host:8786 "
        "with dask's TLS settings) instead",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_mask_bits_option(parser, " (of the pairs whose mask_bits column is empty)")
    return parser


def _build_gui_parser(prog: str) -> argparse.ArgumentParser:
    """Parser of the GUI (the default command)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Inspect and tune image subtraction. "
        "With no pair, opens the bundled demo pair. "
        f"Subcommands: {', '.join(SUBCOMMANDS)} (`{prog} run -h`).",
    )
    parser.add_argument("science", nargs="?", help="science image spec")
    parser.add_argument(
        "template",
        nargs="*",
        help="template image spec; several specs are pieces of one template",
    )
    parser.add_argument(
        "--pairs", metavar="CSV", help="a list of pairs to step through (science,template)"
    )
    _add_config_options(parser)
    _add_companion_options(parser)
    parser.add_argument("--version", action="version", version=f"diffviewer {__version__}")
    return parser


def effective_config(config_file: str | None, overrides: Sequence[str]) -> SubtractionConfig:
    """The config from a TOML file (or the defaults) with ``--set`` overrides applied.

    Parameters
    ----------
    config_file : str or None
        Path of a config TOML file.
    overrides : sequence of str
        ``section.field=value`` strings.

    Returns
    -------
    SubtractionConfig
    """
    if config_file is None:
        return apply_overrides(SubtractionConfig(), overrides)
    if not config_file.strip():
        raise ConfigError(
            "--config is empty (an unset shell variable?); give a config TOML file, or "
            "leave --config out for the defaults"
        )
    data = read_toml_data(config_file)
    # The overrides replace the file's values before anything is checked, so a --set
    # can mend a file whose values do not go together (score.method = "none" with
    # detection on the score).
    for section, values in override_tables(overrides).items():
        table = data.setdefault(section, {})
        if isinstance(table, dict):
            table.update(values)
        else:
            data[section] = values
    try:
        return from_dict(data)
    except ConfigError as exc:
        given = " with the --set values" if overrides else ""
        raise ConfigError(f"config file {config_file}{given}: {exc}") from None


class TerminalProgress:
    """A one-line progress bar on a terminal stream.

    Parameters
    ----------
    stream : TextIO
        Where to draw (standard error).
    width : int
        Bar width in characters.
    """

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream = stream
        self.width = width
        self._last = ""

    def __call__(self, step: str, fraction: float) -> None:
        """Redraw the bar for ``step`` at ``fraction`` of the run."""
        filled = round(fraction * self.width)
        line = f"\r[{'#' * filled}{'.' * (self.width - filled)}] {fraction * 100:3.0f}% {step:<20}"
        if line != self._last:
            self.stream.write(line)
            self.stream.flush()
            self._last = line

    def close(self) -> None:
        """End the bar's line."""
        if self._last:
            self.stream.write("\n")
            self.stream.flush()


def with_absolute_paths(config: SubtractionConfig) -> SubtractionConfig:
    """The config with its file paths (``candidates.source_list``) made absolute here.

    A batch's workers may run in another folder (a scheduler's workers started
    elsewhere), where a relative path names another file or none.

    Parameters
    ----------
    config : SubtractionConfig

    Returns
    -------
    SubtractionConfig
        ``config`` itself when it names no relative path.
    """
    source_list = config.candidates.source_list
    if not source_list or Path(source_list).expanduser().is_absolute():
        return config
    absolute = str(Path(source_list).expanduser().resolve())
    return dataclasses.replace(
        config, candidates=dataclasses.replace(config.candidates, source_list=absolute)
    )


def run_pair(
    science_spec: str,
    template_spec: str | Sequence[str],
    out: Path,
    config: SubtractionConfig,
    *,
    overwrite: bool,
    strict: bool,
    quiet: bool,
    companions: tuple[Companions, Sequence[Companions]] | None = None,
    read_files: Sequence[Path] = (),
    products: str = "full",
    compress: bool = False,
    threads: int | None = 1,
) -> int:
    """Run one pair headless and write its outputs; return the exit code.

    Parameters
    ----------
    science_spec : str
        Exposure spec of the science image.
    template_spec : str or sequence of str
        The template's spec, or its pieces' (a sequence, or specs joined by ``;``).
    out : Path
        Output folder.
    config : SubtractionConfig
        Effective config.
    overwrite, strict, quiet : bool
        As the command-line flags.
    companions : (Companions, sequence of Companions), optional
        The files read beside the science image and each template piece
        (:func:`~diffviewer.companions.input_companions`); none when absent.
    read_files : sequence of Path
        Other files the command read (config file, pairs list): never written over.
    products, compress : str, bool
        Which outputs to write and whether to compress mask planes (see
        :func:`diffviewer.outputs.write_outputs`).
    threads : int or None
        Threads lent to the engine (:mod:`diffviewer.engine.lent`; 1: none beside this
        one; None: as many as are worth it,
        :func:`~diffviewer.engine.lent.threads_worth_lending`).

    Returns
    -------
    int
        0 on success, 4 when ``strict`` and the bad-subtraction guard tripped.
    """
    pieces = template_specs(template_spec)
    science_companions, piece_companions = companions or none_given(len(pieces))
    inputs = [parse_spec(spec)[0] for spec in (science_spec, *pieces)]
    for i, path in enumerate(inputs):
        require_file(path, "science" if i == 0 else "template")
    for role, given in (("science", [science_companions]), ("template", piece_companions)):
        for kind, spec in (named for c in given for named in c.named):
            path = parse_spec(spec)[0]
            require_file(path, f"{role} {kind}")
            inputs.append(path)
    source_list = config.candidates.source_list
    if source_list:  # the path at once, its table once astropy is loaded: before the images
        from diffviewer.star_list import read_star_list, require_star_list_file

        require_star_list_file(source_list)
    inputs += [*read_files, *config_files(config)]
    check_output_dir(out, inputs, overwrite)
    timings: dict[str, float] = {}
    # The heavy modules load only once every path is known good (a typo answers at once).
    with _timed(timings, "import"):
        from diffviewer.io import read_exposure, read_templates
    # Read once, before the images: the engine takes the list as read (not read again).
    stars = read_star_list(source_list) if source_list else None
    with _imported_meanwhile(ENGINE_MODULES) as loading:
        with _timed(timings, "read"), collected_warnings() as read_notes:
            # One after the other: reading the two on two threads as well was slower (GOTO,
            # median of 12 at load 2.2-2.9: 1.47 s against 1.42 s to the engine's start,
            # 0.07 s more CPU), their many short numpy calls taking the interpreter in turn.
            science = read_exposure(science_spec, companions=science_companions)
            # The template is read here, not kept: the engine frees it once it is warped.
            templates = read_templates(pieces, piece_companions)
        with _timed(timings, "import"):
            loading.join()
            from threadpoolctl import threadpool_limits

            from diffviewer.engine.pipeline import run_subtraction
            from diffviewer.outputs import guard_tripped, write_outputs

    bar = TerminalProgress(sys.stderr) if (not quiet and sys.stderr.isatty()) else None
    try:
        # One thread for BLAS and (scipy's default) for the FFTs. The engine's BLAS calls
        # are small (batched 29 x 1225 stamp normal matrices, per-star least squares),
        # where OpenBLAS's threads cost more than they save and, on a loaded machine,
        # spin (kernel fit 2.29 -> 1.17 s on a 1024^2 pair at load 6). Its FFTs are of
        # tiles and stamps: on both cores the GOTO engine took 4.29-5.23 s against
        # 3.48-4.87 s on one (4 fresh processes each, in turn, load 1.1; 1024^2 2-6 %
        # slower, 4096^2 the same within the noise), the threads' hand-offs costing more
        # than they save. Set here, where no other thread runs numpy: switching
        # OpenBLAS's process-wide count from the GUI's worker thread deadlocked the GUI.
        # Whole tiles and chunks of kernel stamps, by contrast, run well side by side on
        # lent threads: by default two on two cores
        # (:func:`~diffviewer.engine.lent.threads_worth_lending`), allocating from one
        # heap (``diffviewer run`` asks for it before any thread starts).
        if threads is None:
            from diffviewer.engine.lent import threads_worth_lending, usable_cores

            threads = threads_worth_lending(usable_cores())
        with threadpool_limits(1, "blas"), _lent_threads(threads) as pool:
            with _timed(timings, "total"):
                result = run_subtraction(
                    science,
                    _handed_over(templates),
                    config,
                    progress=bar,
                    executor=pool,
                    star_list=stars,
                )
    finally:
        if bar is not None:
            bar.close()
    written = write_outputs(
        result,
        out,
        inputs,
        overwrite=overwrite,
        timings=timings,
        products=products,
        compress=compress,
        read_notes=read_notes,
    )
    for note in result.warnings:
        print(f"warning: {note}", file=sys.stderr)
    if not quiet:
        sky = sum(1 for flag in result.diasources["sky_source"] if flag)
        found = len(result.diasources) - sky
        print(f"wrote {len(written)} files to {out} ({found} DIA sources, {sky} sky sources)")
    if strict and guard_tripped(result):
        print(
            f"error: bad-subtraction guard tripped for {science_spec} (--strict)", file=sys.stderr
        )
        return EXIT_STRICT
    return EXIT_OK


#: What a run loads beyond :mod:`diffviewer.io` (0.3-0.4 s): loaded on a thread while the
#: inputs are read, whose numpy work and file reads release the interpreter.
ENGINE_MODULES = ("scipy.fft", "threadpoolctl", "diffviewer.engine.pipeline", "diffviewer.outputs")


@contextlib.contextmanager
def _imported_meanwhile(names: Sequence[str]) -> Iterator[threading.Thread]:
    """Import ``names`` on a thread while the block runs; the thread is joined at its end.

    Join the yielded thread before using the modules. Safe beside reading the inputs:
    :func:`diffviewer.io.read_exposure` imports nothing once :mod:`diffviewer.io` is
    loaded, so no module is imported by both threads at once. An import that fails here
    fails again, with its traceback, where the module is used.
    """

    def load() -> None:
        for name in names:
            with contextlib.suppress(Exception):
                importlib.import_module(name)

    thread = threading.Thread(target=load, name="diffviewer-imports", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        thread.join()


@contextlib.contextmanager
def _lent_threads(count: int) -> Iterator[ThreadPoolExecutor | None]:
    """A pool of ``count`` threads lent to the engine, shut down at the block's end (None
    for 1: its pieces of work run on the calling thread)."""
    if count <= 1:
        yield None
        return
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="diffviewer-lent") as pool:
        yield pool


@contextlib.contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Add the seconds the block takes to ``timings[key]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0


def _handed_over(items: list[Any]) -> list[Any]:
    """A new list of ``items``' elements, ``items`` emptied: the callee holds the only reference.

    The engine frees the template pieces once they are warped; a list the caller still
    holds would keep them alive through the whole run.
    """
    out = list(items)
    items.clear()
    return out


def has_display() -> bool:
    """Whether a GUI can open: a display server, or a Qt platform that needs none."""
    if os.environ.get("QT_QPA_PLATFORM", "").split(":")[0] in ("offscreen", "minimal", "vnc"):
        return True
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


#: Libraries Qt's xcb platform plugin loads (Qt >= 6.5), with the Debian/Ubuntu
#: packages that provide them (the README's list).
XCB_LIBRARIES = {
    "xcb-cursor": "libxcb-cursor0",
    "xcb-icccm": "libxcb-icccm4",
    "xcb-keysyms": "libxcb-keysyms1",
    "xcb-image": "libxcb-image0",
    "xcb-render-util": "libxcb-render-util0",
    "xcb-shape": "libxcb-shape0",
    "xkbcommon-x11": "libxkbcommon-x11-0",
}


#: Libraries Qt's GUI module loads on Linux whatever its platform (``libQt6Gui`` links
#: them), with their Debian/Ubuntu packages: without them importing PyQt6.QtGui fails.
GL_LIBRARIES = {"EGL": "libegl1", "GL": "libgl1"}


def missing_xcb_packages() -> list[str]:
    """Packages whose libraries Qt needs to open a window here and the system lacks.

    Without them Qt aborts the process with a message about "xcb", or the import of its
    GUI module fails, neither saying which package to install; this check runs first
    and says it. On Linux Qt's GUI module needs OpenGL's libraries
    (:data:`GL_LIBRARIES`) whatever the platform; with an X11 display (and no other Qt
    platform chosen) the xcb plugin needs :data:`XCB_LIBRARIES` too.

    Returns
    -------
    list of str
        Debian/Ubuntu package names; empty when nothing is missing (or not on Linux).
    """
    if not sys.platform.startswith("linux"):
        return []
    platform = os.environ.get("QT_QPA_PLATFORM", "").split(":")[0]
    uses_xcb = platform == "xcb" or (not platform and not os.environ.get("WAYLAND_DISPLAY"))
    import ctypes.util  # here: it costs --help and config 15 ms of start-up

    needed = GL_LIBRARIES | (XCB_LIBRARIES if uses_xcb else {})
    return [pkg for lib, pkg in needed.items() if ctypes.util.find_library(lib) is None]


def gui_problem(prog: str) -> str | None:
    """Why no window can open here (one line saying what to do), or None."""
    if not has_display():
        return (
            f"error: no display found (DISPLAY is not set); to run headless use "
            f"`{prog} run SCIENCE TEMPLATE --out DIR`"
        )
    missing = missing_xcb_packages()
    if missing:
        return (
            f"error: Qt needs system libraries that are missing to open a window; install them "
            f"with `sudo apt-get install {' '.join(missing)}`, or run headless with "
            f"`{prog} run SCIENCE TEMPLATE --out DIR`"
        )
    return None


def _main_gui(argv: Sequence[str], prog: str) -> int:
    """Open the inspection application."""
    args = _build_gui_parser(prog).parse_args(argv)
    if (args.science is None) != (not args.template):
        raise InputError("give both SCIENCE and TEMPLATE, or neither (to open the demo pair)")
    config = effective_config(args.config, args.overrides)
    template = TEMPLATE_SEPARATOR.join(args.template) if args.template else None
    options = [f"{role}_{kind}" for role in ("science", "template") for kind in KINDS]
    if template is None and (args.mask_bits or any(getattr(args, o) for o in options)):
        raise InputError(
            "mask, variance, weight files and --mask-bits belong to a pair: give SCIENCE "
            "and TEMPLATE with them (a pairs list gives them in its columns)"
        )
    companions = _companions_of(args, len(args.template))
    problem = gui_problem(prog)
    if problem:
        print(problem, file=sys.stderr)
        return EXIT_ERROR
    from diffviewer.gui.app import launch

    return launch(args.science, template, pairs=args.pairs, config=config, companions=companions)


def _companions_of(
    args: argparse.Namespace, pieces: int
) -> tuple[Companions, tuple[Companions, ...]]:
    """The companions the command line's ``--science-mask`` ... and ``--mask-bits`` give."""
    return input_companions(
        {kind: getattr(args, f"science_{kind}") for kind in KINDS},
        {kind: getattr(args, f"template_{kind}") for kind in KINDS},
        args.mask_bits,
        pieces,
    )


def _main_run(argv: Sequence[str], prog: str) -> int:
    """``diffviewer run``."""
    args = _build_run_parser(prog).parse_args(argv)
    config = effective_config(args.config, args.overrides)
    if args.threads != 1:
        # Before any thread starts (the engine's imports load on one while reading).
        from diffviewer import allocator

        allocator.one_heap()
    companions = _companions_of(args, len(args.template))
    return run_pair(
        args.science,
        args.template,
        Path(args.out),
        config,
        companions=companions,
        overwrite=args.overwrite,
        strict=args.strict,
        quiet=args.quiet,
        read_files=[Path(args.config)] if args.config else [],
        products=args.products,
        compress=args.compress,
        threads=args.threads,
    )


#: Exit status of a batch by the most serious kind of failure among its pairs.
BATCH_EXIT = {"internal": EXIT_INTERNAL, "input": EXIT_ERROR, "no_coverage": EXIT_NO_WORK}


def _main_batch(argv: Sequence[str], prog: str) -> int:
    """``diffviewer batch``: every pair as a dask task; a bad pair never stops the batch."""
    from diffviewer.batch import BatchOptions, failure_kind, run_batch

    args = _build_batch_parser(prog).parse_args(argv)
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers {args.workers}: give at least 1 worker")
    # Every path absolute on this side: the workers may run in another folder.
    config = with_absolute_paths(effective_config(args.config, args.overrides))
    if config.candidates.source_list:  # checked once here, not failed pair by pair
        from diffviewer.star_list import read_star_list

        read_star_list(config.candidates.source_list)
    read = [args.pairs, *([args.config] if args.config else [])]
    pairs_list = Path(args.pairs).expanduser().resolve()
    pairs, companions = read_pairs_with_companions(pairs_list, args.mask_bits)
    options = BatchOptions(
        out=Path(args.out).expanduser().resolve(),
        config=config,
        overwrite=args.overwrite,
        strict=args.strict,
        retry_failed=args.retry_failed,
        products=args.products,
        compress=args.compress,
        workers=args.workers,
        scheduler=args.scheduler,
        read_files=tuple(Path(p).expanduser().resolve() for p in read),
        companions=companions,
    )
    rows = run_batch(pairs, options, progress=not args.quiet and sys.stderr.isatty())
    failed = [r for r in rows if r["status"] == "failed"]
    skipped = sum(r["status"] == "skipped" for r in rows)
    refused = sum(r["status"] == "refused" for r in rows)
    counts = {k: sum(r["error_kind"] == k for r in failed) for k in BATCH_EXIT | {"guard": 0}}
    detail = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items() if n)
    kept = f", {refused} refused (another run's outputs kept)" if refused else ""
    print(
        f"batch: {len(rows) - len(failed) - refused} of {len(rows)} pairs done ({skipped} "
        f"skipped as complete){kept}, {len(failed)} failed{f' ({detail})' if failed else ''}; "
        f"summary in {options.out / 'summary.ecsv'}",
        file=sys.stderr if failed or refused else sys.stdout,
    )
    kind = failure_kind(rows)
    return EXIT_OK if kind is None else BATCH_EXIT.get(kind, EXIT_STRICT)


def _main_review(argv: Sequence[str], prog: str) -> int:
    """``diffviewer review DIR``: the batch review window (the summary is checked first)."""
    parser = argparse.ArgumentParser(
        prog=f"{prog} review",
        description="Review a batch: its summary as a table, worst pair first, each pair "
        "one click from the inspector (from its saved outputs).",
    )
    parser.add_argument("batch", help="a folder written by `diffviewer batch`")
    args = parser.parse_args(argv)
    from diffviewer.batch.summary import read_summary

    read_summary(args.batch)
    problem = gui_problem(prog)
    if problem:
        print(problem, file=sys.stderr)
        return EXIT_ERROR
    from diffviewer.gui.batch_review import launch_review

    return launch_review(args.batch)


def _main_open(argv: Sequence[str], prog: str) -> int:
    """``diffviewer open OUTDIR``: a saved run in the inspector, nothing re-run."""
    parser = argparse.ArgumentParser(
        prog=f"{prog} open",
        description="Show a saved run (an output folder of run, batch or Save all outputs) "
        "in the inspector without re-running it.",
    )
    parser.add_argument("outdir", help="an output folder")
    args = parser.parse_args(argv)
    from diffviewer.results import read_metadata

    read_metadata(args.outdir)
    problem = gui_problem(prog)
    if problem:
        print(problem, file=sys.stderr)
        return EXIT_ERROR
    from diffviewer.gui.saved import launch_saved

    return launch_saved(args.outdir)


class WarningLines(logging.Handler):
    """Print diffviewer's log warnings as ``warning: ...`` lines on the current standard error."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        """Write one record as one line."""
        print(f"warning: {one_line(record)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``diffviewer`` command: :func:`dispatch` with log warnings printed.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (``sys.argv[1:]`` when None).

    Returns
    -------
    int
        The process exit code.
    """
    logger = logging.getLogger(LOGGER)
    handler = WarningLines()
    logger.addHandler(handler)
    try:
        return dispatch(argv)
    finally:
        logger.removeHandler(handler)


def _unfinished(argv: Sequence[str]) -> str:
    """What an interrupt left unwritten, for the commands that write pairs' outputs (the
    windows write only on Save, atomically: nothing to say there)."""
    if argv and argv[0] in ("run", "batch"):
        return "; no output was written for the unfinished pair(s)"
    return ""


def dispatch(argv: Sequence[str] | None = None) -> int:
    """Run the command ``argv`` names; every failure becomes a one-line message and a code.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (``sys.argv[1:]`` when None).

    Returns
    -------
    int
        The process exit code.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = "diffviewer"
    try:
        with terminate_like_interrupt():
            code = _dispatch(argv, prog)
            raise_if_terminated()  # a signal whose exception a finaliser swallowed
            return code
    except NoWorkFound as exc:
        print(f"error: no work: {exc}", file=sys.stderr)
        return EXIT_NO_WORK
    except Cancelled as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DiffviewerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Terminated as exc:
        print(f"error: terminated by {exc}{_unfinished(argv)}", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print(f"error: interrupted{_unfinished(argv)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if os.environ.get("DIFFVIEWER_DEBUG"):
            raise
        print(f"error: {internal_error_message(exc)}", file=sys.stderr)
        return EXIT_INTERNAL


def _dispatch(argv: Sequence[str], prog: str) -> int:
    """Run the subcommand ``argv`` names (the GUI when none)."""
    if argv and argv[0] == "run":
        return _main_run(argv[1:], prog)
    if argv and argv[0] == "batch":
        return _main_batch(argv[1:], prog)
    if argv and argv[0] == "review":
        return _main_review(argv[1:], prog)
    if argv and argv[0] == "open":
        return _main_open(argv[1:], prog)
    if argv and argv[0] == "config":
        parser = argparse.ArgumentParser(
            prog=f"{prog} config", description="Print the effective config as TOML."
        )
        _add_config_options(parser)
        args = parser.parse_args(argv[1:])
        print(to_toml(effective_config(args.config, args.overrides)), end="")
        return EXIT_OK
    return _main_gui(argv, prog)


#: Commands whose process ends without the interpreter's teardown (:func:`end_process`).
QUICK_EXIT_COMMANDS = ("run", "config")


def end_process(code: int, argv: Sequence[str] | None = None) -> int:
    """End the process of a finished ``run`` or ``config`` now; otherwise return ``code``.

    Tearing the interpreter down (every module's objects freed one by one: astropy's
    units and WCS state, scipy's, numpy's) takes 0.2-0.3 s after ``diffviewer run``
    and changes nothing the command leaves behind: its outputs are written, flushed
    to disk and renamed already. For these two commands, when no other Python thread
    runs, the exit handlers run, both streams are flushed, and the process ends with
    ``code`` at once. The GUI (Qt saves its settings while it is torn down) and batch
    (dask's threads) end normally, and so does a process under a profiler, a tracer or a
    debugger (``python -m cProfile`` writes its figures after the command returns).

    Parameters
    ----------
    code : int
        The exit code.
    argv : sequence of str, optional
        The command's arguments (``sys.argv[1:]`` when None).

    Returns
    -------
    int
        ``code``, when the process is to end normally.
    """
    argv = sys.argv[1:] if argv is None else argv
    watched = sys.getprofile() is not None or sys.gettrace() is not None
    if not argv or argv[0] not in QUICK_EXIT_COMMANDS or threading.active_count() > 1 or watched:
        return code
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe, a closed stream
            stream.flush()
    os._exit(code)


def internal_error_message(exc: BaseException) -> str:
    """One line for an unexpected exception (a bug), saying how to get the traceback."""
    text = " ".join(str(exc).split())[:300]
    return (
        f"internal error ({type(exc).__name__}: {text}); no output was written; rerun with "
        "DIFFVIEWER_DEBUG=1 for the traceback and please report it"
    )
