"""Locations of the bundled configuration files and networks.

They are installed inside the package (``maximask._data``, ``maximask._models``) and live at the top
of the source tree (``data/``, ``tensorflow_models/``); both layouts are found.
"""

from __future__ import annotations

from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def _bundled(package: str, source_dir: str) -> Path:
    try:
        from importlib.resources import files

        root = Path(str(files(package)))
        if root.is_dir():
            return root
    except (ModuleNotFoundError, TypeError):
        pass
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
