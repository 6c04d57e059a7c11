"""Which HDUs of a FITS file maxitrack scores, and reading one image plane.

Temporary: to be replaced by the shared :mod:`maximask.fitsio_io` when it lands.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from maximask.errors import MaximaskError


class ImageUnit(NamedTuple):
    """An image HDU: its index, shape, and number of planes (None for a 2D image)."""

    index: int
    shape: tuple
    n_planes: int | None


def _open(path: Path):
    import fitsio

    if not path.exists():
        raise MaximaskError(path, "no such file")
    try:
        return fitsio.FITS(str(path))
    except (OSError, IOError, ValueError) as exc:
        raise MaximaskError(path, f"cannot read FITS file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def image_hdus(path, hdu: int | None) -> list:
    """Image HDUs to score: every 2D or 3D image HDU, or only HDU ``hdu``."""
    path = Path(path)
    with _open(path) as f:
        n = len(f)
        if hdu is not None and not 0 <= hdu < n:
            raise MaximaskError(f"{path}[{hdu}]", f"HDU index out of range (the file has {n} HDUs)")
        units = []
        for i in range(n) if hdu is None else [hdu]:
            h = f[i]
            if h.get_exttype() != "IMAGE_HDU":
                if hdu is not None:
                    raise MaximaskError(f"{path}[{hdu}]", "HDU holds no image data")
                continue
            dims = tuple(int(d) for d in h.get_dims())
            if len(dims) == 2 and min(dims) > 0:
                units.append(ImageUnit(i, dims, None))
            elif len(dims) == 3 and min(dims) > 0:
                units.append(ImageUnit(i, dims[1:], dims[0]))
            elif hdu is not None:
                raise MaximaskError(f"{path}[{hdu}]", f"HDU holds no 2D image or 3D cube (shape {dims})")
    if not units:
        raise MaximaskError(path, "no 2D image or 3D cube HDU")
    return units


def read_plane(path, unit: ImageUnit, plane: int | None) -> np.ndarray:
    """Pixels of a 2D HDU, or of plane ``plane`` of a cube."""
    path = Path(path)
    with _open(path) as f:
        try:
            h = f[unit.index]
            data = h.read() if plane is None else h[plane : plane + 1, :, :][0]
        except (OSError, IOError, ValueError) as exc:
            raise MaximaskError(f"{path}[{unit.index}]", f"cannot read image data ({exc})") from None
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise MaximaskError(f"{path}[{unit.index}]", f"non-numeric pixel data ({data.dtype})")
    return data
