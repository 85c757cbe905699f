"""A TF buffer with tf2 semantics, and thin rclpy wrappers to fill it from ``/tf`` + ``/tf_static``.

tf2_ros is not available as a wheel. :class:`TransformBuffer` is our own, needing no node (tests never
spin) and no rclpy: static and dynamic transforms, validation, time interpolation (slerp / lerp) inside
the cache window, chain lookups through the tree and tf2's error behaviour:

* ``lookup_transform(target, source, time_ns)`` returns the 4x4 ``target_T_source`` (maps points in
  ``source`` to ``target``); ``time_ns == 0`` means the latest time at which the whole chain is known
  (tf2's ``getLatestCommonTime``, walked with each frame's newest parent);
* each frame's cache stores ``(stamp, parent, transform)``, so a frame may change parent over time
  (a robot handed from one map to another, a tool moved between mounts): a lookup at a time walks the
  tree with the parent valid at that time, the older sample's parent between two samples, and never
  interpolates across a parent change (tf2's ``TimeCache::getParent`` / ``getData``);
* a time outside a link's data raises :class:`ExtrapolationError` ("Lookup would require extrapolation
  into the future/past ..."); unknown frames :class:`FrameNotFoundError`; frames in separate trees
  :class:`ConnectivityError`; an empty frame id or one starting with ``/`` in a lookup
  :class:`InvalidFrameError`; all derive from :class:`TransformError`;
* ``timeout_s > 0`` waits (on a condition variable, woken by every insertion) for the data to arrive.

Insertion follows tf2's ``BufferCore::setTransform``:

* frame ids with a leading ``/`` (ROS 1 style) are stripped, as tf2 does, and counted
  (``slashes_stripped``) and reported through ``problem callbacks`` (``leading_slash``); lookups with
  such ids are refused (:class:`InvalidFrameError`), as tf2 refuses them;
* a quaternion is accepted when ``| |q|^2 - 1 | < 1e-2`` (tf2's ``QUATERNION_NORMALIZATION_TOLERANCE``)
  and normalised, so a hand-typed ``(0, 0, 0.71, 0.71)`` works; further off it is rejected;
* a dynamic transform older than its frame's newest data by more than the cache length is ignored
  (``old_data``, tf2's ``TF_OLD_DATA``): the frame's data stay. Backward clock jumps (bag loops) are
  the clock's business: :class:`TransformListener` clears dynamic data when the node clock jumps back,
  and the depth node does when its image stamps jump back.

Bad input is rejected and counted by reason in ``TransformBuffer.rejected`` (``nan``,
``non_unit_quaternion``, ``self_transform``, ``empty_frame_id``, ``old_data``); ``last_rejection``
holds the latest message; every rejection and every stripped slash is also passed to the callbacks
added with :meth:`TransformBuffer.add_problem_callback` (the listener logs them, throttled per reason).

Thread safety: every public method of :class:`TransformBuffer` may be called from any thread. A
blocking lookup must not be made from an executor callback of the same single-threaded executor that
feeds the buffer (nothing would fill it while waiting): call it from a worker thread, as the depth node
does, or with ``timeout_s = 0``.
"""
from __future__ import annotations

import bisect
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from monother_ros.core import se3
from monother_ros.errors import MonotherError

__all__ = [
    "TransformError",
    "FrameNotFoundError",
    "ConnectivityError",
    "ExtrapolationError",
    "InvalidFrameError",
    "TransformBuffer",
    "TransformListener",
    "StaticTransformBroadcaster",
    "ThrottledReporter",
    "transform_to_msg",
    "on_backward_clock_jump",
    "DEFAULT_CACHE_TIME_NS",
    "DEFAULT_TF_TOPIC",
    "DEFAULT_STATIC_TF_TOPIC",
    "QUATERNION_NORMALIZATION_TOLERANCE",
]

_logger = logging.getLogger(__name__)

