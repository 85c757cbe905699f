"""Health reporting: rates, latencies, drop counters, named problems, and ``/diagnostics`` messages.

The logic (:class:`RateMeter`, :class:`LatencyStats`, :class:`ProblemTracker`, :class:`HealthReport`)
needs no node and takes an injectable clock, so tests never sleep; :func:`to_status` and
:func:`make_array` turn a report into ``diagnostic_msgs`` messages.

Problem logging is throttled **per problem name** here rather than with rclpy's
``throttle_duration_sec``: rclpy throttles per call site, so two different problems reported from the
same line (e.g. every bad-input reason from one ``except``) would silence each other.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Callable, Iterable, Optional, Protocol

__all__ = [
    "Level",
    "RateMeter",
    "LatencyStats",
    "Problem",
    "ProblemTracker",
    "HealthReport",
    "to_status",
    "make_array",
    "DiagnosticsPublisher",
]

_logger = logging.getLogger(__name__)

Clock = Callable[[], float]


class Level(IntEnum):
    """``diagnostic_msgs/DiagnosticStatus`` levels."""

    OK = 0
    WARN = 1
    ERROR = 2
    STALE = 3


class RateMeter:
    """Event rate over a sliding time window.

    Args:
        window_s: events older than this (before the newest) are forgotten.
        clock: monotonic seconds (``time.monotonic`` by default; tests inject their own).
    """

    def __init__(self, window_s: float = 5.0, *, clock: Clock = time.monotonic) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = float(window_s)
        self._clock = clock
        self._times: deque[float] = deque()
        self._lock = threading.Lock()
        self.total = 0

    def tick(self, now: Optional[float] = None) -> None:
        """Record one event (at ``now``, default the clock)."""
        now = self._clock() if now is None else float(now)
        with self._lock:
            self._times.append(now)
            self.total += 1
            self._prune(now)

    def _prune(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()

    def rate_hz(self, now: Optional[float] = None) -> float:
        """Events per second in the window: (n - 1) / (newest - oldest); 0 with fewer than 2 events.

        When events stopped, the window is measured up to ``now`` so the rate decays to 0.
        """
        now = self._clock() if now is None else float(now)
        with self._lock:
            self._prune(now)
            n = len(self._times)
            if n < 2:
                return 0.0
            span = self._times[-1] - self._times[0]
            # A silence longer than the mean period counts too, else a stream that stopped would keep
            # reporting its old rate until the window empties.
            gap = now - self._times[-1]
            if gap > span / (n - 1):
                span += gap
            return (n - 1) / span if span > 0 else 0.0

    def reset(self) -> None:
        with self._lock:
            self._times.clear()


class LatencyStats:
    """Mean / percentiles of the last ``window`` latency samples (seconds)."""

    def __init__(self, window: int = 300) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self._samples: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.count = 0

    def add(self, seconds: float) -> None:
        if not math.isfinite(seconds):
            return
        with self._lock:
            self._samples.append(float(seconds))
            self.count += 1

    def summary(self) -> dict[str, float]:
        """{'mean', 'p50', 'p99', 'max'} in seconds (NaN when empty); nearest-rank percentiles."""
        with self._lock:
            values = sorted(self._samples)
        if not values:
            nan = float("nan")
            return {"mean": nan, "p50": nan, "p99": nan, "max": nan}

        def percentile(p: float) -> float:
            rank = max(1, math.ceil(p / 100.0 * len(values)))
            return values[rank - 1]

        return {"mean": sum(values) / len(values), "p50": percentile(50), "p99": percentile(99), "max": values[-1]}

    def reset(self) -> None:
        with self._lock:
            self._samples.clear()


class _Logger(Protocol):
    def warning(self, message: str) -> object: ...
    def error(self, message: str) -> object: ...
    def info(self, message: str) -> object: ...


@dataclass
class Problem:
    """One named problem currently present."""

    name: str
    level: Level
    reason: str
    first_seen: float
    last_seen: float
    count: int = 1


class ProblemTracker:
    """Named problems (``camera_info_missing``, ``bad_encoding`` ...) with their latest reason.

    ``report`` records the problem and logs it at most once per ``throttle_s`` per name (the first
    occurrence always); ``clear`` removes it when good input returns and logs the recovery once.
    ``occurrences`` keeps the total count per name, cleared or not.

    Args:
        logger: rclpy node logger or ``logging.Logger`` (anything with warning/error/info).
        throttle_s: minimum seconds between two log lines of the same problem.
        clock: monotonic seconds.
    """

    def __init__(self, logger: Optional[_Logger] = None, *, throttle_s: float = 5.0, clock: Clock = time.monotonic) -> None:
        self._log = logger or _logger
        self.throttle_s = float(throttle_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._active: dict[str, Problem] = {}
        self._last_logged: dict[str, float] = {}
        self.occurrences: dict[str, int] = {}
        self.log_lines = 0

    def report(self, name: str, reason: str, level: Level = Level.WARN) -> None:
        """Record (or refresh) problem ``name`` with ``reason``; log throttled."""
        now = self._clock()
        with self._lock:
            problem = self._active.get(name)
            if problem is None:
                self._active[name] = Problem(name, Level(level), reason, now, now)
            else:
                problem.level, problem.reason, problem.last_seen = Level(level), reason, now
                problem.count += 1
            self.occurrences[name] = self.occurrences.get(name, 0) + 1
            last = self._last_logged.get(name)
            should_log = last is None or now - last >= self.throttle_s
            if should_log:
                self._last_logged[name] = now
                self.log_lines += 1
                count = self._active[name].count
        if should_log:
            text = f"{name}: {reason}" + (f" ({count} times so far)" if count > 1 else "")
            # Two call sites on purpose: rclpy's logger caches the severity per calling line and raises
            # "Logger severity cannot be changed between calls" if one line logs at two levels.
            if level >= Level.ERROR:
                self._log.error(text)
            else:
                self._log.warning(text)

    def clear(self, name: str) -> bool:
        """Mark ``name`` resolved; returns True if it was active (and logs the recovery)."""
        with self._lock:
            problem = self._active.pop(name, None)
            self._last_logged.pop(name, None)
        if problem is not None:
            self._log.info(f"{name}: resolved after {problem.count} occurrence(s)")
            return True
        return False

    def clear_all(self) -> None:
        for name in list(self.active()):
            self.clear(name)

    def active(self) -> dict[str, Problem]:
        """Copy of the active problems, by name."""
        with self._lock:
            return {k: Problem(**vars(v)) for k, v in self._active.items()}

    def is_active(self, name: str) -> bool:
        with self._lock:
            return name in self._active

    def level(self) -> Level:
        """Highest level among active problems (OK when none)."""
        with self._lock:
            return max((p.level for p in self._active.values()), default=Level.OK)


@dataclass
class HealthReport:
    """Everything one ``DiagnosticStatus`` says; fill ``values`` and ``problems``, then :meth:`summarise`.

    Rate expectations add a WARN (or ERROR when the rate is 0) for streams slower than expected.
    """

    name: str
    hardware_id: str = ""
    values: dict[str, str] = field(default_factory=dict)
    checks: list[tuple[Level, str]] = field(default_factory=list)

    def add_value(self, key: str, value: object) -> None:
        if isinstance(value, float):
            text = "nan" if math.isnan(value) else f"{value:.4g}"
        else:
            text = str(value)
        self.values[key] = text

    def add_rate(self, key: str, meter: RateMeter, *, expected_min_hz: Optional[float] = None, now: Optional[float] = None) -> float:
        """Add ``key`` = rate (Hz); below ``expected_min_hz`` is a WARN, no event at all an ERROR."""
        hz = meter.rate_hz(now)
        self.add_value(key, round(hz, 2))
        if expected_min_hz is not None and hz < expected_min_hz:
            level = Level.ERROR if hz == 0.0 else Level.WARN
            self.checks.append((level, f"{key} {hz:.1f} Hz < {expected_min_hz:g} Hz"))
        return hz

    def add_latency(self, prefix: str, stats: LatencyStats) -> None:
        """Add ``<prefix> mean/p50/p99/max (ms)``."""
        for key, value in stats.summary().items():
            self.add_value(f"{prefix} {key} (ms)", value * 1e3)

    def add_problems(self, tracker: ProblemTracker) -> None:
        """Every active problem becomes a check and a ``problem: <name>`` value with its reason."""
        for name, problem in sorted(tracker.active().items()):
            self.checks.append((problem.level, f"{name}: {problem.reason}"))
            self.values[f"problem: {name}"] = problem.reason

    def add_check(self, level: Level, message: str) -> None:
        self.checks.append((Level(level), message))

    def summarise(self) -> tuple[Level, str]:
        """(highest level, message): 'OK' or the messages of the checks at that level joined by '; '."""
        level = max((lvl for lvl, _ in self.checks), default=Level.OK)
        if level == Level.OK:
            return level, "OK"
        return level, "; ".join(msg for lvl, msg in self.checks if lvl == level)


def to_status(report: HealthReport):
    """``diagnostic_msgs/DiagnosticStatus`` for a report."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    level, message = report.summarise()
    return DiagnosticStatus(
        level=bytes([int(level)]),
        name=report.name,
        message=message,
        hardware_id=report.hardware_id,
        values=[KeyValue(key=k, value=v) for k, v in report.values.items()],
    )


