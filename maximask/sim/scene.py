"""The astrophysical scene: observing conditions, sky, and catalogues of stars and galaxies.

All quantities are in electrons (e-) per pixel before gain; positions in pixels with pixel (i, j)
centred on (y=i, x=j).
"""

from __future__ import annotations

import numpy as np

from ._util import Canvas, log_uniform
from .psf import moffat_peak_per_flux, moffat_radius, render_moffat, render_sersic

_RADII = np.array([3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256])


def draw_conditions(shape, rng, cfg, present):
    """Draw the detector and observing conditions of one frame.

    Some draws depend on the classes present where physics demands it: fringing only shows on a
    bright (red/NIR) sky, and dead pixels/columns are only visible on a sky that rises above the read
    noise, so those frames get a sky floor.

    Returns
    -------
    dict
        JSON-serialisable parameters (floats, ints, strings).
    """
    det = cfg["detector"] or str(rng.choice(["thick", "thin", "nir"], p=[0.4, 0.4, 0.2]))
    gain = float(log_uniform(rng, *cfg["gain"]))
    rn = float(log_uniform(rng, *cfg["read_noise_e"]))
    sky_lo, sky_hi = cfg["sky_e"]
    if "FR" in present:
        sky_lo = max(sky_lo, min(1000.0, sky_hi))
    if present & {"DCL", "DP"}:
        sky_lo = max(sky_lo, min(4.0 * rn * rn, sky_hi))
    sky = float(log_uniform(rng, sky_lo, sky_hi))
    fwhm = float(log_uniform(rng, *cfg["fwhm_px"]))
    scale = float(log_uniform(rng, *cfg["pixel_scale"]))
    full_well = float(log_uniform(rng, *cfg["full_well_e"]))
    adc_max = 65535 if rng.uniform() < 0.8 else 32767
    bias = float(rng.uniform(200.0, 2000.0)) if adc_max == 65535 else float(rng.uniform(100.0, 1000.0))
    sat_adu = float(min(full_well / gain, adc_max - bias))
    # an exposure whose sky fills the wells is useless; keep the sky below a quarter of saturation
    sky = float(min(sky, 0.25 * sat_adu * gain))
    h, w = shape
    resampled = bool(rng.uniform() < cfg["resample_prob"])
    return {
        "detector": det,
        # on-chip binning: CR tracks shorten and deposit more charge per pixel
        "binning": _binning(rng, cfg, det),
        # processed frames that were registered/rectified: bilinear sub-pixel resampling
        "resampled": resampled,
        "resample_shift": [float(v) for v in rng.uniform(0.0, 0.5, 2)] if resampled else [0.0, 0.0],
        "gain": gain,
        "read_noise_e": rn,
        "sky_e": sky,
        "fwhm_px": fwhm,
        "pixel_scale": scale,
        "seeing_arcsec": fwhm * scale,
        "moffat_beta": float(rng.uniform(*cfg["moffat_beta"])),
        "psf_ellipticity": float(rng.uniform(0.0, 0.12)),
        "psf_angle": float(rng.uniform(0.0, np.pi)),
        # coma-like radial elongation towards the edges, and a FWHM gradient over the field
        "psf_coma": float(rng.uniform(0.0, 0.25)) if rng.uniform() < 0.5 else 0.0,
        "psf_fwhm_gradient": float(rng.uniform(-0.15, 0.15)),
        "full_well_e": full_well,
        "adc_max": adc_max,
        "bias_adu": bias,
        "saturation_adu": sat_adu,
        # the saturation level in electrons, whichever of full well and ADC comes first
        "saturation_e": sat_adu * gain,
        "exptime_s": float(log_uniform(rng, *cfg["exptime_s"])),
        "sky_gradient": [float(v) for v in rng.uniform(-0.03, 0.03, 3)],
        "flat_residual": float(log_uniform(rng, 0.001, 0.01)),
        "spike_count": int(rng.choice([4, 6], p=[0.75, 0.25])),
        # spike line density at r is spike_strength * F * FWHM / r**2 (e-/px along the spike)
        "spike_strength": float(log_uniform(rng, 1e-2, 6e-2)),
        "spike_angle": float(rng.choice([0.0, np.pi / 4]) if rng.uniform() < 0.6 else rng.uniform(0, np.pi / 2)),
        "center": [h / 2.0, w / 2.0],
    }


