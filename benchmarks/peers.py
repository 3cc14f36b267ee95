"""What the peer benchmarks share: the pairs, HOTPANTS, and timing a whole process.

A pair is two single-HDU FITS files that both programs read as they are: the synthetic
ones are written with their sky added back and a ``GAIN`` card that describes their
noise (science gain 1; the template, a coadd with half the noise, gain 4), so HOTPANTS's
noise model and diffviewer's variance estimate start from the same files. Real pairs
are read from ``../shared/data`` and skipped, with the reason printed, when absent.

Every program runs as a child process; :func:`run_process` returns its wall-clock time
and its own peak resident memory (``wait4``'s rusage of that child alone).
"""

from __future__ import annotations

import compileall
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from diffviewer.exposure import MaskPlane
from diffviewer.synthetic import ISSUE12_CONDITIONS, SyntheticPair, with_defects

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
PEERS = ROOT.parent / "shared" / "peers"
#: Sky level (counts) added back to the synthetic images, so that their pixels are counts.
SKY = 1000.0
#: The synthetic template's gain: its noise is half what its counts give at gain 1.
TEMPLATE_GAIN = 4.0
#: Hot columns (0-based x) of a spoilt synthetic science (``Pair.defects``), and the seed
#: of its cosmic rays.
HOT_COLUMNS = (300, 700)
DEFECT_SEED = 2
#: The planes of a spoilt science's mask (:func:`diffviewer.synthetic.with_defects`).
DEFECT_PLANES = (MaskPlane.BAD, MaskPlane.CR)


@dataclass(frozen=True)
class Pair:
    """One benchmark pair.

    Attributes
    ----------
    name : str
        Row label.
    make : callable
        ``make(folder) -> (science, template)`` paths, or None when the data is absent.
    hotpants_noise : tuple of str
        HOTPANTS's gain and read-noise flags for this pair.
    make_kwargs : dict
        For synthetic pairs: the :func:`diffviewer.synthetic.make_pair` arguments.
    hotpants_extra : tuple of str
        Flags that override the recommended ones (e.g. the valid range of a
        sky-subtracted image).
    defects : float
        For synthetic pairs: the share of the science's pixels hit by cosmic rays (with
        :data:`HOT_COLUMNS`), masked and given to both programs (:func:`write_pair_files`).
    """

    name: str
    make: Callable[[Path], tuple[Path, Path] | None]
    hotpants_noise: tuple[str, ...]
    make_kwargs: dict[str, object] = field(default_factory=dict)
    hotpants_extra: tuple[str, ...] = ()
    defects: float = 0.0


def write_synthetic(folder: Path, tag: str, kwargs: dict[str, object]) -> tuple[Path, Path]:
    """Render a synthetic pair and write it as two single-HDU FITS files (sky added back)."""
    from diffviewer.synthetic import make_pair

    return write_pair_files(folder, tag, make_pair(**kwargs))  # type: ignore[arg-type]


def write_pair_files(
    folder: Path, tag: str, pair: SyntheticPair, defects: float = 0.0
) -> tuple[Path, Path]:
    """Write a synthetic pair as the two files both programs read (see the module doc);
    with ``defects``, its science spoilt by cosmic rays on that share of its pixels and
    :data:`HOT_COLUMNS`, its mask in a ``MASK`` HDU beside the image (LSST's planes,
    ``MP_*`` cards: diffviewer reads it, HOTPANTS reads the image alone) and again as
    HOTPANTS reads it (:func:`hotpants_mask`)."""
    science = pair.science
    if defects:
        science, _ = with_defects(science, defects, HOT_COLUMNS, DEFECT_SEED)
    paths = []
    for role, exposure, gain in (
        ("science", science, 1.0),
        ("template", pair.template, TEMPLATE_GAIN),
    ):
        header = exposure.wcs.to_header() if exposure.wcs is not None else fits.Header()
        header["GAIN"] = (gain, "electrons per count")
        path = folder / f"{tag}_{role}.fits"
        hdus = [fits.PrimaryHDU((exposure.image + SKY).astype(np.float32), header=header)]
        if defects and role == "science":
            planes = fits.Header({f"MP_{p.name}": int(p).bit_length() - 1 for p in DEFECT_PLANES})
            hdus.append(fits.ImageHDU(exposure.mask, planes, name="MASK"))
        fits.HDUList(hdus).writeto(path, overwrite=True)
        paths.append(path)
    if defects:
        mask = (science.mask != 0).astype(np.int16)
        fits.PrimaryHDU(mask).writeto(hotpants_mask(paths[0]), overwrite=True)
    return paths[0], paths[1]