def make_array(statuses: Iterable, stamp_ns: int):
    """``diagnostic_msgs/DiagnosticArray`` stamped ``stamp_ns`` holding ``statuses``."""
    from diagnostic_msgs.msg import DiagnosticArray

    from monother_ros.ros.convert import make_header

    return DiagnosticArray(header=make_header(stamp_ns, ""), status=list(statuses))


class DiagnosticsPublisher:
    """Publishes ``/diagnostics`` from a node on a timer: one status per report provider.

    Args:
        node: the rclpy node (the timer runs in its executor; providers must be quick and thread-safe).
        providers: callables returning a :class:`HealthReport` each.
        period_s: publishing period (diagnostic_updater's default is 1 s).
        topic: the topic (``/diagnostics``, absolute as the aggregator expects).
    """

    def __init__(self, node, providers: Iterable[Callable[[], HealthReport]], *, period_s: float = 1.0,
                 topic: str = "/diagnostics") -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        from monother_ros.ros import qos

        if period_s <= 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        self.node = node
        self.providers = list(providers)
        self.publisher = node.create_publisher(DiagnosticArray, topic, qos.DIAGNOSTICS)
        self.timer = node.create_timer(period_s, self.publish)

    def publish(self) -> None:
        """Build every report and publish them now (also called by the timer)."""
        statuses = [to_status(provider()) for provider in self.providers]
        self.publisher.publish(make_array(statuses, self.node.get_clock().now().nanoseconds))

    def destroy(self) -> None:
        self.node.destroy_timer(self.timer)
        self.node.destroy_publisher(self.publisher)
