"""Do frames arrive as fast as their stamps say they were taken? (DDS transport losses, not ours.)

Without a Fast DDS profile whose shared-memory segment holds a whole image, best-effort image topics
lose most frames in transport: a 30 Hz camera reaches the subscriber at 3-4 Hz. The stamps of the frames
that do arrive still step by the camera's period (some consecutive frames get through), so the camera
rate can be read from the stamps and compared with the arrival rate.

:class:`ArrivalMonitor` is fed at the subscription callback (before the node's own latest-only slot,
whose drops are the node's, counted separately). Over a sliding window it measures

* the arrival rate X = (n - 1) / (newest - oldest arrival time), and
* the stamp rate Y = 1 / (the camera period): the period is the smallest stamp step between consecutive
  arrivals (steps are whole multiples of the period when frames are lost, and with random losses some
  consecutive frames get through; stamp jitter of a few tens of percent stays well inside ``ratio``),

and reports a problem when X < ``ratio`` * Y. A camera that really runs slowly has stamp steps equal to
its arrival period, so it is not reported. A source that keeps exactly every k-th frame is
indistinguishable from a camera running k times slower and is not reported either.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Optional

__all__ = ["ArrivalMonitor", "FASTDDS_HINT"]

FASTDDS_HINT = ("frames are lost in transport: export FASTDDS_DEFAULT_PROFILES_FILE=<monother_ros share>/config/"
                "fastdds.xml for every process on the robot, camera drivers included")
_MIN_STEP_S = 1e-3  # stamp steps below this are duplicates or bursts, not a camera period


class ArrivalMonitor:
    """Arrival rate versus stamp rate of one stream.

    Args:
        window_s: arrivals older than this (before the newest) are forgotten, seconds.
        min_frames: no verdict with fewer arrivals in the window.
        ratio: report when the arrival rate is below ``ratio`` times the stamp rate.
    """

    def __init__(self, window_s: float = 5.0, *, min_frames: int = 8, ratio: float = 0.5) -> None:
        if window_s <= 0 or min_frames < 3 or not 0 < ratio < 1:
            raise ValueError(f"bad ArrivalMonitor settings: window_s={window_s}, min_frames={min_frames}, "
                             f"ratio={ratio}")
        self.window_s, self.min_frames, self.ratio = float(window_s), int(min_frames), float(ratio)
        self._frames: deque[tuple[float, int]] = deque()  # (arrival s, stamp ns)
        self._lock = threading.Lock()

    def add(self, stamp_ns: int, arrival_s: float) -> None:
        """One frame arrived at ``arrival_s`` (seconds of the node clock: simulated time under
        ``use_sim_time``, so a slowed-down simulation or bag replay is not taken for losses) with header
        stamp ``stamp_ns``."""
        with self._lock:
            if self._frames and (stamp_ns < self._frames[-1][1] or arrival_s < self._frames[-1][0]):
                self._frames.clear()  # stamps or the clock went back (bag loop, clock reset): start over
            self._frames.append((float(arrival_s), int(stamp_ns)))
            while self._frames and self._frames[0][0] < arrival_s - self.window_s:
                self._frames.popleft()

    def reset(self) -> None:
        with self._lock:
            self._frames.clear()

    def rates(self) -> Optional[tuple[float, float]]:
        """(arrival Hz, stamp Hz) over the window, or None without enough frames or stamp steps."""
        with self._lock:
            frames = list(self._frames)
        if len(frames) < self.min_frames:
            return None
        span = frames[-1][0] - frames[0][0]
        steps = sorted((b[1] - a[1]) / 1e9 for a, b in zip(frames, frames[1:]) if (b[1] - a[1]) / 1e9 >= _MIN_STEP_S)
        if span <= 0 or not steps:
            return None
        return (len(frames) - 1) / span, 1.0 / steps[0]

    def problem(self) -> Optional[str]:
        """The warning text when frames arrive much slower than their stamps advance, else None."""
        rates = self.rates()
        if rates is None:
            return None
        arrival_hz, stamp_hz = rates
        if arrival_hz >= self.ratio * stamp_hz:
            return None
        return (f"frames arrive at {arrival_hz:.1f} Hz while their stamps advance at {stamp_hz:.1f} Hz: "
                + FASTDDS_HINT)