DEFAULT_CACHE_TIME_NS = 10_000_000_000
DEFAULT_TF_TOPIC = "/tf"
DEFAULT_STATIC_TF_TOPIC = "/tf_static"
QUATERNION_NORMALIZATION_TOLERANCE = 1e-2  # tf2: | |q|^2 - 1 | must stay below this
_MAX_GRAPH_DEPTH = 1000  # as tf2: a longer walk means a loop in the tree

ProblemCallback = Callable[[str, str], None]  # (reason, text)


class TransformError(MonotherError, LookupError):
    """A transform cannot be looked up (base of the specific errors below)."""


class FrameNotFoundError(TransformError):
    """A frame has never been seen."""


class ConnectivityError(TransformError):
    """The frames are in two unconnected trees (or the tree has a loop)."""


class ExtrapolationError(TransformError):
    """The requested time is outside the data held for a link of the chain."""


class InvalidFrameError(TransformError):
    """A lookup named an empty frame id or one starting with '/' (tf2's InvalidArgumentException)."""


@dataclass(frozen=True)
class _Entry:
    stamp_ns: int
    parent: str
    rotation: np.ndarray     # (4,) unit quaternion x, y, z, w
    translation: np.ndarray  # (3,) metres


def _strip(frame_id: str) -> str:
    return frame_id[1:] if frame_id.startswith("/") else frame_id


