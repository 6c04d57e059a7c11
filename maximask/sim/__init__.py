"""maximask.sim: realistic CCD/NIR frames with every contaminant class, exact per-pixel truth, and
tracking-error frames for maxitrack.

Public API: :func:`simulate_frame`, :func:`simulate_tracking_frame`, :func:`to_raw`.
"""

from .detector import bleed_columns, to_raw
from .frame import simulate_frame
from .tracking import TRACKING_KINDS, simulate_tracking_frame

__all__ = ["simulate_frame", "simulate_tracking_frame", "to_raw", "bleed_columns", "TRACKING_KINDS"]
