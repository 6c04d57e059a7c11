"""Assemble a frame: scene, contaminants, detector, and the per-class truth from one rule.

The truth rule (see docs/SIMULATOR.md): with sigma_local = sqrt(model + RN**2) the noise-free
expected noise of a pixel (e-), a pixel belongs to a contaminant class where

- point classes (CR, HP, DP, P, TRL, SP): the signal the contaminant adds (or removes, for DP)
  exceeds ``k_sigma * sigma_local``;
- diffuse classes (FR, NEB, BBG): the signal (for FR, the local fringe amplitude) exceeds
  ``k_sigma * sigma_local / diffuse_box``, the noise of a ``diffuse_box``-wide box average;
- footprint classes: SAT where the pixel is at the saturation level; OV inside the overscan
  strips; HCL and DCL on the defective column/row/cluster.

OV pixels carry no other class; BG is 1 where no other class is.
"""

from __future__ import annotations

import numpy as np

from ..classes import INDEX, N_CLASSES
from ..errors import UsageError
from . import contaminants as C
from ._util import log_uniform
from .config import choose_classes, make_config
from .detector import add_noise, bleed_columns, flat_residual, resample_shift, to_raw
from .scene import draw_catalog, draw_conditions, noise_sigma_bg, render_sources, sky_model

POINT = ("CR", "HP", "P", "TRL", "SP")
DIFFUSE = ("NEB", "BBG")


def _check_shape(shape):
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise UsageError("shape", f"shape must be two integers, not {shape!r}") from None
    if h < 16 or w < 16:
        raise UsageError("shape", f"frames must be at least 16x16 pixels, not {h}x{w}")
    return h, w


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def simulate_frame(shape, rng, config=None):
    """Simulate one processed CCD/NIR frame with contaminants and its per-class truth.

    Parameters
    ----------
    shape : tuple of int
        (H, W), at least 16 each.
    rng : numpy.random.Generator
        The only source of randomness: the same seed gives the same frame.
    config : dict or None
        Options over :data:`maximask.sim.config.DEFAULTS` (class probabilities, forced/forbidden
        classes, parameter ranges, ``raw_dtype``).

    Returns
    -------
    image : numpy.ndarray
        float32 (H, W): processed frame in ADU (bias subtracted, flat-fielded, sky not subtracted);
        with ``raw_dtype`` set, the raw-like uint16/int16 frame instead.
    truth : numpy.ndarray
        uint8 (14, H, W), 0/1 per class in the order of :data:`maximask.classes.CLASSES`.
    metadata : dict
        JSON-serialisable: conditions, classes drawn, objects per class.
    """
    shape = _check_shape(shape)
    cfg = make_config(config)
    image, truth, meta = _simulate(shape, rng, cfg, smear=None)
    return image, truth, meta