class TransformBuffer:
    """Static and time-stamped transforms between frames, with tf2's insertion and lookup semantics.

    Args:
        cache_time_ns: how long dynamic transforms are kept, behind each frame's newest (tf2: 10 s).
        quaternion_tolerance: accepted | |q|^2 - 1 | (tf2: 1e-2); larger is rejected (``non_unit_quaternion``).
    """

    def __init__(
        self,
        cache_time_ns: int = DEFAULT_CACHE_TIME_NS,
        *,
        quaternion_tolerance: float = QUATERNION_NORMALIZATION_TOLERANCE,
    ) -> None:
        if cache_time_ns <= 0:
            raise ValueError(f"cache_time_ns must be > 0, got {cache_time_ns}")
        self.cache_time_ns = int(cache_time_ns)
        self.quaternion_tolerance = float(quaternion_tolerance)
        self._cond = threading.Condition(threading.RLock())
        self._static: dict[str, _Entry] = {}
        self._dynamic: dict[str, list[_Entry]] = {}   # per child frame, sorted by stamp
        self._stamps: dict[str, list[int]] = {}       # the same stamps, for bisect
        self._frames: set[str] = set()  # every frame seen since the last clear (kept incrementally)
        self._problem_callbacks: list[ProblemCallback] = []
        self.rejected: dict[str, int] = {}
        self.last_rejection: Optional[str] = None
        self.slashes_stripped = 0
        self.resets = 0
        self.accepted = 0

    def add_problem_callback(self, callback: ProblemCallback) -> None:
        """Call ``callback(reason, text)`` for every rejected transform and every stripped '/'
        (from the inserting thread, outside the buffer's lock)."""
        with self._cond:
            self._problem_callbacks.append(callback)

    def remove_problem_callback(self, callback: ProblemCallback) -> None:
        """Stop calling a callback added with :meth:`add_problem_callback`."""
        with self._cond:
            if callback in self._problem_callbacks:
                self._problem_callbacks.remove(callback)

    # ------------------------------------------------------------------ insertion

    def set_transform(
        self,
        parent: str,
        child: str,
        stamp_ns: int,
        translation: Sequence[float],
        rotation: Sequence[float],
        *,
        static: bool = False,
    ) -> bool:
        """Insert ``parent_T_child`` (child frame expressed in the parent) valid at ``stamp_ns``.

        Args:
            parent, child: frame ids (a leading '/' is stripped and reported, as tf2 strips it).
            stamp_ns: header stamp in nanoseconds (ignored for static transforms).
            translation: (3,) metres. rotation: (4,) quaternion x, y, z, w (normalised when
                | |q|^2 - 1 | < ``quaternion_tolerance``).
            static: a static transform, valid at all times (``/tf_static``).

        Returns:
            True if stored, False if rejected (reason counted in ``rejected``, text in ``last_rejection``).
        """
        raw = (str(parent), str(child))
        parent, child = _strip(raw[0]), _strip(raw[1])
        t = np.asarray(translation, dtype=np.float64).reshape(-1)
        q = np.asarray(rotation, dtype=np.float64).reshape(-1)
        label = f"transform {parent!r} -> {child!r}"
        if not parent or not child:
            return self._reject("empty_frame_id", f"{label}: empty frame id")
        if parent == child:
            return self._reject("self_transform", f"{label}: a frame cannot be its own parent")
        if t.shape != (3,) or q.shape != (4,) or not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
            return self._reject("nan", f"{label}: translation/rotation not finite: t={t.tolist()} q={q.tolist()}")
        with np.errstate(over="ignore"):  # |q|^2 of 1e300-sized input is inf: rejected below
            squared = float(np.dot(q, q))
        if not abs(squared - 1.0) < self.quaternion_tolerance:
            return self._reject(
                "non_unit_quaternion",
                f"{label}: quaternion is not unit length (|q|^2 = {squared:.6f}, tf2 accepts |q|^2 - 1 below "
                f"{self.quaternion_tolerance:g}): {q.tolist()}",
            )
        entry = _Entry(int(stamp_ns), parent, q / math.sqrt(squared), t.copy())
        with self._cond:
            if static:
                self._static[child] = entry
                self._dynamic.pop(child, None)
                self._stamps.pop(child, None)
                too_old = None
            else:
                too_old = self._insert_dynamic(child, entry)
            if too_old is None:
                self._frames.update((parent, child))
                self.accepted += 1
                if raw != (parent, child):
                    self.slashes_stripped += 1
                self._cond.notify_all()
        if too_old is not None:
            return self._reject("old_data", too_old)
        if raw != (parent, child):
            self._notify("leading_slash", f"frame ids {raw[0]!r} -> {raw[1]!r} start with '/' (not allowed in "
                         f"tf2): stored as {parent!r} -> {child!r}")
        return True

    def set_transform_message(self, msg, *, static: bool = False) -> bool:
        """Insert a ``geometry_msgs/TransformStamped`` (or anything with the same attributes)."""
        tr, rot = msg.transform.translation, msg.transform.rotation
        stamp = msg.header.stamp
        return self.set_transform(
            msg.header.frame_id,
            msg.child_frame_id,
            int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec),
            (tr.x, tr.y, tr.z),
            (rot.x, rot.y, rot.z, rot.w),
            static=static,
        )

    def _insert_dynamic(self, child: str, entry: _Entry) -> Optional[str]:
        """Store ``entry``; returns the reason text when it is older than the cache window (not stored)."""
        entries = self._dynamic.setdefault(child, [])
        stamps = self._stamps.setdefault(child, [])
        if stamps and entry.stamp_ns < stamps[-1] - self.cache_time_ns:
            # tf2's TF_OLD_DATA: ignored, the frame's data stay (a stale message must not empty the cache).
            return (f"transform {entry.parent!r} -> {child!r} at {entry.stamp_ns / 1e9:.9f} s is older than the "
                    f"cache ({self.cache_time_ns / 1e9:g} s behind the newest, {stamps[-1] / 1e9:.9f} s): ignored")
        k = bisect.bisect_left(stamps, entry.stamp_ns)
        if k < len(stamps) and stamps[k] == entry.stamp_ns:
            entries[k] = entry  # same stamp again: the newer message wins
        else:
            entries.insert(k, entry)
            stamps.insert(k, entry.stamp_ns)
        self._static.pop(child, None)
        # Prune behind the newest stamp by the cache length (tf2 TimeCache::pruneList).
        drop = bisect.bisect_left(stamps, stamps[-1] - self.cache_time_ns)
        if drop:
            del entries[:drop]
            del stamps[:drop]
        return None

    def _reject(self, reason: str, text: str) -> bool:
        with self._cond:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1
            self.last_rejection = text
        _logger.debug("rejected %s", text)
        self._notify(reason, text)
        return False

    def _notify(self, reason: str, text: str) -> None:
        with self._cond:
            callbacks = list(self._problem_callbacks)
        for callback in callbacks:
            callback(reason, text)

    def clear(self) -> None:
        """Forget dynamic transforms (on a backward clock jump); static ones stay, as in tf2."""
        with self._cond:
            self._clear_dynamic_locked()

    def _clear_dynamic_locked(self) -> None:
        self._dynamic.clear()
        self._stamps.clear()
        self._frames = set(self._static) | {e.parent for e in self._static.values()}
        self.resets += 1

    def clear_all(self) -> None:
        """Forget everything, static transforms included."""
        with self._cond:
            self._static.clear()
            self._clear_dynamic_locked()

    # ------------------------------------------------------------------ queries

    @property
    def frames(self) -> set[str]:
        """Every frame id seen, as child or parent."""
        with self._cond:
            return set(self._frames)

    def _has_cache(self, frame: str) -> bool:
        return frame in self._static or bool(self._stamps.get(frame))

    def _sample(self, child: str, time_ns: int) -> _Entry:
        """parent_T_child at ``time_ns`` (0 = newest) with the parent valid then (tf2 TimeCache::getData).

        Raises:
            ExtrapolationError: the time is outside this frame's data (message without the chain part).
        """
        static = self._static.get(child)
        if static is not None:
            return static
        entries, stamps = self._dynamic[child], self._stamps[child]
        if time_ns == 0:
            return entries[-1]
        if len(stamps) == 1:
            if stamps[0] == time_ns:
                return entries[0]
            raise ExtrapolationError(
                f"Lookup would require extrapolation at time {time_ns / 1e9:.9f}, but only time "
                f"{stamps[0] / 1e9:.9f} is in the buffer"
            )
        if time_ns > stamps[-1]:
            raise ExtrapolationError(
                f"Lookup would require extrapolation into the future. Requested time {time_ns / 1e9:.9f} but the "
                f"latest data is at time {stamps[-1] / 1e9:.9f}"
            )
        if time_ns < stamps[0]:
            raise ExtrapolationError(
                f"Lookup would require extrapolation into the past. Requested time {time_ns / 1e9:.9f} but the "
                f"earliest data is at time {stamps[0] / 1e9:.9f}"
            )
        k = bisect.bisect_left(stamps, time_ns)
        if stamps[k] == time_ns:
            return entries[k]
        e0, e1 = entries[k - 1], entries[k]
        if e0.parent != e1.parent:
            return e0  # the parent changed between the samples: the older one holds until the change (tf2)
        fraction = (time_ns - e0.stamp_ns) / (e1.stamp_ns - e0.stamp_ns)
        q = se3.slerp(e0.rotation, e1.rotation, fraction)
        t = (1.0 - fraction) * e0.translation + fraction * e1.translation
        return _Entry(time_ns, e0.parent, q, t)

    def _walk_up(self, frame: str, time_ns: int) -> tuple[list[str], list[_Entry], Optional[str]]:
        """Frames [frame, parent, ...] and links (parent_T_child) walked with the parents valid at
        ``time_ns``; stops at the root, or where a link has no data at that time (its reason returned)."""
        frames, links = [frame], []
        while self._has_cache(frame):
            try:
                link = self._sample(frame, time_ns)
            except ExtrapolationError as exc:
                return frames, links, str(exc)
            links.append(link)
            frame = link.parent
            frames.append(frame)
            if len(links) > _MAX_GRAPH_DEPTH:
                raise ConnectivityError(f"the TF tree has a loop above frame {frames[0]!r}")
        return frames, links, None

    def _check_lookup_frame(self, argument: str, frame: str) -> None:
        where = f"passed to lookup_transform argument {argument}"
        if not frame:
            raise InvalidFrameError(f'Invalid argument "" {where} - in tf2 frame_ids cannot be empty')
        if frame.startswith("/"):
            raise InvalidFrameError(f'Invalid argument "{frame}" {where} - in tf2 frame_ids cannot start with a \'/\'')
        if frame not in self._frames:
            raise FrameNotFoundError(f'"{frame}" {where} does not exist.')

    def _connectivity_error(self, target: str, source: str) -> ConnectivityError:
        return ConnectivityError(
            f"Could not find a connection between '{target}' and '{source}' because they are not part of the "
            f"same tree. Tf has two or more unconnected trees."
        )

    def _latest_common_time_locked(self, target: str, source: str) -> int:
        """tf2's getLatestCommonTime: walk with each frame's newest parent; the oldest newest stamp of the
        dynamic links below the common ancestor (0 when they are all static)."""
        chains = []
        for frame in (source, target):
            frames, stamps = [frame], []
            while self._has_cache(frame):
                newest = self._sample(frame, 0)
                stamps.append(0 if frame in self._static else newest.stamp_ns)
                frame = newest.parent
                frames.append(frame)
                if len(stamps) > _MAX_GRAPH_DEPTH:
                    raise ConnectivityError(f"the TF tree has a loop above frame {frames[0]!r}")
            chains.append((frames, stamps))
        (s_frames, s_stamps), (t_frames, t_stamps) = chains
        in_target = set(t_frames)
        common = next((f for f in s_frames if f in in_target), None)
        if common is None:
            raise self._connectivity_error(target, source)
        below = s_stamps[: s_frames.index(common)] + t_stamps[: t_frames.index(common)]
        dynamic = [s for s in below if s]
        return min(dynamic) if dynamic else 0

    def _lookup_locked(self, target: str, source: str, time_ns: int) -> np.ndarray:
        self._check_lookup_frame("target_frame", target)
        self._check_lookup_frame("source_frame", source)
        if time_ns == 0:
            time_ns = self._latest_common_time_locked(target, source)
        s_frames, s_links, s_error = self._walk_up(source, time_ns)
        t_frames, t_links, t_error = self._walk_up(target, time_ns)
        in_target = set(t_frames)
        common = next((f for f in s_frames if f in in_target), None)
        if common is None:
            error = s_error or t_error
            if error:  # a link had no data at that time: tf2 reports the extrapolation, not the tree
                raise ExtrapolationError(
                    f"{error}, when looking up transform from frame [{source}] to frame [{target}]")
            raise self._connectivity_error(target, source)

        def to_ancestor(links: list[_Entry]) -> np.ndarray:
            T = np.eye(4)
            for link in links:  # child -> parent, composed on the left
                T = se3.make_transform(link.rotation, link.translation) @ T
            return T

        source_T = to_ancestor(s_links[: s_frames.index(common)])
        target_T = to_ancestor(t_links[: t_frames.index(common)])
        return se3.invert(target_T) @ source_T

    def lookup_transform(self, target: str, source: str, time_ns: int = 0, timeout_s: float = 0.0) -> np.ndarray:
        """4x4 float64 ``target_T_source`` at ``time_ns`` (0 = latest common time).

        Args:
            target, source: frame ids (no leading '/': refused as in tf2).
            time_ns: stamp in nanoseconds, 0 for the latest available.
            timeout_s: wall-clock seconds to wait for missing data (never from the executor thread).

        Raises:
            InvalidFrameError: an empty frame id or one starting with '/' (at once, no waiting).
            FrameNotFoundError, ConnectivityError, ExtrapolationError: the last failure after the timeout.
        """
        target, source = str(target), str(source)
        deadline = time.monotonic() + max(float(timeout_s), 0.0)
        with self._cond:
            while True:
                try:
                    if target == source and target:
                        return np.eye(4)
                    return self._lookup_locked(target, source, int(time_ns))
                except InvalidFrameError:
                    raise
                except TransformError as exc:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        if timeout_s > 0:
                            raise type(exc)(f"{exc} (after waiting {timeout_s:.3f} s)") from None
                        raise
                    self._cond.wait(remaining)

    def can_transform(self, target: str, source: str, time_ns: int = 0, timeout_s: float = 0.0) -> bool:
        """True if :meth:`lookup_transform` would succeed (waiting up to ``timeout_s``)."""
        try:
            self.lookup_transform(target, source, time_ns, timeout_s)
            return True
        except TransformError:
            return False

    def latest_common_time(self, target: str, source: str) -> int:
        """The stamp (ns) a lookup at time 0 uses: the oldest of the newest stamps of the dynamic links
        between the frames (0 when every link is static).

        Raises:
            InvalidFrameError, FrameNotFoundError, ConnectivityError.
        """
        target, source = str(target), str(source)
        with self._cond:
            self._check_lookup_frame("target_frame", target)
            self._check_lookup_frame("source_frame", source)
            if target == source:
                stamps = self._stamps.get(target)
                return stamps[-1] if stamps else 0
            return self._latest_common_time_locked(target, source)

    def get_parent(self, frame: str, time_ns: int = 0) -> Optional[str]:
        """The parent of ``frame`` at ``time_ns`` (0 = newest), or None for a root, an unknown frame or a
        time outside its data (tf2's ``_getParent``)."""
        with self._cond:
            if not self._has_cache(frame):
                return None
            try:
                return self._sample(frame, int(time_ns)).parent
            except ExtrapolationError:
                return None

    def latest_stamp(self, child: str) -> Optional[int]:
        """Newest stamp (ns) of a dynamic frame, 0 for a static one, None when unknown."""
        child = _strip(child)
        with self._cond:
            if child in self._static:
                return 0
            stamps = self._stamps.get(child)
            return stamps[-1] if stamps else None


