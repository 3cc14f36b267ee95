"""The wheel and sdist carry everything diffviewer reads at run time, demo pair included.

A cluster node installs diffviewer from a wheel, not as an editable checkout; these
tests build the sdist and the wheel (from the sdist, as ``python -m build`` does),
install the wheel into a fresh virtual environment and run the demo headless from
there. No network: the build uses the running environment's setuptools
(``--no-isolation``) and the new environment borrows the running one's dependencies
through a ``.pth`` file written after the install, so its own copy of diffviewer
comes first on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: pip options: the wheel alone, nothing fetched.
PIP_OFFLINE = ("--no-deps", "--no-index", "--quiet")
#: Options of the headless demo run (a constant kernel: the demo's 256 x 256 has few stars).
QUICK = ("--quiet", "--set", "kernel.spatial_order=0")
#: What the build needs from the source tree.
SOURCES = ("diffviewer", "resources", "pyproject.toml", "setup.py", "README.md")


def _clean_env() -> dict[str, str]:
    """The environment without PYTHONPATH, so nothing points back at the source tree."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and wheel built from a copy of the source tree."""
    pytest.importorskip("build", reason="the test extra's `build` is not installed")
    work = tmp_path_factory.mktemp("build")
    src = work / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    out = work / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
        capture_output=True,
        text=True,
        env=_clean_env(),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _source_files() -> set[str]:
    """Every module of the package and every resource file, as paths in the wheel."""
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "diffviewer").rglob("*.py")}
    resources = {
        "diffviewer/" + p.relative_to(ROOT).as_posix()
        for p in (ROOT / "resources").rglob("*")
        if p.is_file()
    }
    return modules | resources


def test_wheel_and_sdist_carry_every_module_and_resource(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    with zipfile.ZipFile(wheel) as zf:
        in_wheel = set(zf.namelist())
    missing = _source_files() - in_wheel
    assert not missing, f"the wheel lacks {sorted(missing)}"
    with tarfile.open(sdist) as tf:
        in_sdist = {name.split("/", 1)[1] for name in tf.getnames() if "/" in name}
    demo = {p.relative_to(ROOT).as_posix() for p in (ROOT / "resources").rglob("*.fits")}
    assert demo and demo <= in_sdist, f"the sdist lacks {sorted(demo - in_sdist)}"


@pytest.mark.slow
def test_the_installed_wheel_runs_the_demo_headless(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", *PIP_OFFLINE, str(wheel)],
        capture_output=True,
        text=True,
        env=_clean_env(),
    )
    assert install.returncode == 0, install.stdout + install.stderr
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The dependencies of the running environment, after the venv's own site-packages.
    (Path(site) / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import json, diffviewer.io as m; "
            "print(json.dumps([m.__file__, *map(str, m.demo_pair())]))",
        ],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=tmp_path,
    )
    assert where.returncode == 0, where.stderr
    module, science, template = json.loads(where.stdout)
    for path in (module, science, template):
        assert Path(path).is_relative_to(site), f"{path} is not the installed copy in {site}"
    out = tmp_path / "out"
    run = subprocess.run(
        [str(venv / "bin" / "diffviewer"), "run", science, template, "--out", str(out), *QUICK],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["inputs"]["science"]["source"].startswith(site)
    assert (out / "difference.fits").is_file()
