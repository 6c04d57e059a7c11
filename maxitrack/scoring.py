"""From tile logits to the probability that a field suffers a tracking error.

Aggregation
    A tracking error moves every star of the field, so every tile that contains stars carries the
    same evidence, with independent noise (different stars, different contaminants). The field's
    evidence is the **mean of its tile logits** over all the tiles of all its 2D HDUs (each plane of a
    cube is a field of its own):

    * the mean, not the sum: tiles of one frame are not independent draws (they share the seeing,
      the error amplitude), so summing logits would count the same evidence many times and make
      the score overconfident and dependent on the number of tiles (hence on the image size and
      ``--frac``);
    * the mean, not the maximum: one tile on a satellite trail or a bleed trail that fools the
      network would otherwise decide for the whole field; averaging lets the other tiles outvote it.

    The mean logit is mapped to a calibrated logit by an affine map ``slope * mean + intercept``
    fitted on validation frames (not the training frames) at the training class balance (logistic
    regression on one variable, i.e. Platt scaling), stored in the network metadata
    (``extra["calibration"]``). Without it the identity is used.

Double images
    A network whose metadata has ``double_images`` also adds ``weight * log(1 + max(D - offset, 0))``
    to the calibrated logit, ``D`` the field's double-image statistic
    (:mod:`maxitrack.double_images`: pairs of compact peaks piled up at one lag, the mark of a
    tracking jump, which the tiles' network often misses). The weight is fitted with the
    calibration (a two-variable logistic regression on the same validation frames). The log keeps
    a field of double images from outweighing everything else by its count of stars alone.

Field rotation
    A network whose metadata has ``field_rotation`` adds ``weight * log(1 + max(R - offset, 0))``
    in the same way, ``R`` the field's rotation statistic (:mod:`maxitrack.field_rotation`: a
    tangential pattern in the stars' ellipticities, the mark of a tracking arc too small to
    smear the stars visibly), its weight fitted with the calibration too.

Star elongation
    A network whose metadata has ``star_elongation`` adds ``weight * log(1 + max(E - offset, 0))``
    too, ``E`` the field's stars' mean ellipticity in percent (:mod:`maxitrack.star_elongation`:
    the same elongation on every star, the mark of a drift, shake or periodic error too short to
    show in a tile). Its stars are the field-rotation term's, so it needs that term.

Prior
    The calibrated logit is a posterior at the training prior ``pi_train``
    (``metadata.training_priors[0]``). For a population where a fraction ``prior`` of exposures is
    affected, Bayes' rule gives ``odds(p') = odds(p) * odds(prior) / odds(pi_train)``, an additive
    shift of the logit (as :mod:`maximask`'s prior modification).
"""

from __future__ import annotations

import math

import numpy as np


def logit(p: float) -> float:
    """``log(p / (1 - p))`` for p in (0, 1)."""
    return math.log(p) - math.log1p(-p)


def sigmoid(x):
    """Logistic function, overflow-safe; scalar or ndarray."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out if out.ndim else float(out)


class DoubleImageTerm:
    """The double-image term of a network's field logit (metadata ``double_images``); the
    field-rotation term (metadata ``field_rotation``) has the same form."""

    #: The metadata entry the term is read from, for error messages.
    entry = "double_images"
    #: What parameters added since a network was made meant before them (its entry lacks them).
    predating = {}

    def __init__(self, weight: float, offset: float, params: dict | None = None):
        self.weight, self.offset = float(weight), float(offset)
        self.params = dict(params or {})

    @classmethod
    def from_metadata(cls, entry: dict | None) -> "DoubleImageTerm | None":
        """The term described by ``entry`` (None for None); ValueError if malformed."""
        if entry is None:
            return None
        if not isinstance(entry, dict):
            raise ValueError(f"{cls.entry} must be an object, not {entry!r}")
        try:
            weight, offset = float(entry["weight"]), float(entry["offset"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{cls.entry} needs numeric 'weight' and 'offset'") from None
        if not (math.isfinite(weight) and math.isfinite(offset)):
            raise ValueError(f"{cls.entry}: weight and offset must be finite")
        params = entry.get("params") or {}
        if not isinstance(params, dict):
            raise ValueError(f"{cls.entry}: 'params' must be an object")
        return cls(weight, offset, dict(cls.predating, **params))

    def __call__(self, statistic: float) -> float:
        """The term's value for a field of statistic ``statistic``."""
        return self.weight * math.log1p(max(float(statistic) - self.offset, 0.0))


class FieldRotationTerm(DoubleImageTerm):
    """The field-rotation term of a network's field logit (metadata ``field_rotation``):
    ``weight * log(1 + max(R - offset, 0))``, R the field's rotation statistic
    (:mod:`maxitrack.field_rotation`)."""

    entry = "field_rotation"
    # the sharpness cut and the width check came after the first networks with the term (stop 27)
    predating = {"max_sharpness": None, "width_check": False}


class StarElongationTerm(DoubleImageTerm):
    """The star-elongation term of a network's field logit (metadata ``star_elongation``):
    ``weight * log(1 + max(E - offset, 0))``, E the field's stars' mean ellipticity in percent
    (:mod:`maxitrack.star_elongation`)."""

    entry = "star_elongation"


def field_logit(tile_logits, calibration: dict | None = None, extra: float = 0.0) -> float:
    """Calibrated logit of one field from the logits of its tiles.

    Parameters
    ----------
    tile_logits : array_like, float, shape (N,) or (N, 1)
        Network logits of the N >= 1 tiles of the field (all its HDUs).
    calibration : dict, optional
        ``{"slope": a, "intercept": b}``; identity when None.
    extra : float
        Added after the calibration (the double-image, field-rotation and star-elongation terms,
        :class:`DoubleImageTerm`, :class:`FieldRotationTerm`, :class:`StarElongationTerm`).

    Returns
    -------
    float
        ``a * mean(tile_logits) + b + extra``: the log-odds of a tracking error at the training prior.
    """
    z = np.asarray(tile_logits, dtype=np.float64).ravel()
    if z.size == 0:
        raise ValueError("no tile to score")
    m = float(z.mean())
    if calibration:
        m = float(calibration.get("slope", 1.0)) * m + float(calibration.get("intercept", 0.0))
    return m + float(extra)


def prior_shift(prior: float, training_prior: float) -> float:
    """Additive logit shift from the training prior to ``prior`` (both in (0, 1))."""
    return logit(prior) - logit(training_prior)


def field_probability(tile_logits, training_prior: float, prior: float, calibration: dict | None = None,
                      extra: float = 0.0) -> float:
    """Probability of a tracking error for one field.

    Parameters
    ----------
    tile_logits : array_like, float, shape (N,) or (N, 1)
        Network logits of the field's tiles.
    training_prior : float
        Fraction of tracking-error frames in the training data, in (0, 1).
    prior : float
        Expected fraction of tracking-error exposures in the data being scored, in (0, 1).
    calibration : dict, optional
        See :func:`field_logit`.
    extra : float
        See :func:`field_logit`.

    Returns
    -------
    float in [0, 1]
    """
    return float(sigmoid(field_logit(tile_logits, calibration, extra) + prior_shift(prior, training_prior)))
