"""The three configuration files: ``classes.flags``, ``classes.priors``, ``classes.thresh``.

Each holds one line per class of :data:`maximask.classes.CLASSES`, in class order, as ``ABBR value``.
As in MaxiMask only the order matters: the abbreviation is a reading aid and is not checked (MaxiMask's
own files call trails ``STL``). Blank lines and lines starting with ``#`` are ignored.

=================  ==========================  ====================================
file               value                       meaning
=================  ==========================  ====================================
``classes.flags``  0 or 1                      write this class (at least one)
``classes.priors`` float in (0, 1)             expected pixel frequency of the class
``classes.thresh`` float in [0, 1]             probability above which a pixel is flagged
=================  ==========================  ====================================

Every problem raises :class:`~maximask.errors.UsageError` naming the file and the line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .classes import N_CLASSES
from .errors import UsageError

FLAGS_FILE = "classes.flags"
PRIORS_FILE = "classes.priors"
THRESH_FILE = "classes.thresh"


def _read_values(path: Path) -> list[tuple[int, str]]:
    """(line number, value text) for each entry line; checks the line count and the two columns."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(path, "configuration file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(path, f"cannot read configuration file ({exc})") from None
    entries = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 2:
            raise UsageError(path, f"line {lineno}: expected 'ABBR value', got {line.strip()!r}")
        entries.append((lineno, fields[1]))
    if len(entries) != N_CLASSES:
        raise UsageError(path, f"expected {N_CLASSES} lines 'ABBR value' (one per class), found {len(entries)}")
    return entries


def read_flags(path: str | Path) -> np.ndarray:
    """Read ``classes.flags``.

    Returns
    -------
    ndarray of bool, shape (14,)
        True for the classes to write.

    Raises
    ------
    UsageError
        Wrong line count, a value other than 0/1, or no class flagged.
    """
    path = Path(path)
    flags = []
    for lineno, text in _read_values(path):
        if text not in ("0", "1"):
            raise UsageError(path, f"line {lineno}: flag must be 0 or 1, got {text!r}")
        flags.append(text == "1")
    flags = np.array(flags, dtype=bool)
    if not flags.any():
        raise UsageError(path, "no class flagged: at least one flag must be 1")
    return flags


def _read_floats(path: Path, what: str, ok, interval: str) -> np.ndarray:
    values = []
    for lineno, text in _read_values(path):
        try:
            value = float(text)
        except ValueError:
            raise UsageError(path, f"line {lineno}: {what} is not a number: {text!r}") from None
        if not (math.isfinite(value) and ok(value)):
            raise UsageError(path, f"line {lineno}: {what} {text} outside {interval}")
        values.append(value)
    return np.array(values, dtype=np.float64)


def read_priors(path: str | Path) -> np.ndarray:
    """Read ``classes.priors``.

    Returns
    -------
    ndarray of float64, shape (14,)
        Priors, each in the open interval (0, 1).

    Raises
    ------
    UsageError
        Wrong line count, a non-numeric value, or a prior outside (0, 1).
    """
    return _read_floats(Path(path), "prior", lambda v: 0.0 < v < 1.0, "(0, 1)")


def read_thresholds(path: str | Path) -> np.ndarray:
    """Read ``classes.thresh``.

    Returns
    -------
    ndarray of float64, shape (14,)
        Probability thresholds, each in [0, 1].

    Raises
    ------
    UsageError
        Wrong line count, a non-numeric value, or a threshold outside [0, 1].
    """
    return _read_floats(Path(path), "threshold", lambda v: 0.0 <= v <= 1.0, "[0, 1]")


class Config(NamedTuple):
    """The configuration of a run.

    Attributes
    ----------
    flags : ndarray of bool, shape (14,)
    priors : ndarray of float64, shape (14,), or None when prior modification is off
    thresholds : ndarray of float64, shape (14,), or None when thresholding is off
    """

    flags: np.ndarray
    priors: np.ndarray | None
    thresholds: np.ndarray | None


def load_config(config_dir: str | Path, prior_modif: bool = True, proba_thresh: bool = True) -> Config:
    """Read the configuration files a run needs from ``config_dir``.

    ``classes.priors`` is read only when ``prior_modif`` and ``classes.thresh`` only when
    ``proba_thresh``, so a directory need not hold files that the run does not use.

    Raises
    ------
    UsageError
        A missing directory or file, or a malformed file.
    """
    config_dir = Path(config_dir)
    if not config_dir.is_dir():
        raise UsageError(config_dir, "configuration directory not found")
    return Config(
        flags=read_flags(config_dir / FLAGS_FILE),
        priors=read_priors(config_dir / PRIORS_FILE) if prior_modif else None,
        thresholds=read_thresholds(config_dir / THRESH_FILE) if proba_thresh else None,
    )
