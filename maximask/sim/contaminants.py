"""Contaminant generators. Each returns an additive charge layer (e-, float32 (H, W)), or a
multiplicative response, with a footprint where the class is a footprint class, and a list of
JSON-serialisable per-object parameters.

Columns (axis 0) are the readout direction: bleeding, hot/dead columns and charge-transfer
trails run along axis 0, and the serial register is at row 0.
"""

from __future__ import annotations

import numpy as np

from ._util import Canvas, log_uniform, lowres_field, moyal

# e- deposited by a minimum-ionising particle per pixel of path (80 e-/um over a 15 um pixel)
_MIP_E_PER_PX = 1200.0


# --------------------------------------------------------------------------------------------- CR
def cosmic_rays(shape, rng, cond, n):
    """Cosmic-ray charge: muon tracks (straight, Landau deposits, diffusion growing with depth),
    electron worms (curly, denser), and spots; NIR detectors add inter-pixel capacitance.

    Parameters
    ----------
    n : int
        Number of events (the caller draws it from a rate per pixel per second).

    Returns
    -------
    layer : float32 (H, W) e-
    info : list of dict
    """
    h, w = shape
    det = cond["detector"]
    canvas = Canvas(shape)
    info = []
    if det == "thick":
        # deep-depletion and fully depleted CCDs: 100-500 um of silicon under 10-15 um pixels
        depth, sig_max, p_worm = rng.uniform(8, 30), rng.uniform(0.3, 1.0), 0.25
    elif det == "thin":
        depth, sig_max, p_worm = rng.uniform(0.7, 2.0), rng.uniform(0.2, 0.45), 0.1
    else:
        depth, sig_max, p_worm = rng.uniform(0.4, 1.0), rng.uniform(0.15, 0.35), 0.05
    # binned pixels: the same track crosses fewer, bigger pixels
    b = cond.get("binning", 1)
    depth, sig_max = depth / b, sig_max / b
    e_per_px = _MIP_E_PER_PX * b
    ys, xs = [], []
    qs = []
    for _ in range(n):
        y0 = rng.uniform(-0.5, h - 0.5)
        x0 = rng.uniform(-0.5, w - 0.5)
        kind = "worm" if rng.uniform() < p_worm else "track"
        if kind == "track":
            # zenith angle: the cos^2 law of the muon flux through a flat detector, or (half of the
            # events) an isotropic flux, for the secondaries and the radioactivity of the dewar and
            # its window, which arrive from every direction and make long, grazing tracks
            cos_t = rng.uniform() ** (1.0 / 3.0) if rng.uniform() < 0.5 else rng.uniform()
            tan_t = np.sqrt(max(1.0 - cos_t * cos_t, 0.0)) / max(cos_t, 1e-3)
            length = min(depth * tan_t, 1.5 * max(h, w))
            step = 0.25
            m = max(1, int(length / step))
            ang = rng.uniform(0, 2 * np.pi)
            t = (np.arange(m) + 0.5) / m
            py = y0 + (t - 0.5) * length * np.sin(ang)
            px = x0 + (t - 0.5) * length * np.cos(ang)
            path = np.hypot(depth, length)
            dq = e_per_px * path / m * np.clip((moyal(rng, m) + 2.5) / 3.77, 0.05, None)
            dq *= np.clip((moyal(rng) + 2.5) / 3.77, 0.3, 5.0)
            # charge made far from the collecting gates diffuses most: the track tapers in width
            frac = t if rng.uniform() < 0.5 else 1.0 - t
            sig = 0.15 + sig_max * frac
            if length < 1.0:
                kind = "spot"
        else:
            length = log_uniform(rng, 3.0, 40.0) / b
            step = 0.5
            m = max(2, int(length / step))
            ang = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.35, m))
            py = y0 + np.cumsum(step * np.sin(ang))
            px = x0 + np.cumsum(step * np.cos(ang))
            # low-energy electrons: dE/dx rises towards the end of the range
            tt = np.arange(m) / m
            dq = 3.0 * e_per_px * step * (1.0 + 2.0 * tt ** 3) * np.clip((moyal(rng, m) + 2.5) / 3.77, 0.05, None)
            sig = np.full(m, 0.15 + 0.5 * sig_max)
        # Monte-Carlo diffusion: split each deposit into sub-charges scattered by the diffusion sigma
        k = 6
        oy = rng.standard_normal((m, k)) * np.asarray(sig)[..., None] * np.ones((m, k))
        ox = rng.standard_normal((m, k)) * np.asarray(sig)[..., None] * np.ones((m, k))
        ys.append((py[:, None] + oy).ravel())
        xs.append((px[:, None] + ox).ravel())
        qs.append(np.repeat(dq / k, k))
        info.append({"kind": kind, "y": float(y0), "x": float(x0), "length_px": float(length), "charge_e": float(np.sum(dq))})
    if ys:
        canvas.add_bilinear(np.concatenate(ys), np.concatenate(xs), np.concatenate(qs))
    layer = canvas.render()
    if det == "nir":
        # inter-pixel capacitance couples 1-3 % of the signal into the four neighbours
        a = rng.uniform(0.01, 0.03)
        lay = layer * (1 - 4 * a)
        lay[1:, :] += a * layer[:-1, :]
        lay[:-1, :] += a * layer[1:, :]
        lay[:, 1:] += a * layer[:, :-1]
        lay[:, :-1] += a * layer[:, 1:]
        layer = lay
    return layer.astype(np.float32), info


