"""`diffviewer open` and `diffviewer review` given the wrong thing: the real cause, the way.

The audit gave `review sci.fits` ("cannot be read as ECSV (utf-8 codec...); rerun the
batch"), `open sci.fits` ("sci.fits/metadata.json cannot be read as JSON ([Errno 20] Not
a directory); rerun the pair"), `open nonexist` (never said it does not exist), and a
batch folder to `open` or a run's to `review` (never pointed to the other command). Real
folders: a run of a tiny synthetic pair, and a batch folder made of the batch's own
pieces (a pair run into it, its row from its outputs, ``write_summary``).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from astropy.io import fits

from diffviewer import cli
from diffviewer.batch.summary import read_summary, row_from_outputs, write_summary
from diffviewer.config import SubtractionConfig
from diffviewer.errors import InputError
from diffviewer.results import read_metadata
from diffviewer.synthetic import make_pair


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sci.fits and tmpl.fits, a run of them (``run``), a batch of one pair (``batch``,
    its pair ``batch/p1``), an empty folder and a text file."""
    root = tmp_path_factory.mktemp("folders")
    pair = make_pair((96, 96), 40, seed=1)
    for exposure, name in ((pair.science, "sci.fits"), (pair.template, "tmpl.fits")):
        header = fits.Header(exposure.header)
        fits.PrimaryHDU(exposure.image.astype("f4"), header=header).writeto(root / name)
    sci, tmpl = str(root / "sci.fits"), str(root / "tmpl.fits")
    config = SubtractionConfig()
    for out in (root / "run", root / "batch" / "p1"):
        code = cli.run_pair(sci, tmpl, out, config, overwrite=False, strict=False, quiet=True)
        assert code == 0
    row = {"name": "p1", "science": sci, "template": tmpl, "status": "ok"}
    out = root / "batch" / "p1"
    write_summary(root / "batch", [{**row, "output": str(out), **row_from_outputs(out)}])
    (root / "empty").mkdir()
    (root / "notes.txt").write_text("not a folder\n")
    return root


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


#: (command, its argument under the fixture's folder, what the one line must say)
CASES = [
    ("open", "sci.fits", r"sci\.fits is a file, not a folder; give the folder a run wrote"),
    ("open", "nonexist", r"nonexist does not exist; give the folder a run wrote"),
    ("open", "empty", r"empty holds no metadata\.json: it is not a run's output folder"),
    (
        "open",
        "batch",
        r"batch is a batch folder \(it holds summary\.ecsv\), not a run's: review it with "
        r"`diffviewer review \S*batch`",
    ),
    ("open", "batch/summary.ecsv", r"batch is a batch folder .*`diffviewer review \S*batch`"),
    ("open", "run/metadata.json", r"run/metadata\.json is a run's metadata\.json; give its folder"),
    ("review", "sci.fits", r"sci\.fits is a file, not a batch folder; give the folder diffviewer"),
    ("review", "notes.txt", r"notes\.txt is a file, not a batch folder"),
    ("review", "nonexist", r"nonexist does not exist; give the folder diffviewer batch wrote"),
    ("review", "empty", r"empty holds no summary\.ecsv: it is not a batch folder"),
    (
        "review",
        "run",
        r"run is a saved run's folder \(it holds metadata\.json\), not a batch's: open it with "
        r"`diffviewer open \S*run`",
    ),
    (
        "review",
        "batch/p1",
        r"p1 is a saved run's folder .*`diffviewer open \S*p1`.*, or review its batch with "
        r"`diffviewer review \S*batch`",
    ),
]


@pytest.mark.parametrize(("command", "given", "said"), CASES, ids=[f"{c} {g}" for c, g, _ in CASES])
def test_the_wrong_folder_or_file_says_what_it_is_and_which_command_takes_it(
    folders: Path, capsys: pytest.CaptureFixture[str], command: str, given: str, said: str
) -> None:
    before = _digest(folders)
    code = cli.main([command, str(folders / given)])
    err = capsys.readouterr().err
    assert code == cli.EXIT_ERROR, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(said, lines[0]), lines[0]
    for wrong in ("ECSV", "JSON", "Errno", "rerun the"):
        assert wrong not in lines[0], lines[0]
    assert _digest(folders) == before, "a refused open or review changed a file"


def test_the_readers_accept_what_the_commands_take(folders: Path) -> None:
    """The checks refuse nothing the readers took: a run's folder, a batch folder or its
    summary file (whose folder is the batch's: its pairs are found there)."""
    from diffviewer.paths import require_batch_folder

    assert read_metadata(folders / "run")["inputs"]
    assert list(read_summary(folders / "batch")["name"]) == ["p1"]
    assert list(read_summary(folders / "batch" / "summary.ecsv")["name"]) == ["p1"]
    assert require_batch_folder(folders / "batch" / "summary.ecsv") == folders / "batch"
    with pytest.raises(InputError, match="is a batch folder"):
        read_metadata(folders / "batch")