def hotpants_mask(science: Path) -> Path:
    """Where :func:`write_pair_files` puts a spoilt science's mask for HOTPANTS's ``-imi``
    (nonzero where spoilt)."""
    return science.with_name(f"{science.stem}_mask.fits")


def _synthetic(name: str, tag: str, defects: float = 0.0, **kwargs: object) -> Pair:
    """A synthetic pair rendered on demand."""
    kwargs = {"gain": 1.0, "sky": SKY, "tmpl_sky": SKY, **kwargs}
    return Pair(
        name,
        lambda folder: write_synthetic(folder, tag, kwargs),
        ("-tg", str(TEMPLATE_GAIN), "-tr", "0", "-ig", "1", "-ir", "0"),
        kwargs,
        defects=defects,
    )


def _real(
    name: str, science: Path, template: Path, noise: Sequence[str], extra: Sequence[str] = ()
) -> Pair:
    """A pair of files from ``../shared/data`` (None when absent)."""

    def make(_: Path) -> tuple[Path, Path] | None:
        return (science, template) if science.is_file() and template.is_file() else None

    return Pair(name, make, tuple(noise), hotpants_extra=tuple(extra))


PAIRS = {
    "synthetic1k": _synthetic(
        "synthetic 1024^2", "s1k", shape=(1024, 1024), n_stars=1200, seed=1, **ISSUE12_CONDITIONS
    ),
    "goto": _real(
        "GOTO 1850^2",
        DATA / "goto" / "1.fits",
        DATA / "goto" / "2.fits",
        ("-tg", "1", "-tr", "0", "-ig", "1", "-ir", "0"),
    ),
    "synthetic2kx4k": _synthetic(
        "synthetic 2048 x 4096, varying PSF",
        "s2k4k",
        shape=(4096, 2048),
        n_stars=8000,
        seed=2,
        sci_fwhm_gradient=0.4,
        sci_ellipticity=(0.0, 0.15),
        sci_angle_deg=(0.0, 60.0),
        **ISSUE12_CONDITIONS,
    ),
    "synthetic4k": _synthetic(
        "synthetic 4096^2, 20,000 stars",
        "s4k",
        shape=(4096, 4096),
        n_stars=20000,
        seed=42,
        transients=[(1000.0, 1000.0, 2e4)],
    ),
}


#: Issue 12's pairs for the science table (bench_peers_science.py).
SCIENCE_PAIRS = {
    "constant": _synthetic(
        "synthetic 1024^2, constant Moffat PSF",
        "c1k",
        shape=(1024, 1024),
        n_stars=1200,
        seed=11,
        **ISSUE12_CONDITIONS,
    ),
    "varying": _synthetic(
        "synthetic 1024 x 2048, varying PSF",
        "v1k2k",
        shape=(2048, 1024),
        n_stars=2400,
        seed=12,
        sci_fwhm_gradient=0.4,
        sci_ellipticity=(0.0, 0.15),
        sci_angle_deg=(0.0, 60.0),
        **ISSUE12_CONDITIONS,
    ),
    "defects": _synthetic(
        "synthetic 1024^2, constant Moffat PSF, its science with cosmic rays on 0.3 % of"
        " its pixels and two hot columns, masked (both programs given the mask)",
        "d1k",
        defects=0.003,
        shape=(1024, 1024),
        n_stars=1200,
        seed=11,
        **ISSUE12_CONDITIONS,
    ),
    "goto": PAIRS["goto"],
    "demo": _real(
        "demo stacks (DECam 256^2)",
        DATA / "decam_mini" / "peer_output_sfft" / "Stack-DEC-OBS04.fits",
        DATA / "decam_mini" / "peer_output_sfft" / "Stack-DEC-OBS18.fits",
        ("-tg", "4", "-tr", "5", "-ig", "4", "-ir", "5"),
        # 256^2 holds too few stamps for a spatial kernel: HOTPANTS's -ko 2 difference
        # is +-1e8 garbage there, -ko 0 -bgo 0 a sound one.
        ("-tl", "-1000", "-il", "-1000", "-nsx", "4", "-nsy", "4", "-ko", "0", "-bgo", "0"),
    ),
    "properimage": _real(
        "properimage 1024 x 682",
        DATA / "properimage" / "aligned_eso085-030-004.fit",
        DATA / "properimage" / "aligned_eso085-030-005.fit",
        ("-tg", "1", "-tr", "0", "-ig", "1", "-ir", "0"),
    ),
}


