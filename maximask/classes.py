"""The table of contaminant classes: the one place where names, order and bit codes live.

Everything else (config files, output planes, header keywords, bit-coded single masks, training
truth cubes) derives from :data:`CLASSES`. The order is the plane order of every output and truth
cube; the bit codes follow astropy.nddata.bitmask conventions (powers of two, BG is 0).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class ContaminantClass(NamedTuple):
    """One output class of maximask.

    Attributes
    ----------
    index : int
        Plane index in outputs and truth cubes.
    abbr : str
        Abbreviation used in config files and FITS header keywords.
    meaning : str
        Human-readable description, written as the value of the ``ABBR`` header keyword.
    bit : int
        Bit code used by the single mask (0 for background).
    """

    index: int
    abbr: str
    meaning: str
    bit: int


CLASSES: tuple[ContaminantClass, ...] = tuple(
    ContaminantClass(i, abbr, meaning, bit)
    for i, (abbr, meaning, bit) in enumerate(
        [
            ("CR", "cosmic rays", 1),
            ("HCL", "hot columns/lines", 2),
            ("DCL", "dead columns/lines/clusters", 4),
            ("HP", "hot pixels", 8),
            ("DP", "dead pixels", 16),
            ("P", "persistence", 32),
            ("TRL", "trails", 64),
            ("FR", "residual fringing", 128),
            ("NEB", "nebulosities", 256),
            ("SAT", "saturated pixels", 512),
            ("SP", "diffraction spikes", 1024),
            ("OV", "overscan", 2048),
            ("BBG", "bright background", 4096),
            ("BG", "background", 0),
        ]
    )
)

N_CLASSES: int = len(CLASSES)
ABBRS: tuple[str, ...] = tuple(c.abbr for c in CLASSES)
BITS: np.ndarray = np.array([c.bit for c in CLASSES], dtype=np.int16)
#: Mapping abbreviation -> bit code, for use with astropy.nddata.bitmask.
BIT_FLAGS: dict[str, int] = {c.abbr: c.bit for c in CLASSES if c.bit}
INDEX: dict[str, int] = {c.abbr: c.index for c in CLASSES}