def _simulate(shape, rng, cfg, smear=None, present=None, debug=None):
    """The frame pipeline; ``debug``, a dict, receives the intermediate arrays (for tests)."""
    h, w = shape
    if present is None:
        present = choose_classes(rng, cfg)
    cond = draw_conditions(shape, rng, cfg, present)
    k = float(cfg["k_sigma"])
    box = float(cfg["diffuse_box"])
    sig_bg = noise_sigma_bg(cond)
    rn = cond["read_noise_e"]
    sat_e = cond["saturation_e"]
    fw = cond["full_well_e"]
    fwhm = cond["fwhm_px"]
    objects = {}

    sky = sky_model(shape, cond)
    cat = draw_catalog(shape, rng, cfg, cond, present)
    if smear is None:
        sources = render_sources(shape, cond, cat)
    else:
        sources = smear.apply(shape, cond, cat)
    bright_xy = [(float(cat["stars"]["y"][i]), float(cat["stars"]["x"][i])) for i in cat["bright"]]

    layers = {}
    foot = {}
    if "NEB" in present:
        layers["NEB"], objects["NEB"] = C.nebulosity(shape, rng, sig_bg)
    if "BBG" in present:
        layers["BBG"], objects["BBG"] = C.bright_background(shape, rng, sig_bg, bright_xy, fwhm)
    fr_amp = None
    if "FR" in present:
        layers["FR"], fr_amp, objects["FR"] = C.fringes(shape, rng, sky, sig_bg, box)
    if "SP" in present:
        sp, objects["SP"] = C.spikes(shape, cond, cat["stars"], cat["bright"], sig_bg)
        if smear is not None:
            sp = smear.apply_image(sp)
        layers["SP"] = sp
    if "P" in present:
        n = max(1, rng.poisson(log_uniform(rng, 1.0, 20.0) * h * w / 1e6))
        layers["P"], objects["P"] = C.persistence(shape, rng, sig_bg, sources + layers.get("SP", 0), n, fwhm)
    if "TRL" in present:
        n = 1 if rng.uniform() < 0.8 else int(rng.integers(2, 4))
        layers["TRL"], objects["TRL"] = C.trails(shape, rng, sig_bg, fwhm, n, sat_e)
    if "HCL" in present:
        n = 1 + rng.poisson(log_uniform(rng, 0.3, 4.0) * w / 1000.0)
        layers["HCL"], foot["HCL"], objects["HCL"] = C.hot_columns(shape, rng, sig_bg, n)
    if "HP" in present:
        n = max(1, rng.poisson(log_uniform(rng, 1e-5, 4e-4) * h * w))
        layers["HP"], objects["HP"] = C.hot_pixels(shape, rng, sig_bg, n)
    if "CR" in present:
        rate = log_uniform(rng, *cfg["cr_rate"]) * cond["exptime_s"]
        n = max(1, rng.poisson(rate * h * w))
        layers["CR"], objects["CR"] = C.cosmic_rays(shape, rng, cond, n)
    if "SAT" not in present:
        # without SAT nothing may reach saturation (the sources are already capped)
        cap = np.float32(0.6 * sat_e)
        for c in ("HP", "CR", "TRL", "P", "HCL"):
            if c in layers:
                np.minimum(layers[c], cap, out=layers[c])

    if "SAT" not in present:
        # overlapping sources or compact galaxies can still top the cap: scale the scene down
        room = 0.75 * sat_e - float(sky.max())
        top = float(sources.max())
        if top > room > 0:
            sources *= np.float32(room / top)
    model = sky + sources
    for lay in layers.values():
        model += lay
    np.maximum(model, 0.0, out=model)
    if "SAT" not in present:
        # rare pile-ups of contaminants on sources: keep them just below saturation
        np.minimum(model, np.float32(0.97 * sat_e), out=model)
    sigma = np.sqrt(model + rn * rn).astype(np.float32)

    response = None
    dp_resp = None
    if "DCL" in present:
        n_cols = rng.poisson(log_uniform(rng, 0.3, 3.0) * w / 1000.0)
        n_cl = rng.poisson(log_uniform(rng, 1.0, 20.0) * h * w / 1e6)
        if n_cols + n_cl == 0:
            n_cols = 1
        response, foot["DCL"], objects["DCL"] = C.dead_columns(shape, rng, n_cols, n_cl)
    if "DP" in present:
        n = max(1, rng.poisson(log_uniform(rng, 5e-6, 2e-4) * h * w))
        dp_resp, objects["DP"] = C.dead_pixels(shape, rng, n)
        response = dp_resp if response is None else response * dp_resp
    charge = model * response if response is not None else model

    if cond["detector"] == "nir":
        bled = np.minimum(charge, fw).astype(np.float64)  # no blooming in hybrid arrays
    else:
        bled = bleed_columns(charge, fw)
    saturated = bled >= sat_e * (1.0 - 1e-9)
    noisy = add_noise(bled, rng, rn)
    if cond["resampled"]:
        # registration/rectification: every pixel-level quantity goes through the same kernel,
        # so the truth rule compares resampled signals with the resampled noise
        fy, fx = cond["resample_shift"]

        def rs(a):
            return resample_shift(a, fy, fx)

        noisy = rs(noisy)
        saturated = rs(saturated.astype(np.float32)) >= 0.5
        sigma = np.sqrt(resample_shift(sigma * sigma, fy, fx, square=True))
        layers = {c: rs(v) for c, v in layers.items()}
        foot = {c: rs(v.astype(np.float32)) >= 0.5 for c, v in foot.items()}
        if fr_amp is not None:
            fr_amp = rs(fr_amp)
        dp_deficit = rs(model * (1.0 - dp_resp)) if dp_resp is not None else None
    else:
        dp_deficit = model * (1.0 - dp_resp) if dp_resp is not None else None
    gain = cond["gain"]
    flat = flat_residual(shape, rng, cond["flat_residual"])
    image = noisy / np.float32(gain) * flat

    ov = None
    if "OV" in present:
        ov, objects["OV"] = C.overscan_region(shape, rng)
        offset = rng.normal(0.0, 0.3 * rn / gain)
        image[ov] = (offset + rng.normal(0.0, rn / gain, int(ov.sum()))).astype(np.float32)
    sat_adu = np.float32(cond["saturation_adu"])
    sat_mask = saturated | (image >= sat_adu)
    if ov is not None:
        sat_mask &= ~ov
    image[sat_mask] = sat_adu
    np.minimum(image, sat_adu, out=image)

    truth = np.zeros((N_CLASSES, h, w), dtype=np.uint8)
    for c in POINT:
        if c in layers:
            truth[INDEX[c]] = layers[c] > k * sigma
    for c in DIFFUSE:
        if c in layers:
            truth[INDEX[c]] = layers[c] > k * sigma / box
    if fr_amp is not None:
        truth[INDEX["FR"]] = fr_amp > k * sigma / box
    if dp_resp is not None:
        truth[INDEX["DP"]] = dp_deficit > k * sigma
    for c in ("HCL", "DCL"):
        if c in foot:
            truth[INDEX[c]] = foot[c]
    truth[INDEX["SAT"]] = sat_mask
    if ov is not None:
        truth[:, ov] = 0
        truth[INDEX["OV"], ov] = 1
    truth[INDEX["BG"]] = ~truth[: INDEX["BG"]].any(axis=0)

    if debug is not None:
        debug.update(layers=layers, sigma=sigma, model=model, charge=charge, bled=bled, sources=sources, sky=sky, overscan=ov)
    meta = dict(cond)
    meta.update(
        {
            "shape": [h, w],
            "classes_drawn": sorted(present),
            "sigma_bg_e": sig_bg,
            "sigma_bg_adu": sig_bg / gain,
            "sky_adu": cond["sky_e"] / gain,
            "n_stars": int(cat["stars"]["x"].size),
            "n_galaxies": int(cat["galaxies"]["x"].size),
            "k_sigma": k,
            "diffuse_box": box,
            "objects": objects,
        }
    )
    meta = _jsonable(meta)
    if cfg["raw_dtype"]:
        image = to_raw(image, meta, cfg["raw_dtype"])
    return image, truth, meta