def hotpants_binary() -> Path | None:
    """Build HOTPANTS into /tmp/hotpants when needed; None when it cannot be built."""
    script = PEERS / "build-hotpants.sh"
    if not script.is_file():
        return None
    proc = subprocess.run(
        [str(script), "/tmp/hotpants"], capture_output=True, text=True, check=False
    )
    binary = Path(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    return binary if binary is not None and binary.is_file() else None


def hotpants_command(
    binary: Path, pair: Pair, science: Path, template: Path, out: Path
) -> list[str]:
    """HOTPANTS with its recommended flags (``../shared/peers/README.md``)."""
    out.mkdir(parents=True, exist_ok=True)
    mask = ("-imi", str(hotpants_mask(science))) if pair.defects else ()
    return [
        str(binary),
        *("-inim", str(science), "-tmplim", str(template), *mask),
        *("-outim", str(out / "diff.fits"), "-omi", str(out / "mask.fits")),
        *("-tu", "60000", "-iu", "60000", "-tl", "0", "-il", "0"),
        *pair.hotpants_noise,
        *("-r", "10", "-rss", "15", "-nsx", "10", "-nsy", "10", "-ko", "2", "-bgo", "1"),
        *("-n", "i"),
        *pair.hotpants_extra,
    ]


def read_hotpants(out: Path) -> tuple[np.ndarray, fits.Header]:
    """The difference a :func:`hotpants_command` run wrote in ``out`` (float64, NaN where
    its mask is set) and that image's header (``KSUM00``, ``CONVOL00``)."""
    with fits.open(out / "diff.fits") as hdul:
        diff = hdul[0].data.astype(np.float64)
        header = hdul[0].header
    diff[fits.getdata(out / "mask.fits") != 0] = np.nan
    return diff, header


@dataclass(frozen=True)
class ProcessFigures:
    """Wall-clock seconds and peak RSS (MB) of one finished child process."""

    wall_s: float
    peak_rss_mb: float
    returncode: int


#: GNU time: its child's peak RSS is the program's own. A child forked straight from this
#: (numpy-laden) process would report at least this process's RSS at the fork.
TIME = Path("/usr/bin/time")


def run_process(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    cwd: Path | None = None,
) -> ProcessFigures:
    """Run a program to its end and measure it as ``/usr/bin/time`` does.

    Parameters
    ----------
    argv : sequence of str
        The command.
    env : dict, optional
        Its environment.
    log : Path, optional
        Where its standard output and error go (discarded otherwise).
    cwd : Path, optional
        Its working folder (``python -m`` imports from there first).

    Returns
    -------
    ProcessFigures
        Wall time from start to reaped (GNU time's own start-up, ~1 ms, included) and
        the program's peak RSS (GNU time's ``%M``; without GNU time, ``wait4``'s, which
        is never below this process's RSS).
    """
    with tempfile.TemporaryDirectory() as tmp:
        rss_file = Path(tmp) / "rss"
        wrapped = [str(TIME), "-f", "%M", "-o", str(rss_file), *argv] if TIME.exists() else argv
        sink = open(log, "w") if log is not None else subprocess.DEVNULL
        try:
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                wrapped, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=cwd
            )
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            if log is not None:
                sink.close()  # type: ignore[union-attr]
        kb = float(usage.ru_maxrss)
        if TIME.exists() and rss_file.exists():
            kb = float(rss_file.read_text().split()[-1])
    return ProcessFigures(wall, kb / 1024.0, proc.returncode)


def diffviewer_env(tree: Path) -> dict[str, str]:
    """The environment that runs the ``diffviewer`` package of a source tree.

    Run ``python -m diffviewer`` with ``cwd=tree`` too: ``-m`` puts the working folder
    before ``PYTHONPATH``. The tree's package is byte-compiled first (a no-op when its
    ``__pycache__`` is up to date), as an installed package is: where
    ``PYTHONDONTWRITEBYTECODE`` is set, every timed process would otherwise compile its
    ~10,000 lines from source (0.3 s of a GOTO run's wall time), a cost no user pays.
    """
    compileall.compile_dir(str(tree / "diffviewer"), quiet=1)
    return {**os.environ, "PYTHONPATH": str(tree)}
