"""IM_PATH -> work list: which files (and which HDU of each) to process, and where outputs go.

IM_PATH forms (PRODUCT.md §2):

``file.fits[N]``
    only HDU ``N`` (0-based); output ``file.masks<N>.fits``;
``file.fits``, ``file.fits.fz``, ``file.fits.gz`` (also ``.fit``, ``.fts``)
    every image HDU; output ``file.masks.fits``;
a directory
    every FITS file in it (not recursive), our own outputs (``*.masks*.fits``) excluded;
``something.list``
    one path per line, each may carry ``[N]``; blank lines and ``#`` comment lines are ignored.

Expansion never opens a FITS file: a missing entry becomes a :class:`Task` whose reading fails later
with its own error line, so that one bad entry does not stop the others. Failures that concern the
IM_PATH itself (a missing list file, an empty directory) raise :class:`~maximask.errors.MaximaskError`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from .errors import MaximaskError

#: Suffixes of FITS files, optionally followed by a compression suffix.
FITS_SUFFIXES = (".fits", ".fit", ".fts")
COMPRESSION_SUFFIXES = (".fz", ".gz")
LIST_SUFFIX = ".list"

_HDU_RE = re.compile(r"^(?P<path>.+)\[(?P<hdu>\d+)\]$")
_OWN_OUTPUT_RE = re.compile(r"\.masks\d*\.fits$", re.IGNORECASE)


class Task(NamedTuple):
    """One unit of work.

    Attributes
    ----------
    path : pathlib.Path
        The FITS file to read.
    hdu : int or None
        The HDU to process (0-based), or None for every image HDU of the file.
    label : str
        How the input is named in messages (the path as the user wrote it, with ``[N]``).
    """

    path: Path
    hdu: int | None
    label: str


def split_hdu(spec: str) -> tuple[str, int | None]:
    """Split ``file.fits[N]`` into ``("file.fits", N)``; other strings give ``(spec, None)``.

    A file whose name really ends in ``[N]`` is taken literally when it exists.
    """
    m = _HDU_RE.match(spec)
    if m is None or Path(spec).exists():
        return spec, None
    return m.group("path"), int(m.group("hdu"))


def is_fits_name(name: str) -> bool:
    """True for names ending in ``.fits``/``.fit``/``.fts``, optionally followed by ``.fz``/``.gz``."""
    lower = name.lower()
    for comp in COMPRESSION_SUFFIXES:
        if lower.endswith(comp):
            lower = lower[: -len(comp)]
            # a bare ``image.fz`` is fpack's usual name too
            if comp == ".fz" and not lower.endswith(FITS_SUFFIXES):
                return True
            break
    return lower.endswith(FITS_SUFFIXES)


def is_own_output(name: str) -> bool:
    """True for names of maximask outputs (``*.masks.fits``, ``*.masks<N>.fits``)."""
    return _OWN_OUTPUT_RE.search(name) is not None


def output_name(path: str | Path, hdu: int | None) -> str:
    """Output file name for an input: ``file.masks.fits`` or ``file.masks<N>.fits``.

    The compression suffix (``.fz``, ``.gz``) and then the FITS suffix are removed from the input
    name; a name with neither keeps its full name as the stem.
    """
    stem = Path(path).name
    lower = stem.lower()
    for comp in COMPRESSION_SUFFIXES:
        if lower.endswith(comp):
            stem, lower = stem[: -len(comp)], lower[: -len(comp)]
            break
    for suffix in FITS_SUFFIXES:
        if lower.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return f"{stem}.masks{'' if hdu is None else hdu}.fits"


def output_path(task: Task, out_dir: str | Path | None = None) -> Path:
    """Where the output of ``task`` is written: next to the input, or in ``out_dir``."""
    directory = Path(out_dir) if out_dir is not None else task.path.parent
    return directory / output_name(task.path, task.hdu)


def fits_files_in(directory: str | Path) -> list[Path]:
    """FITS files of a directory, sorted by name, our own outputs and hidden files excluded.

    Raises
    ------
    MaximaskError
        If the directory cannot be listed or holds no FITS file.
    """
    directory = Path(directory)
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        raise MaximaskError(directory, f"cannot list directory ({exc.strerror})") from None
    files = [
        p
        for p in entries
        if not p.name.startswith(".") and is_fits_name(p.name) and not is_own_output(p.name) and p.is_file()
    ]
    if not files:
        raise MaximaskError(directory, "directory holds no FITS file")
    return files


def read_list(list_path: str | Path) -> list[tuple[str, int]]:
    """Entries of a ``.list`` file as ``(entry, line number)``; blank and ``#`` lines skipped.

    Raises
    ------
    MaximaskError
        If the file cannot be read or lists nothing.
    """
    list_path = Path(list_path)
    try:
        text = list_path.read_text()
    except FileNotFoundError:
        raise MaximaskError(list_path, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MaximaskError(list_path, f"cannot read list file ({exc})") from None
    entries = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            entries.append((line, lineno))
    if not entries:
        raise MaximaskError(list_path, "list file names no input")
    return entries


def _resolve_list_entry(entry: str, list_path: Path) -> str:
    """Relative entries are relative to the working directory (as in MaxiMask); if nothing is
    found there but the entry exists next to the list file, that file is used."""
    path, _ = split_hdu(entry)
    if Path(path).is_absolute() or Path(path).exists():
        return entry
    if (list_path.parent / path).exists():
        return str(list_path.parent / entry)
    return entry


def expand(im_path: str) -> list[Task]:
    """Expand one IM_PATH into tasks.

    Parameters
    ----------
    im_path : str
        A file (optionally with ``[N]``), a directory or a ``.list`` file.

    Returns
    -------
    list of Task
        In processing order. Files are not opened: a missing file gives a task that fails when read.

    Raises
    ------
    MaximaskError
        For a missing or unreadable list file, a list naming nothing, or a directory without
        FITS files.
    """
    spec = str(im_path)
    path, hdu = split_hdu(spec)
    p = Path(path)
    if hdu is None and p.is_dir():
        return [Task(f, None, str(f)) for f in fits_files_in(p)]
    if hdu is None and p.name.lower().endswith(LIST_SUFFIX):
        tasks = []
        for entry, _ in read_list(p):
            entry = _resolve_list_entry(entry, p)
            epath, ehdu = split_hdu(entry)
            tasks.append(Task(Path(epath), ehdu, entry))
        return tasks
    return [Task(p, hdu, spec)]