# ------------------------------------------------------------------------------------ HCL / DCL
def hot_columns(shape, rng, sigma_bg, n):
    """Hot columns (and rarely rows): full, or partial from a defect to the serial register (row 0).

    Returns
    -------
    layer : float32 (H, W) e-, footprint : bool (H, W), info : list of dict
    """
    h, w = shape
    layer = np.zeros(shape, dtype=np.float32)
    foot = np.zeros(shape, dtype=bool)
    info = []
    for _ in range(n):
        amp = float(log_uniform(rng, 0.7, 40.0) * sigma_bg)
        width = 1 if rng.uniform() < 0.85 else 2
        row = rng.uniform() < 0.15
        partial = rng.uniform() < 0.5
        if row:
            i = int(rng.integers(0, h - width + 1))
            a, b = (0, w) if not partial else sorted(rng.integers(0, w, 2))
            b = max(b, a + 8)
            layer[i:i + width, a:b] += amp
            foot[i:i + width, a:b] = True
        else:
            j = int(rng.integers(0, w - width + 1))
            # a trap leaks charge into every pixel clocked through it: from the defect down to row 0
            top = h if not partial else int(rng.integers(h // 8, h))
            ramp = np.ones(top, dtype=np.float32)
            if partial and rng.uniform() < 0.5:
                ramp = np.linspace(0.6, 1.0, top, dtype=np.float32)
            layer[:top, j:j + width] += amp * ramp[:, None]
            foot[:top, j:j + width] = True
        info.append({"row": bool(row), "partial": bool(partial), "amp_e": amp, "width": width})
    return layer, foot, info


def dead_columns(shape, rng, n_cols, n_clusters):
    """Dead/low-response columns (full or partial) and dead clusters.

    Returns
    -------
    response : float32 (H, W) in [0, 1], footprint : bool (H, W), info : list of dict
    """
    h, w = shape
    resp = np.ones(shape, dtype=np.float32)
    foot = np.zeros(shape, dtype=bool)
    info = []
    for _ in range(n_cols):
        r = float(rng.uniform(0.0, 0.5))
        width = 1 if rng.uniform() < 0.8 else int(rng.integers(2, 4))
        row = rng.uniform() < 0.1
        if row:
            i = int(rng.integers(0, h - width + 1))
            resp[i:i + width, :] = r
            foot[i:i + width, :] = True
        else:
            j = int(rng.integers(0, w - width + 1))
            # a blocked column loses the charge from the block onwards, away from the register
            start = 0 if rng.uniform() < 0.5 else int(rng.integers(0, h - 8))
            resp[start:, j:j + width] = r
            foot[start:, j:j + width] = True
        info.append({"kind": "row" if row else "column", "response": r, "width": width})
    for _ in range(n_clusters):
        rad = log_uniform(rng, 1.5, 10.0)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        b = int(np.ceil(rad * 1.6)) + 1
        y0, y1 = max(0, int(cy) - b), min(h, int(cy) + b + 1)
        x0, x1 = max(0, int(cx) - b), min(w, int(cx) + b + 1)
        if y1 <= y0 or x1 <= x0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        ang = np.arctan2(yy - cy, xx - cx)
        # an irregular blob: radius modulated by a few random harmonics
        wob = 1.0 + sum(rng.uniform(-0.25, 0.25) * np.cos(k * ang + rng.uniform(0, 6.3)) for k in (2, 3, 5))
        inside = np.hypot(yy - cy, xx - cx) <= rad * wob
        r = float(rng.uniform(0.0, 0.35))
        resp[y0:y1, x0:x1][inside] = r
        foot[y0:y1, x0:x1] |= inside
        info.append({"kind": "cluster", "response": r, "radius_px": float(rad)})
    return resp, foot, info


# ----------------------------------------------------------------------------------- HP / DP
def _pixel_groups(shape, rng, n):
    h, w = shape
    iy = rng.integers(0, h, n)
    ix = rng.integers(0, w, n)
    ys, xs, gid = [iy], [ix], [np.arange(n)]
    grp = rng.uniform(size=n) < 0.2
    for k in np.nonzero(grp)[0]:
        m = int(rng.integers(1, 4))
        d = rng.integers(-1, 2, (m, 2))
        ys.append(iy[k] + d[:, 0])
        xs.append(ix[k] + d[:, 1])
        gid.append(np.full(m, k))
    y = np.clip(np.concatenate(ys), 0, h - 1)
    x = np.clip(np.concatenate(xs), 0, w - 1)
    return y, x, np.concatenate(gid)


def hot_pixels(shape, rng, sigma_bg, n):
    """Hot pixels, isolated or in small groups; amplitudes log-uniform 2..3000 sigma_bg."""
    y, x, gid = _pixel_groups(shape, rng, n)
    amp = log_uniform(rng, 2.0, 3000.0, n) * sigma_bg
    vals = amp[gid] * np.where(np.arange(gid.size) < n, 1.0, rng.uniform(0.2, 1.0, gid.size))
    layer = np.zeros(shape, dtype=np.float32)
    np.add.at(layer, (y, x), vals.astype(np.float32))
    return layer, [{"n": int(n)}]


def dead_pixels(shape, rng, n):
    """Dead pixels (response 0..0.3), isolated or in small groups; returns a response map."""
    y, x, _ = _pixel_groups(shape, rng, n)
    resp = np.ones(shape, dtype=np.float32)
    resp[y, x] = rng.uniform(0.0, 0.3, y.size).astype(np.float32)
    return resp, [{"n": int(n)}]


# --------------------------------------------------------------------------------------------- P
def persistence(shape, rng, sigma_bg, sources, n, fwhm):
    """Persistence: decayed ghosts of a previous exposure's saturated stars (flat-topped discs,
    sometimes with their old bleed trail), placed where the current frame has no source."""
    h, w = shape
    layer = np.zeros(shape, dtype=np.float32)
    info = []
    busy = sources > 0.5 * sigma_bg
    for _ in range(n):
        rad = float(log_uniform(rng, 0.6, 2.5) * max(fwhm, 1.5))
        amp = float(log_uniform(rng, 1.5, 25.0) * sigma_bg)
        for _try in range(30):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            b = int(rad * 2 + 3)
            y0, y1 = max(0, int(cy) - b), min(h, int(cy) + b + 1)
            x0, x1 = max(0, int(cx) - b), min(w, int(cx) + b + 1)
            if not busy[y0:y1, x0:x1].any():
                break
        yy, xx = np.mgrid[y0:y1, x0:x1]
        r = np.hypot(yy - cy, xx - cx)
        ghost = amp / (1.0 + np.exp(np.clip((r - rad) / (0.4 * max(fwhm, 1.0)), -50, 50)))
        layer[y0:y1, x0:x1] += ghost.astype(np.float32)
        trail = rng.uniform() < 0.3
        if trail:
            # the old bleed trail: a narrow column segment fading away from the star
            half = int(rng.integers(0, 2))
            j0, j1 = max(0, int(round(cx)) - half), min(w, int(round(cx)) + half + 1)
            ln = int(log_uniform(rng, 10, 150))
            a, b2 = max(0, int(cy) - ln), min(h, int(cy) + ln)
            fade = np.exp(-np.abs(np.arange(a, b2) - cy) / (0.5 * ln)).astype(np.float32)
            layer[a:b2, j0:j1] += 0.4 * amp * fade[:, None]
        info.append({"y": float(cy), "x": float(cx), "radius_px": rad, "amp_e": amp, "trail": bool(trail)})
    return layer, info


# ------------------------------------------------------------------------------------------- TRL
def _line_coords(shape, rng):
    h, w = shape
    # a line through a random point inside the frame, at a random angle
    cy, cx = rng.uniform(0.1 * h, 0.9 * h), rng.uniform(0.1 * w, 0.9 * w)
    ang = rng.uniform(0, np.pi)
    yy = np.arange(h, dtype=np.float32)[:, None] - cy
    xx = np.arange(w, dtype=np.float32)[None, :] - cx
    d = -xx * np.sin(ang) + yy * np.cos(ang)  # perpendicular distance
    t = xx * np.cos(ang) + yy * np.sin(ang)  # position along the line
    return d, t, float(ang), float(cy), float(cx)


def trails(shape, rng, sigma_bg, fwhm, n, saturation_e):
    """Satellite trails (defocused, glinting, sometimes in parallel pairs), aircraft (dotted
    navigation lights in parallel lines) and meteors (finite, flaring, wider)."""
    h, w = shape
    layer = np.zeros(shape, dtype=np.float32)
    info = []
    psf_sig = fwhm / 2.355
    for _ in range(n):
        kind = str(rng.choice(["satellite", "pair", "aircraft", "meteor"], p=[0.6, 0.12, 0.14, 0.14]))
        d, t, ang, cy, cx = _line_coords(shape, rng)
        amp = float(log_uniform(rng, 1.5, 3000.0) * sigma_bg)
        amp = min(amp, 3.0 * saturation_e)
        width = float(psf_sig * log_uniform(rng, 1.0, 6.0))
        if kind in ("satellite", "pair"):
            seps = [0.0] if kind == "satellite" else [0.0, float(rng.uniform(4, 30))]
            mod = np.ones_like(t)
            if rng.uniform() < 0.4:  # glints of a tumbling satellite
                per = rng.uniform(20, 300)
                mod = mod * (1.0 + rng.uniform(0.5, 5) * np.exp(-0.5 * ((np.mod(t, per) - per / 2) / rng.uniform(2, 10)) ** 2))
            for s in seps:
                layer += (amp * np.exp(-0.5 * ((d - s) / width) ** 2) * mod).astype(np.float32)
        elif kind == "aircraft":
            per = rng.uniform(10, 60)
            duty = rng.uniform(0.2, 0.6)
            for s in rng.uniform(-25, 25, int(rng.integers(2, 4))):
                on = (np.mod(t + rng.uniform(0, per), per) < duty * per).astype(np.float32)
                layer += (amp * np.exp(-0.5 * ((d - s) / width) ** 2) * on).astype(np.float32)
            layer += (0.1 * amp * np.exp(-0.5 * (d / width) ** 2)).astype(np.float32)
        else:
            half = rng.uniform(0.15, 0.6) * np.hypot(h, w)
            u = (t + half) / (2 * half)
            env = np.where((u > 0) & (u < 1), np.sin(np.pi * np.clip(u, 0, 1) ** 0.6) ** 2, 0.0)
            width *= rng.uniform(1.0, 2.0)
            layer += (amp * np.exp(-0.5 * (d / width) ** 2) * env).astype(np.float32)
        info.append({"kind": kind, "angle_rad": ang, "y": cy, "x": cx, "amp_e": amp, "width_sigma_px": width})
    return layer, info


# -------------------------------------------------------------------------------------------- FR
def fringes(shape, rng, sky, sigma_local_min, box):
    """Residual fringing: a band-pass random field (quasi-periodic interference contours) times a
    smooth envelope, as a fraction 0.1-3 % of the sky (multiplicative on the sky).

    Returns
    -------
    layer : float32 (H, W) e- (added to the sky), footprint : bool, info : list
    """
    h, w = shape
    period = float(log_uniform(rng, 15.0, 80.0))
    # interference contours of a thinned CCD: the phase follows the smooth thickness map, so the
    # fringes are wavy, mostly parallel bands whose orientation and spacing drift over the chip
    rot = rng.uniform(0, np.pi)
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    warp = lowres_field(shape, rng, lambda ky, kx: (ky * ky + kx * kx + 1e-6) ** -2.0, 16)
    bend = rng.uniform(2.0, 12.0)
    phase = (2 * np.pi / period) * (xx * np.cos(rot) + yy * np.sin(rot)) + bend * warp
    pattern = (np.cos(phase) * np.sqrt(2.0)).astype(np.float32)
    env = lowres_field(shape, rng, lambda ky, kx: (ky * ky + kx * kx + 1e-6) ** -2.0, 16)
    env = np.clip(0.6 + 0.5 * env, 0.0, 1.0) if rng.uniform() < 0.6 else np.ones(shape, dtype=np.float32)
    skyv = float(np.mean(sky))
    lo = max(0.001, 1.5 * sigma_local_min / (box * skyv))
    frac = float(log_uniform(rng, lo, max(0.03, 1.01 * lo)))
    amp_map = frac * sky * env  # local fringe amplitude (e-), 1 sigma of the pattern
    layer = (amp_map * pattern).astype(np.float32)
    return layer, amp_map, [{"period_px": period, "fraction_of_sky": frac}]


# ------------------------------------------------------------------------------------------- NEB
def nebulosity(shape, rng, sigma_bg):
    """Diffuse nebulosity from power-law random fields: filamentary cirrus, H II-like regions,
    fractal emission, and dark clouds absorbing a bright emission background."""
    h, w = shape
    kind = str(rng.choice(["cirrus", "hii", "fractal", "dark"], p=[0.3, 0.25, 0.25, 0.2]))
    slope = rng.uniform(2.6, 3.4)
    stretch = rng.uniform(1.0, 4.0) if kind == "cirrus" else 1.0
    rot = rng.uniform(0, np.pi)
    scale = 1.0 / max(h, w)

    def power(ky, kx):
        ku = kx * np.cos(rot) + ky * np.sin(rot)
        kv = (-kx * np.sin(rot) + ky * np.cos(rot)) * stretch
        return (ku * ku + kv * kv + scale * scale) ** (-slope / 2)

    f = lowres_field(shape, rng, power, 2)
    amp = float(log_uniform(rng, 0.5, 60.0) * sigma_bg)
    if kind == "cirrus":
        # filaments: ridges of the field, where |f| is small, sharpened
        base = np.clip(f - rng.uniform(-0.5, 0.8), 0, None)
        neb = amp * base ** rng.uniform(1.0, 2.0)
    elif kind == "hii":
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        rad = rng.uniform(0.2, 0.7) * max(h, w)
        yy = (np.arange(h, dtype=np.float32)[:, None] - cy) / rad
        xx = (np.arange(w, dtype=np.float32)[None, :] - cx) / rad
        envl = np.exp(-0.5 * (xx * xx + yy * yy) * 4)
        neb = amp * envl * np.exp(0.6 * f)
    elif kind == "fractal":
        # soft threshold (softplus) keeps the edges diffuse instead of cut
        x = 2.0 * (f - rng.uniform(-0.3, 0.8))
        neb = amp * 0.5 * np.logaddexp(0.0, x)
    else:
        g = lowres_field(shape, rng, power, 2)
        bright = amp * (1.5 + 0.3 * f)
        absorb = np.clip(g - rng.uniform(-0.2, 0.8), 0, 1.2) / 1.2
        neb = bright * (1.0 - absorb)
    neb = np.maximum(neb, 0).astype(np.float32)
    return neb, [{"kind": kind, "amp_e": amp, "slope": float(slope)}]


# ------------------------------------------------------------------------------------------- BBG
def bright_background(shape, rng, sigma_bg, bright_xy, fwhm):
    """Bright background: extended halos of bright stars, pupil ghosts (out-of-focus donuts with
    the secondary-mirror hole) and scattered-light glows from an edge or corner."""
    h, w = shape
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    layer = np.zeros(shape, dtype=np.float32)
    info = []
    kinds = list(rng.choice(["halo", "ghost", "scatter"], size=int(rng.integers(1, 3)), p=[0.4, 0.35, 0.25]))
    for kind in kinds:
        amp = float(log_uniform(rng, 1.0, 40.0) * sigma_bg)
        if kind in ("halo", "ghost") and len(bright_xy):
            sy, sx = bright_xy[int(rng.integers(0, len(bright_xy)))]
        else:
            sy, sx = rng.uniform(0, h), rng.uniform(0, w)
        if kind == "halo":
            rh = float(log_uniform(rng, 8.0, 60.0) * max(fwhm, 1.5))
            r = np.hypot(yy - sy, xx - sx)
            layer += (amp / (1.0 + (r / rh) ** 2) ** 1.5).astype(np.float32)
        elif kind == "ghost":
            rout = float(log_uniform(rng, 0.04, 0.25) * max(h, w))
            rin = rout * rng.uniform(0.2, 0.5)
            # ghosts sit on the line through the star and the optical axis
            cy, cx = h / 2, w / 2
            k = rng.choice([-1.0, 1.0]) * rng.uniform(0.3, 1.2)
            gy, gx = sy + k * (sy - cy) + rng.normal(0, 10), sx + k * (sx - cx) + rng.normal(0, 10)
            r = np.hypot(yy - gy, xx - gx)
            # pupil ghosts are faint (a few sigma at most) with soft, defocused edges
            edge = max(1.5, 0.1 * rout)
            ring = 1.0 / (1.0 + np.exp(np.clip((r - rout) / edge, -50, 50))) - 1.0 / (1.0 + np.exp(np.clip((r - rin) / edge, -50, 50)))
            layer += (min(0.3 * amp, float(log_uniform(rng, 0.5, 6.0)) * sigma_bg) * ring).astype(np.float32)
            sy, sx = gy, gx
        else:
            ang = rng.uniform(0, 2 * np.pi)
            ln = rng.uniform(0.1, 0.5) * max(h, w)
            # glow entering from outside the frame in direction ang
            ey, ex = h / 2 + np.sin(ang) * 0.7 * h, w / 2 + np.cos(ang) * 0.7 * w
            r = np.hypot(yy - ey, xx - ex)
            layer += (amp * np.exp(-r / ln)).astype(np.float32)
            sy, sx = ey, ex
        info.append({"kind": str(kind), "amp_e": amp, "y": float(sy), "x": float(sx)})
    return layer, info


# -------------------------------------------------------------------------------------------- SP
def spikes(shape, cond, stars, bright, sigma_bg):
    """Diffraction spikes of the bright stars: ``spike_count`` spikes at the instrument's angle,
    line brightness falling as r**-2, PSF-wide, grown out of the core.

    Each spike is drawn as point charges along its length (0.3 px apart) and across it (Gaussian
    quadrature), so the cost scales with the spike length, not with the frame area.
    """
    h, w = shape
    canvas = Canvas(shape)
    info = []
    fwhm = cond["fwhm_px"]
    width = max(0.35 * fwhm, 0.6)
    nsp = cond["spike_count"]
    angles = cond["spike_angle"] + np.arange(nsp) * (2 * np.pi / nsp)
    eps = cond["spike_strength"]
    across = np.linspace(-3.0, 3.0, 9)
    wq = np.exp(-0.5 * across ** 2)
    wq /= wq.sum()
    for k in bright:
        sy, sx, fl = stars["y"][k], stars["x"][k], stars["flux"][k]
        # spike line density L(r) = eps * F * fwhm / r**2 (e-/px along the spike)
        rmax = np.sqrt(eps * fl * fwhm / (0.05 * sigma_bg * width * 2.5))
        rmax = float(min(rmax, 1.5 * max(h, w)))
        if rmax < 3 * fwhm:
            continue
        t = np.arange(0.3, rmax, 0.3)
        tt = np.maximum(t, 0.5 * fwhm)
        line = 0.3 * eps * fl * fwhm / (tt * tt) * (1.0 - np.exp(-((t / (2.0 * fwhm)) ** 2)))
        for a in angles:
            ca, sa = np.cos(a), np.sin(a)
            d = across[:, None] * width
            py = sy + t[None, :] * sa + d * ca
            px = sx + t[None, :] * ca - d * sa
            canvas.add_bilinear(py, px, wq[:, None] * line[None, :])
        info.append({"y": float(sy), "x": float(sx), "length_px": rmax})
    return canvas.render(), info


# -------------------------------------------------------------------------------------------- OV
def overscan_region(shape, rng):
    """Overscan/prescan strips on one or more edges: serial (columns) or parallel (rows).

    Returns
    -------
    footprint : bool (H, W), info : list of dict
    """
    h, w = shape
    foot = np.zeros(shape, dtype=bool)
    info = []
    edges = ["left", "right", "top", "bottom"]
    n = 1 if rng.uniform() < 0.7 else 2
    chosen = rng.choice(edges, size=n, replace=False, p=[0.35, 0.35, 0.1, 0.2])
    for e in chosen:
        size = h if e in ("top", "bottom") else w
        width = int(np.clip(round(log_uniform(rng, 0.01, 0.12) * size), 3, size // 4))
        if e == "left":
            foot[:, :width] = True
        elif e == "right":
            foot[:, w - width:] = True
        elif e == "bottom":
            foot[:width, :] = True
        else:
            foot[h - width:, :] = True
        info.append({"edge": str(e), "width_px": width})
    return foot, info