def _binning(rng, cfg, det):
    draw = int(rng.choice([1, 2, 3], p=[0.75, 0.2, 0.05]))  # drawn always: same stream whatever the options
    if cfg["binning"] is not None:
        return int(cfg["binning"])
    return draw if det != "nir" else 1


def sky_model(shape, cond):
    """Sky level with a mild linear + quadratic gradient, float32 (H, W) in e-."""
    h, w = shape
    y = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    gy, gx, gq = cond["sky_gradient"]
    return (cond["sky_e"] * (1.0 + gy * y + gx * x + gq * (x * x + y * y - 0.66))).astype(np.float32)


def noise_sigma_bg(cond):
    """Background noise per pixel (e-): sky Poisson plus read noise."""
    return float(np.sqrt(cond["sky_e"] + cond["read_noise_e"] ** 2))


def psf_at(cond, x, y, shape):
    """PSF parameters (fwhm, beta, q, theta) at positions (x, y): field-dependent FWHM and coma."""
    h, w = shape
    cy, cx = cond["center"]
    rmax = np.hypot(h / 2.0, w / 2.0)
    dx = (np.asarray(x) - cx) / rmax
    dy = (np.asarray(y) - cy) / rmax
    rr = np.hypot(dx, dy)
    fwhm = cond["fwhm_px"] * (1.0 + cond["psf_fwhm_gradient"] * dx)
    # combine the global ellipticity with a radial (coma-like) one as ellipticity vectors
    e0 = cond["psf_ellipticity"]
    a0 = cond["psf_angle"]
    ec = cond["psf_coma"] * rr ** 2
    ac = np.arctan2(dy, dx)
    e1 = e0 * np.cos(2 * a0) + ec * np.cos(2 * ac)
    e2 = e0 * np.sin(2 * a0) + ec * np.sin(2 * ac)
    e = np.minimum(np.hypot(e1, e2), 0.6)
    theta = 0.5 * np.arctan2(e2, e1)
    n = np.size(x)
    beta = np.full(n, cond["moffat_beta"])
    return np.broadcast_to(fwhm, (n,)).copy(), beta, 1.0 - e, theta


def _truncated_pareto(rng, n, fmin, fmax, slope):
    """Fluxes with N(>F) proportional to F**-slope between fmin and fmax."""
    umin = (fmax / fmin) ** (-slope) if np.isfinite(fmax) else 0.0
    u = rng.uniform(umin, 1.0, n)
    return fmin * np.maximum(u, 1e-300) ** (-1.0 / slope)


