"""Pieces shared by the ``maximask`` and ``maxitrack`` commands.

Both commands print each failure as one line ``<prog>: error: <path>: <reason>`` on stderr, turn
argparse's errors into that line (exit code 2) and reject ``file.fits[N]`` naming an HDU that holds
no image in the same words. This module is cheap to import (no scipy, no astropy): maxitrack's
speed budget counts every import.
"""

from __future__ import annotations

import argparse
import signal
import sys

from .errors import MaximaskError, UsageError

_KIND = {"BINARY_TBL": "a binary table", "ASCII_TBL": "an ASCII table"}


def print_error(prog: str, path, reason) -> None:
    """The one-line error message on stderr."""
    print(f"{prog}: error: {path}: {reason}", file=sys.stderr, flush=True)


_TRUE = {"true", "yes", "1", "t", "y"}
_FALSE = {"false", "no", "0", "f", "n"}


def parse_bool(text: str) -> bool:
    """BOOL option values: true/false, yes/no, 1/0, t/f, y/n, any case."""
    v = str(text).strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"invalid BOOL {text!r} (use true/false, yes/no, 1/0, t/f or y/n)")


def positive_int(text: str) -> int:
    """Option values that must be integers >= 1 (``--batch_size``)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return v


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised where Python next runs so that open outputs are discarded on the way out.

    Attributes
    ----------
    signum : int
        The signal received.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _on_stop_signal(signum, frame):
    # the first signal wins: a second one during cleanup must neither interrupt the removal of
    # partial outputs nor kill the process with another exit status
    for s in _STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signum)


def run_interruptible(run, args) -> int:
    """Call ``run(args)`` with SIGINT and SIGTERM turned into :class:`Interrupted`.

    Returns ``run``'s exit code, or 128 + the signal number when SIGINT or SIGTERM stops it (the
    ``finally`` blocks on the way out discard partial outputs).
    """
    try:
        previous = {s: signal.signal(s, _on_stop_signal) for s in _STOP_SIGNALS}
    except ValueError:  # not the main thread (embedded use): leave signals alone
        previous = {}
    try:
        return run(args)
    except Interrupted as exc:
        return 128 + exc.signum
    except KeyboardInterrupt:  # raised by code that bypasses the handler
        return 128 + signal.SIGINT
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors raise :class:`UsageError` (``path`` = "usage") instead of exiting."""

    def error(self, message):
        raise UsageError("usage", f"{message} (see {self.prog} -h)")


def check_selected(task, hdus) -> None:
    """Errors for ``file.fits[N]`` naming an HDU that cannot be processed.

    Parameters
    ----------
    task : maximask.inputs.Task
        With ``task.hdu`` not None.
    hdus : list of maximask.fitsio_io.HDUInfo
        The file's HDUs.

    Raises
    ------
    MaximaskError
        HDU index out of range, a table, an empty HDU, or an image that is neither 2-D nor 3-D.
    """
    n = len(hdus)
    if not 0 <= task.hdu < n:
        raise MaximaskError(task.label, f"HDU index {task.hdu} out of range (the file has {n} HDU{'s' * (n > 1)})")
    info = hdus[task.hdu]
    if info.exttype != "IMAGE_HDU":
        raise MaximaskError(task.label, f"non-numeric data: HDU {task.hdu} is {_KIND.get(info.exttype, info.exttype)}, "
                                        "not an image")
    if not info.shape or min(info.shape) == 0:
        raise MaximaskError(task.label, f"HDU {task.hdu} holds no image data")
    if not info.is_image:
        raise MaximaskError(task.label, f"HDU {task.hdu} is a {len(info.shape)}-D image: expected a 2-D image "
                                        "or a 3-D cube")