class ThrottledReporter:
    """Passes (reason, text) problems to ``log`` at most once per ``period_s`` per reason, saying how
    many were suppressed since the last line. No rclpy: the listener gives it a node logger's method.

    Args:
        log: called with one line of text.
        period_s: seconds between two lines of the same reason.
        clock: monotonic seconds (tests pass a fake).
    """

    def __init__(self, log: Callable[[str], None], period_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.period_s = float(period_s)
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, reason: str, text: str) -> None:
        now = self._clock()
        with self._lock:
            last = self._last.get(reason)
            if last is not None and now - last < self.period_s:
                self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
                return
            self._last[reason] = now
            suppressed = self._suppressed.pop(reason, 0)
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        self.log(f"TF {reason}: {text}{more}")


# ---------------------------------------------------------------------------------------- rclpy side


def transform_to_msg(parent: str, child: str, stamp_ns: int, T: np.ndarray):
    """``geometry_msgs/TransformStamped`` for the 4x4 ``parent_T_child``."""
    from geometry_msgs.msg import TransformStamped

    from monother_ros.ros.convert import ns_to_stamp

    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"transform must be a finite 4x4 matrix, got shape {T.shape}")
    msg = TransformStamped()
    msg.header.stamp = ns_to_stamp(stamp_ns)
    msg.header.frame_id = parent
    msg.child_frame_id = child
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = (float(v) for v in T[:3, 3])
    q = se3.matrix_to_quaternion(T[:3, :3])
    r = msg.transform.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in q)
    return msg