def draw_catalog(shape, rng, cfg, cond, present):
    """Draw star and galaxy catalogues.

    Stars follow a power-law luminosity function above a floor near the detection limit, with a
    density per Mpx (so counts scale with area); a few bright stars per frame are added. Unless SAT
    is present, every source peaks below 70 % of the saturation level; with SAT, at least one star
    saturates.

    Returns
    -------
    dict
        ``stars``: dict of arrays x, y, flux; ``galaxies``: dict of arrays x, y, flux, r_eff, n, q,
        theta; ``bright``: indices of the bright stars in ``stars``.
    """
    h, w = shape
    area = h * w / 1e6
    sig = noise_sigma_bg(cond)
    fwhm = cond["fwhm_px"]
    beta = cond["moffat_beta"]
    ppf = moffat_peak_per_flux(fwhm * 0.85, beta)  # conservative peak/flux (the PSF varies over the field)
    sat = cond["saturation_e"] - cond["sky_e"] * 1.1
    # with SAT, the luminosity function may run a little past saturation (a handful of saturated
    # field stars in crowded fields); without it, every source peaks below 70 % of saturation
    fcap = (log_uniform(rng, 1.0, 30.0) if "SAT" in present else 0.7) * max(sat, 1.0) / ppf
    fmin = sig * 1.5 * fwhm
    fcap = max(fcap, fmin * 1.01)

    density = log_uniform(rng, *cfg["star_density"])
    n_st = rng.poisson(density * area)
    slope = rng.uniform(0.5, 0.9)
    flux = _truncated_pareto(rng, n_st, fmin, fcap, slope)
    xs = rng.uniform(-0.5, w - 0.5, n_st)
    ys = rng.uniform(-0.5, h - 0.5, n_st)

    n_b = rng.poisson(log_uniform(rng, *cfg["bright_star_density"]) * area)
    if present & {"SAT", "SP", "BBG"}:
        n_b = max(n_b, 1)
    if "SAT" in present:
        peak = log_uniform(rng, 1.5, 1000.0, n_b)
    else:
        peak = rng.uniform(0.2, 0.7, n_b)
    fb = peak * max(sat, 1.0) / ppf
    # keep bright stars a little inside the frame so that they are actually seen
    xb = rng.uniform(0.05 * w, 0.95 * w, n_b)
    yb = rng.uniform(0.05 * h, 0.95 * h, n_b)
    stars = {
        "x": np.concatenate([xs, xb]),
        "y": np.concatenate([ys, yb]),
        "flux": np.concatenate([flux, fb]),
    }
    bright = np.arange(n_st, n_st + n_b)

    gdens = log_uniform(rng, *cfg["galaxy_density"])
    n_g = rng.poisson(gdens * area)
    gflux = _truncated_pareto(rng, n_g, 2 * fmin, max(min(fcap, 0.7 * max(sat, 1.0) / ppf), 2.02 * fmin), rng.uniform(0.5, 0.9))
    galaxies = {
        "x": rng.uniform(-0.5, w - 0.5, n_g),
        "y": rng.uniform(-0.5, h - 0.5, n_g),
        "flux": gflux,
        "r_eff": log_uniform(rng, 0.5, 12.0, n_g) * np.clip((gflux / (20 * fmin)) ** 0.25, 0.5, 3.0),
        "n": rng.uniform(0.5, 4.0, n_g),
        # apparent axis ratios of field galaxies: most 0.4-0.9, few thin edge-on discs
        "q": np.clip(rng.beta(3.0, 1.6, n_g), 0.15, 1.0),
        "theta": rng.uniform(0.0, np.pi, n_g),
    }
    return {"stars": stars, "galaxies": galaxies, "bright": bright}


def render_sources(shape, cond, catalog, offsets=None):
    """Render stars and galaxies (noise-free, e-), float32 (H, W).

    Parameters
    ----------
    offsets : callable or None
        ``offsets(x, y) -> (x', y')`` moves every source (used for tracking errors); None for none.
    """
    canvas = Canvas(shape)
    sig = noise_sigma_bg(cond)
    st = catalog["stars"]
    x, y = st["x"], st["y"]
    if offsets is not None:
        x, y = offsets(x, y)
    fwhm, beta, q, theta = psf_at(cond, x, y, shape)
    level = 0.05 * sig
    need = moffat_radius(st["flux"], fwhm, beta, level)
    need = np.maximum(need, 1.5 * fwhm)
    maxr = int(min(256, max(shape)))
    rad = _RADII[np.minimum(np.searchsorted(_RADII, need), len(_RADII) - 1)]
    rad = np.minimum(rad, maxr)
    for r in np.unique(rad):
        sel = rad == r
        over = (3 if cond["fwhm_px"] < 2.2 else 2) if cond["fwhm_px"] < 3.0 and r <= 12 else 1
        render_moffat(canvas, x[sel], y[sel], st["flux"][sel], fwhm[sel], beta[sel], q[sel], theta[sel], int(r), over)

    ga = catalog["galaxies"]
    if ga["x"].size:
        gx, gy = ga["x"], ga["y"]
        if offsets is not None:
            gx, gy = offsets(gx, gy)
        # faint galaxies fade into the noise sooner: smaller stamps
        bright_g = ga["flux"] > 30 * sig * cond["fwhm_px"]
        gneed = np.clip(np.where(bright_g, 4.0, 2.5) * ga["r_eff"] + 1.5 * cond["fwhm_px"], 3, 64)
        grad = _RADII[np.minimum(np.searchsorted(_RADII, gneed), len(_RADII) - 1)]
        for r in np.unique(grad):
            sel = grad == r
            render_sersic(canvas, gx[sel], gy[sel], ga["flux"][sel], ga["r_eff"][sel], ga["n"][sel], ga["q"][sel], ga["theta"][sel], 0.5 * cond["fwhm_px"], int(r))
    return canvas.render()
