"""Simulator configuration: defaults, validation, and the per-frame choice of contaminant classes."""

from __future__ import annotations

from ..classes import ABBRS
from ..errors import UsageError

#: Probability that a frame contains each contaminant class (BG is always present). Chosen so that
#: every class is absent from a large share of frames and the network also learns absence.
DEFAULT_CLASS_PROB = {
    "CR": 0.6,
    "HCL": 0.35,
    "DCL": 0.3,
    "HP": 0.45,
    "DP": 0.35,
    "P": 0.25,
    "TRL": 0.35,
    "FR": 0.2,
    "NEB": 0.25,
    "SAT": 0.45,
    "SP": 0.3,
    "OV": 0.25,
    "BBG": 0.3,
}

DEFAULTS = {
    # classes
    "class_prob": DEFAULT_CLASS_PROB,
    "force": (),  # classes always present
    "forbid": (),  # classes never present
    "clean_prob": 0.08,  # frames with no contaminant at all (unless forced)
    # the truth rule
    "k_sigma": 1.0,  # a pixel is labelled where the contaminant adds more than k_sigma * sigma_local
    "diffuse_box": 4,  # diffuse classes (FR, NEB, BBG) compare with the noise of a box this wide
    # detector and conditions (ranges are drawn log-uniformly unless noted)
    "detector": None,  # 'thick', 'thin', 'nir' or None (random)
    "sky_e": (10.0, 50000.0),
    "gain": (0.5, 5.0),
    "read_noise_e": (2.0, 15.0),
    "fwhm_px": (1.5, 10.0),
    "pixel_scale": (0.1, 1.0),
    "moffat_beta": (2.0, 5.0),  # uniform
    "full_well_e": (20000.0, 200000.0),
    "exptime_s": (1.0, 1800.0),
    "star_density": (100.0, 30000.0),  # stars per Mpx above the detection floor
    "galaxy_density": (50.0, 3000.0),  # galaxies per Mpx
    "bright_star_density": (1.0, 12.0),  # bright (not necessarily saturated) stars per Mpx
    "cr_rate": (2e-8, 4e-6),  # cosmic rays per pixel per second (ground to space, thick CCDs)
    "binning": None,  # on-chip binning 1, 2 or 3; None: random (75 % 1x1, 20 % 2x2, 5 % 3x3)
    "resample_prob": 0.15,  # share of frames resampled (registered/rectified): correlated noise
    # output
    "raw_dtype": None,  # None: processed float32 ADU; 'uint16' or 'int16': raw-like integer frame
}


def make_config(config):
    """Merge a user config dict over :data:`DEFAULTS` and validate it.

    Raises
    ------
    maximask.errors.UsageError
        For unknown keys or class names.
    """
    cfg = dict(DEFAULTS)
    cfg["class_prob"] = dict(DEFAULT_CLASS_PROB)
    if config:
        unknown = set(config) - set(DEFAULTS) - {"tracking_kind", "tracking_prob"}
        if unknown:
            raise UsageError("config", f"unknown simulator option(s): {', '.join(sorted(unknown))}")
        for key, val in config.items():
            if key == "class_prob":
                cfg["class_prob"].update(val)
            else:
                cfg[key] = val
    for key in ("force", "forbid"):
        cfg[key] = tuple(cfg[key])
    names = set(cfg["class_prob"]) | set(cfg["force"]) | set(cfg["forbid"])
    bad = names - set(ABBRS[:-1])
    if bad:
        raise UsageError("config", f"unknown contaminant class(es): {', '.join(sorted(bad))}")
    if set(cfg["force"]) & set(cfg["forbid"]):
        raise UsageError("config", "a class is both forced and forbidden")
    if cfg["detector"] not in (None, "thick", "thin", "nir"):
        raise UsageError("config", f"detector must be thick, thin or nir, not {cfg['detector']!r}")
    if cfg["raw_dtype"] not in (None, "uint16", "int16"):
        raise UsageError("config", f"raw_dtype must be uint16 or int16, not {cfg['raw_dtype']!r}")
    return cfg


def choose_classes(rng, cfg):
    """Draw the set of contaminant classes present in one frame."""
    contaminants = ABBRS[:-1]
    # One draw per class, always in the same order, so a seed gives the same frame whatever the options.
    u = rng.uniform(size=len(contaminants))
    clean = rng.uniform() < cfg["clean_prob"]
    present = set()
    for abbr, ui in zip(contaminants, u):
        if not clean and ui < cfg["class_prob"].get(abbr, 0.0):
            present.add(abbr)
    present |= set(cfg["force"])
    present -= set(cfg["forbid"])
    return present