class TransformListener:
    """Fills a :class:`TransformBuffer` from ``/tf`` and ``/tf_static`` (tf2's standard QoS).

    Callbacks only insert into the buffer (two lines, never blocking). A backward jump of the node's
    clock (``ros2 bag play --loop --clock`` with ``use_sim_time``) clears the dynamic transforms.
    Rejected transforms (stale, non-unit quaternion, NaN, ...) and stripped '/' frame ids are logged as
    warnings on the node's logger, at most one line per reason every ``warn_period_s``.

    Args:
        buffer: the buffer to fill.
        node: the rclpy node owning the subscriptions.
        qos, static_qos: override the profiles (defaults ``qos.TF`` / ``qos.TF_STATIC``).
        tf_topic, tf_static_topic: topic names.
        warn_period_s: throttle of the warnings, seconds per reason.
    """

    def __init__(
        self,
        buffer: TransformBuffer,
        node,
        *,
        qos=None,
        static_qos=None,
        tf_topic: str = DEFAULT_TF_TOPIC,
        tf_static_topic: str = DEFAULT_STATIC_TF_TOPIC,
        warn_period_s: float = 5.0,
    ) -> None:
        from tf2_msgs.msg import TFMessage

        from monother_ros.ros import qos as qos_profiles

        self.buffer = buffer
        self.node = node
        self.tf_sub = node.create_subscription(TFMessage, tf_topic, self._on_tf, qos or qos_profiles.TF)
        self.tf_static_sub = node.create_subscription(
            TFMessage, tf_static_topic, self._on_tf_static, static_qos or qos_profiles.TF_STATIC
        )
        self._jump_handle = on_backward_clock_jump(node, buffer.clear)
        self.reporter = ThrottledReporter(node.get_logger().warning, warn_period_s)
        buffer.add_problem_callback(self.reporter)

    def _on_tf(self, msg) -> None:
        for transform in msg.transforms:
            self.buffer.set_transform_message(transform, static=False)

    def _on_tf_static(self, msg) -> None:
        for transform in msg.transforms:
            self.buffer.set_transform_message(transform, static=True)

    def unregister(self) -> None:
        """Destroy the subscriptions (call before destroying the node)."""
        self.node.destroy_subscription(self.tf_sub)
        self.node.destroy_subscription(self.tf_static_sub)
        self.buffer.remove_problem_callback(self.reporter)
        self._jump_handle = None


