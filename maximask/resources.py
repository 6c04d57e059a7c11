"""Locations of the bundled configuration files and networks.

They are installed inside the package (``maximask._data``, ``maximask._models``) and live at the top
of the source tree (``data/``, ``tensorflow_models/``); both layouts are found.
"""

from __future__ import annotations

from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def _bundled(package: str, source_dir: str) -> Path:
    # Installed: the data sit in the package directory (maximask/_data, maximask/_models). They are
    # not Python packages (no __init__.py), so importlib.resources.files() returns a namespace
    # MultiplexedPath whose str() is not a path; the directory is found from this file instead.
    installed = Path(__file__).resolve().parent / package.rsplit(".", 1)[-1]
    if installed.is_dir():
        return installed
    return _SOURCE_ROOT / source_dir


def default_config_dir() -> Path:
    """Directory holding the bundled ``classes.flags``, ``classes.priors`` and ``classes.thresh``."""
    return _bundled("maximask._data", "data") / "configs"


def default_net_dir(name: str = "maximask") -> Path:
    """Directory of a bundled network (``"maximask"`` or ``"maxitrack"``)."""
    return _bundled("maximask._models", "tensorflow_models") / name


def examples_dir() -> Path:
    """Directory of the bundled example frames."""
    return _bundled("maximask._data", "data") / "examples"
