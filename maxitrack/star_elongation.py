"""Coherent elongation of a field's stars: the mark of a drift, a shake or a periodic error.

A tracking error smears every star of a field along the same path, so it adds the same
ellipticity to all of them. One star's ellipticity is noisy (noise, an unresolved companion, a
galaxy), but the weighted mean over a few hundred stars is known to a few thousandths, which no
tile of a hundred pixels can match. A normal exposure's stars are elongated too, by the optics'
anisotropy and by coma, but coma is radial about the optical axis and averages out over a square
field centred on it (a 2:1 frame keeps about a fifth of its corners' value, along its long side),
and the optics' own constant elongation is small.

Statistic (:class:`FieldElongation`; the stars are those of :mod:`maxitrack.field_rotation`,
measured and selected with the parameters of the network's ``field_rotation`` entry):

1. For each HDU with at least ``min_stars`` usable stars (:func:`maxitrack.field_rotation.usable_stars`),
   the weighted sum of their ellipticities ``eps = (Qxx - Qyy + 2 i Qxy) / (Qxx + Qyy)`` and of
   their weights, leaving out stars beyond ``clip`` robust sigmas from the weighted mean (3
   rounds: blends and galaxies the selection let through).
2. The field's mean ellipticity ``m = sum of weighted eps / sum of weights`` over its HDUs. The
   HDUs are pooled, not averaged as moduli, so that coma radial about a mosaic's axis, which
   elongates each outer CCD's stars along its own direction, cancels over the mosaic as it does
   over one centred frame.
3. ``E = 100 * max(|m| - sigmas * s, 0)``, in percent, ``s`` the standard error of ``m`` from the
   stars' own scatter about their HDU's mean (``sigmas``, the term's parameter, 0 when absent):
   a lower bound of the elongation, so that a field of few stars, whose mean is noisy, does not
   read as elongated.

Ellipticities are measured under a round weight the size of the star, which halves them for a
Gaussian star (``eps`` of a star with axis ratio ``q`` is about ``(1 - q**2) / (1 + q**2) / 2``).

The field's score adds ``weight * log(1 + max(E - offset, 0))`` to its calibrated logit (metadata
``star_elongation``, :class:`maxitrack.scoring.StarElongationTerm`). Its limits: a telescope
whose optics elongate the stars of a whole CCD more than the offset allows reads as an error; a
mosaic whose CCDs are stored in different orientations cancels a drift's elongation between
them and loses the term (docs/MAXITRACK.md, "Stars without defects, and the stars' mean
elongation"). No shipped network has the term yet (stop 27: its candidates failed their rules).
"""

from __future__ import annotations

import numpy as np

from .field_rotation import DEFAULT_FIELD_ROTATION, StarShapes, usable_stars


def elongation_sums(stars: StarShapes, params: dict | None = None) -> tuple[complex, float, float] | None:
    """Weighted sums of one HDU's usable stars' ellipticities and of their weights.

    Parameters
    ----------
    stars : StarShapes
        The HDU's stars (:func:`maxitrack.field_rotation.star_moments`).
    params : dict, optional
        :data:`maxitrack.field_rotation.DEFAULT_FIELD_ROTATION` keys (the selection's, ``clip``,
        ``min_stars``).

    Returns
    -------
    (complex, float, float) or None
        ``(sum of w * eps, sum of w, sum of w**2 |eps - mean|**2)`` over the stars kept (``mean``
        their weighted mean); None with fewer than ``min_stars`` usable stars.
    """
    p = dict(DEFAULT_FIELD_ROTATION, **(params or {}))
    _, eps, wt = usable_stars(stars, p)
    if len(eps) < int(p["min_stars"]):
        return None
    keep = np.ones(len(eps), bool)
    for _ in range(3):
        mean = np.sum(wt * eps * keep) / np.sum(wt * keep)
        r = np.abs(eps - mean) * np.sqrt(wt)
        s = 1.4826 * float(np.median(r[keep]))
        keep = r < float(p["clip"]) * max(s, 1e-12)
    total, weight = complex(np.sum(wt * eps * keep)), float(np.sum(wt * keep))
    scatter = float(np.sum((wt * keep) ** 2 * np.abs(eps - total / weight) ** 2))
    return total, weight, scatter


class FieldElongation:
    """A field's mean stellar ellipticity, accumulated over its HDUs.

    Parameters
    ----------
    params : dict, optional
        The stars' selection (:data:`maxitrack.field_rotation.DEFAULT_FIELD_ROTATION` keys).
    sigmas : float
        Standard errors taken off the mean's modulus (step 3 of the module's description).
    """

    def __init__(self, params: dict | None = None, sigmas: float = 0.0):
        self.params = dict(DEFAULT_FIELD_ROTATION, **(params or {}))
        self.sigmas = float(sigmas)
        self.total = 0j
        self.weight = 0.0
        self.scatter = 0.0

    def add(self, stars: StarShapes | None) -> None:
        """Add one HDU's stars (None or too few stars: the HDU does not count)."""
        sums = None if stars is None else elongation_sums(stars, self.params)
        if sums is not None:
            self.total += sums[0]
            self.weight += sums[1]
            self.scatter += sums[2]

    def percent(self) -> float:
        """The field's ``E`` in percent: its stars' weighted mean ellipticity less ``sigmas``
        standard errors, at least 0; 0 when no HDU has enough stars."""
        if self.weight <= 0:
            return 0.0
        error = np.sqrt(self.scatter) / self.weight
        return max(100.0 * abs(self.total) / self.weight - 100.0 * self.sigmas * error, 0.0)