def on_backward_clock_jump(node, callback) -> object:
    """Call ``callback()`` when the node's clock jumps back by more than 1 s or changes type (sim time
    on/off), as tf2_ros' Buffer does. Returns the handle: keep a reference, it unregisters when dropped.
    The callback runs in the thread that updates the clock (the executor's, for ``/clock``)."""
    from rclpy.clock import JumpThreshold
    from rclpy.duration import Duration

    threshold = JumpThreshold(min_forward=None, min_backward=Duration(seconds=-1), on_clock_change=True)

    def on_jump(jump) -> None:
        callback()

    return node.get_clock().create_jump_callback(threshold, post_callback=on_jump)


class StaticTransformBroadcaster:
    """Publishes static transforms on ``/tf_static`` latched (transient local), all in one message.

    Like tf2_ros' broadcaster, each call adds to or replaces (by child frame) the set sent, so a late
    subscriber receives every static transform.
    """

    def __init__(self, node, *, topic: str = DEFAULT_STATIC_TF_TOPIC) -> None:
        from tf2_msgs.msg import TFMessage

        from monother_ros.ros import qos as qos_profiles

        self._msg_type = TFMessage
        self._transforms: dict[str, object] = {}
        self.publisher = node.create_publisher(TFMessage, topic, qos_profiles.TF_STATIC_PUBLISHER)

    def send(self, transforms) -> None:
        """Publish ``TransformStamped`` messages (one or a list) together with those sent before."""
        if not isinstance(transforms, (list, tuple)):
            transforms = [transforms]
        for t in transforms:
            self._transforms[t.child_frame_id] = t
        self.publisher.publish(self._msg_type(transforms=list(self._transforms.values())))
