"""Opening pairs: file dialogs, multi-extension files, pairs lists, dropped files, recent pairs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from astropy.io import fits
from PyQt6.QtGui import QAction
from PyQt6.QtWidgets import QFileDialog, QInputDialog, QMenu

from diffviewer.companions import (
    NO_COMPANIONS,
    Companions,
    from_pair_record,
    pair_record,
    read_pairs_with_companions,
)
from diffviewer.errors import DiffviewerError, InputError
from diffviewer.gui.model import Pair, describe_template
from diffviewer.paths import TEMPLATE_SEPARATOR, extension_text, template_specs

if TYPE_CHECKING:
    from diffviewer.gui.planes_dialog import PlanesDialog
    from diffviewer.gui.window import MainWindow

FITS_FILTER = "FITS (*.fits *.fit *.fts *.fits.fz *.fits.gz);;All files (*)"
RECENT_MAX = 10


@dataclass(frozen=True)
class FileImage:
    """One image of a multi-extension file, as offered to be opened.

    Attributes
    ----------
    name : str
        Its EXTNAME (empty when its header has none).
    extension : str
        The text in a spec's brackets that reads this HDU and no other
        (:func:`~diffviewer.paths.extension_text`): ``SCI``, ``SCI,2`` or an index.
    label : str
        What a dialog shows: the extension, the HDU's index, EXTNAME, EXTVER and size.
    """

    name: str
    extension: str
    label: str


def image_extensions(path: Path) -> list[FileImage]:
    """The images of a FITS file that a spec can name, as the reader takes them.

    The file is opened as :func:`diffviewer.io.read_exposure` opens it (a missing file,
    a folder, a truncated or unreadable file is refused with its cause); an image is an
    HDU the reader reads as one (two axes longer than a pixel: a cube of one plane too),
    other than a plane of another image (a variance, mask or PSF).

    Parameters
    ----------
    path : Path
        A FITS file.

    Returns
    -------
    list of FileImage
        In the file's order.

    Raises
    ------
    InputError
        When the file cannot be read as FITS or holds fewer than two images.
    """
    from diffviewer import io

    with io.open_fits(path, "multi-extension") as hdul:
        hdus = [(hdu.name, hdu.ver) for hdu in hdul]
        images = [_file_image(hdul[i], i, extension_text(hdus, i)) for i in io.image_hdus(hdul)]
    if len(images) < 2:
        raise InputError(
            f"multi-extension file {path} holds {len(images)} image(s); a pair in one file "
            "needs two (e.g. SCI and REF); otherwise open two files"
        )
    return images


def _file_image(hdu: fits.PrimaryHDU | fits.ImageHDU, index: int, extension: str) -> FileImage:
    """An image HDU (at ``index`` in its file, read by ``extension``) as offered."""
    name = str(hdu.header.get("EXTNAME", "")).strip()
    named = [f"EXTNAME {name}"] if name else []
    if "EXTVER" in hdu.header:
        named.append(f"EXTVER {hdu.ver}")
    size = " x ".join(str(n) for n in reversed(hdu.shape) if n > 1)
    return FileImage(name, extension, ", ".join([f"{extension}: HDU {index}", *named, size]))


def template_spec(pieces: Sequence[str | Path]) -> str:
    """The template spec of one file or of pieces (joined by ``;``, as in a pairs list)."""
    return TEMPLATE_SEPARATOR.join(str(p) for p in pieces)


#: EXTNAMEs proposed as the science image of a file, and as its template.
SCIENCE_NAMES = ("SCI", "SCIENCE", "NEW", "IMAGE")
TEMPLATE_NAMES = ("REF", "TMPL", "TEMPLATE")


def default_extensions(images: Sequence[FileImage]) -> tuple[FileImage, FileImage]:
    """The science and template images to propose: SCI-like and REF/TMPL-like names first,
    else the file's first images in order (two images of one name: the first, then the
    second).

    Parameters
    ----------
    images : sequence of FileImage
        At least two, as :func:`image_extensions` gives them.

    Returns
    -------
    (FileImage, FileImage)
        Two different images: science, template.
    """
    sci = next((im for im in images if im.name.upper() in SCIENCE_NAMES), images[0])
    others = [im for im in images if im != sci]
    tmpl = next((im for im in others if im.name.upper() in TEMPLATE_NAMES), others[0])
    return sci, tmpl


class Opener:
    """The ways of opening a pair in a window.

    Parameters
    ----------
    window : MainWindow
        Opens the pairs (:meth:`MainWindow.open_pair`) and remembers folders.
    """

    def __init__(self, window: MainWindow) -> None:
        self.w = window
        self.recent_menu = QMenu("Recent pairs", window)
        #: The planes dialog last opened (File > Planes files of this pair…), or None.
        self.planes: PlanesDialog | None = None

    def ask_file(
        self, title: str, folder_key: str, filters: str, name: str = "", *, save: bool = False
    ) -> Path | None:
        """Ask for a file to open (or save), starting in the folder remembered under
        ``folder_key`` (with ``name`` proposed), and remember the chosen file's folder."""
        settings = self.w.settings
        folder = Path(str(settings.value(folder_key, "")))
        ask = QFileDialog.getSaveFileName if save else QFileDialog.getOpenFileName
        path, _ = ask(self.w, title, str(folder / name) if name else str(folder), filters)
        if not path:
            return None
        settings.setValue(folder_key, str(Path(path).parent))
        return Path(path)

    def ask_templates(self) -> list[Path]:
        """Ask for the template: one file, or several (its pieces), starting in the folder
        of the last input and remembering the chosen files' folder."""
        settings = self.w.settings
        folder = str(settings.value("last_input_folder", ""))
        paths, _ = QFileDialog.getOpenFileNames(
            self.w,
            "Template image (select several files for a template in pieces)",
            folder,
            FITS_FILTER,
        )
        if paths:
            settings.setValue("last_input_folder", str(Path(paths[0]).parent))
        return [Path(p) for p in paths]

    def open_pair_dialog(self) -> None:
        """Ask for a science file, then the template file or its pieces (several files)."""
        sci = self.ask_file("Science image", "last_input_folder", FITS_FILTER)
        pieces = self.ask_templates() if sci else []
        if sci is not None and pieces:
            self.w.open_specs(str(sci), template_spec(pieces))

    def planes_dialog(self) -> None:
        """Ask for the current pair's planes files (File > Planes files of this pair…:
        each input's mask and variance or weight, and the mask's bit map,
        :class:`~diffviewer.gui.planes_dialog.PlanesDialog`), then read the pair again with
        them and run it."""
        from diffviewer.gui.planes_dialog import PlanesDialog

        pair = self.w.pair
        if pair is None or not isinstance(pair.science, str):
            self.w.report_problem(InputError("open a pair of files first, then give its planes"))
            return
        pieces = pair.companions[1] or (NO_COMPANIONS,) * len(pair.pieces)
        labels = (
            ["Template"] if len(pieces) == 1 else [f"Piece {i + 1}" for i in range(len(pieces))]
        )
        dialog = PlanesDialog(
            ["Science", *labels],
            [pair.companions[0], *pieces],
            lambda title: self.ask_file(title, "last_input_folder", FITS_FILTER),
            self.w,
        )
        dialog.accepted.connect(lambda: self._reopen_with(pair, dialog.chosen))
        self.planes = dialog
        dialog.open()

    def _reopen_with(self, pair: Pair, chosen: Sequence[Companions]) -> None:
        """Open ``pair`` again with ``chosen`` companions (the science's, then each piece's)."""
        given = (chosen[0], tuple(chosen[1:]))
        self.w.open_pair(Pair(pair.science, pair.template, pair.name, given))

    def open_mef_dialog(self) -> None:
        """Ask for one multi-extension file, then which extensions are science and template."""
        path = self.ask_file("Multi-extension FITS file", "last_input_folder", FITS_FILTER)
        if path is None:
            return
        try:
            images = image_extensions(path)
        except InputError as exc:
            self.w.report_problem(exc)
            return
        labels = [image.label for image in images]
        guess = default_extensions(images)
        chosen = []
        for role, proposed in zip(("Science", "Template"), guess, strict=True):
            label, ok = QInputDialog.getItem(
                self.w, f"{role} extension", f"{role}:", labels, images.index(proposed), False
            )
            if not ok:
                return
            chosen.append(images[labels.index(label)])
        self.w.open_specs(*(f"{path}[{image.extension}]" for image in chosen))

    def open_pairs_dialog(self) -> None:
        """Ask for a CSV list of pairs (columns science, template, optional name)."""
        path = self.ask_file("Pairs list", "last_input_folder", "CSV (*.csv);;All (*)")
        if path is not None:
            self.open_pairs_file(str(path))

    def open_pairs_file(self, path: str) -> None:
        """Load a CSV list of pairs and open the first (each with the companion files and
        bit map its row gives: :func:`~diffviewer.companions.read_pairs_with_companions`).

        Every failure (missing file, a folder, not UTF-8, short rows, a name that is not
        a plain folder name) becomes a message in the window; the open pair stays.
        """
        try:
            listed, given = read_pairs_with_companions(path)
            pairs = [Pair(s, t, n, given[n]) for s, t, n in listed]
        except (DiffviewerError, OSError) as exc:
            self.w.report_problem(exc, f"Cannot open the pairs list {path}")
            return
        self.w.set_pairs(pairs)

    def open_dropped(self, paths: Sequence[str]) -> None:
        """Open dropped files: two files (science first), or one multi-extension file."""
        if len(paths) == 2:
            self.w.open_specs(paths[0], paths[1])
        elif len(paths) == 1:
            try:
                pair = default_extensions(image_extensions(Path(paths[0])))
            except InputError as exc:
                self.w.report_problem(exc)
                return
            self.w.open_specs(*(f"{paths[0]}[{image.extension}]" for image in pair))
        else:
            self.w.report_problem(
                InputError(
                    f"dropped {len(paths)} files: drop the science and the template "
                    "together, or one multi-extension file"
                )
            )

    def remember_recent(self, pair: Pair) -> None:
        """Put a pair of files at the top of File > Recent pairs (with its companion files
        and mask bit map, when it has some: :func:`~diffviewer.companions.pair_record`)."""
        if not all(isinstance(s, str) for s in (pair.science, pair.template)):
            return
        entry = f"{pair.science}\t{pair.template}"
        record = pair_record(pair.companions)
        if any(record["science"].values()) or any(record["pieces"]):
            entry += f"\t{json.dumps(record)}"
        recent = [r for r in self.recent() if r != entry]
        self.w.settings.setValue("recent_pairs", [entry, *recent][:RECENT_MAX])
        self.refresh_recent()

    def recent(self) -> list[str]:
        """The recent pairs, newest first, as ``science<TAB>template[<TAB>companions]``."""
        value = self.w.settings.value("recent_pairs", [])
        if isinstance(value, str):
            return [value]
        return [str(v) for v in (value or [])]

    def refresh_recent(self) -> None:
        """Rebuild File > Recent pairs."""
        self.recent_menu.clear()
        for entry in self.recent():
            sci, tmpl, *record = entry.split("\t", 2)
            pieces = template_specs(tmpl)
            pair = Pair(sci, tmpl)
            if record:
                try:
                    pair = Pair(sci, tmpl, "", from_pair_record(json.loads(record[0])))
                except (ValueError, AttributeError, DiffviewerError):
                    continue  # damaged settings: not offered without the files it named
            action = QAction(f"{Path(sci).name} — {describe_template(pieces)}", self.recent_menu)
            self.recent_menu.addAction(action)
            action.triggered.connect(lambda _=False, p=pair: self.w.open_pair(p))
