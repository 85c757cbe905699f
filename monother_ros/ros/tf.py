"""A TF buffer with tf2 semantics, and thin rclpy wrappers to fill it from ``/tf`` + ``/tf_static``.

tf2_ros is not available as a wheel (FACTS.md §1). :class:`TransformBuffer` is our own, needing no
node (tests never spin): static and dynamic transforms, validation, time interpolation (slerp / lerp)
inside the cache window, chain lookups through the tree and tf2's error behaviour:

* ``lookup_transform(target, source, time_ns)`` returns the 4x4 ``target_T_source`` (maps points in
  ``source`` to ``target``); ``time_ns == 0`` means the latest time at which the whole chain is known;
* a time outside a link's data raises :class:`ExtrapolationError` ("Lookup would require extrapolation
  into the future/past ..."); unknown frames :class:`FrameNotFoundError`; frames in separate trees
  :class:`ConnectivityError`; all derive from :class:`TransformError`;
* ``timeout_s > 0`` waits (on a condition variable, woken by every insertion) for the data to arrive.

Bad input is rejected and counted by reason in ``TransformBuffer.rejected`` (``nan``,
``non_unit_quaternion``, ``self_transform``, ``empty_frame_id``, ``old_data``); ``last_rejection``
holds the latest message. A dynamic transform older than its frame's newest data by more than the
cache length is taken as a backward clock jump (bag loop): dynamic data is cleared (``resets``).

Thread safety: every public method of :class:`TransformBuffer` may be called from any thread. A
blocking lookup must not be made from an executor callback of the same single-threaded executor that
feeds the buffer (nothing would fill it while waiting): call it from a worker thread, as the depth node
does, or with ``timeout_s = 0``.
"""
from __future__ import annotations

import bisect
import logging
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

from monother_ros.core import se3
from monother_ros.errors import MonotherError

__all__ = [
    "TransformError",
    "FrameNotFoundError",
    "ConnectivityError",
    "ExtrapolationError",
    "TransformBuffer",
    "TransformListener",
    "StaticTransformBroadcaster",
    "transform_to_msg",
    "on_backward_clock_jump",
    "DEFAULT_CACHE_TIME_NS",
    "DEFAULT_TF_TOPIC",
    "DEFAULT_STATIC_TF_TOPIC",
]

_logger = logging.getLogger(__name__)

DEFAULT_CACHE_TIME_NS = 10_000_000_000
DEFAULT_TF_TOPIC = "/tf"
DEFAULT_STATIC_TF_TOPIC = "/tf_static"
_MAX_GRAPH_DEPTH = 1000  # as tf2: a longer walk means a loop in the tree


class TransformError(MonotherError, LookupError):
    """A transform cannot be looked up (base of the specific errors below)."""


class FrameNotFoundError(TransformError):
    """A frame has never been seen."""


class ConnectivityError(TransformError):
    """The frames are in two unconnected trees (or the tree has a loop)."""


class ExtrapolationError(TransformError):
    """The requested time is outside the data held for a link of the chain."""


@dataclass(frozen=True)
class _Entry:
    stamp_ns: int
    parent: str
    rotation: np.ndarray     # (4,) unit quaternion x, y, z, w
    translation: np.ndarray  # (3,) metres


def _strip(frame_id: str) -> str:
    return frame_id[1:] if frame_id.startswith("/") else frame_id


class TransformBuffer:
    """Static and time-stamped transforms between frames, with tf2's lookup semantics.

    Args:
        cache_time_ns: how long dynamic transforms are kept, behind each frame's newest (tf2: 10 s).
        quaternion_tolerance: accepted | |q| - 1 |; larger is rejected (``non_unit_quaternion``).
    """

    def __init__(
        self,
        cache_time_ns: int = DEFAULT_CACHE_TIME_NS,
        *,
        quaternion_tolerance: float = se3.QUATERNION_UNIT_TOLERANCE,
    ) -> None:
        if cache_time_ns <= 0:
            raise ValueError(f"cache_time_ns must be > 0, got {cache_time_ns}")
        self.cache_time_ns = int(cache_time_ns)
        self.quaternion_tolerance = float(quaternion_tolerance)
        self._cond = threading.Condition(threading.RLock())
        self._static: dict[str, _Entry] = {}
        self._dynamic: dict[str, list[_Entry]] = {}
        self._stamps: dict[str, list[int]] = {}
        self._frames: set[str] = set()  # every frame seen since the last clear (kept incrementally)
        self.rejected: dict[str, int] = {}
        self.last_rejection: Optional[str] = None
        self.resets = 0
        self.accepted = 0

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
            parent, child: frame ids (a leading '/' is stripped).
            stamp_ns: header stamp in nanoseconds (ignored for static transforms).
            translation: (3,) metres. rotation: (4,) quaternion x, y, z, w (normalised if near unit).
            static: a static transform, valid at all times (``/tf_static``).

        Returns:
            True if stored, False if rejected (reason counted in ``rejected``, text in ``last_rejection``).
        """
        parent, child = _strip(str(parent)), _strip(str(child))
        t = np.asarray(translation, dtype=np.float64).reshape(-1)
        q = np.asarray(rotation, dtype=np.float64).reshape(-1)
        label = f"transform {parent!r} -> {child!r}"
        if not parent or not child:
            return self._reject("empty_frame_id", f"{label}: empty frame id")
        if parent == child:
            return self._reject("self_transform", f"{label}: a frame cannot be its own parent")
        if t.shape != (3,) or q.shape != (4,) or not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
            return self._reject("nan", f"{label}: translation/rotation not finite: t={t.tolist()} q={q.tolist()}")
        with np.errstate(over="ignore"):  # |q| of 1e300-sized input is inf: rejected below
            norm = float(np.linalg.norm(q))
        if abs(norm - 1.0) > self.quaternion_tolerance:
            return self._reject(
                "non_unit_quaternion", f"{label}: quaternion is not unit length (|q| = {norm:.6f}): {q.tolist()}"
            )
        entry = _Entry(int(stamp_ns), parent, q / norm, t.copy())
        with self._cond:
            if static:
                self._static[child] = entry
                self._dynamic.pop(child, None)
                self._stamps.pop(child, None)
            else:
                if not self._insert_dynamic(child, entry):
                    return False
            self._frames.update((parent, child))  # after insertion: a jump-triggered clear resets the set
            self.accepted += 1
            self._cond.notify_all()
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

    def _insert_dynamic(self, child: str, entry: _Entry) -> bool:
        entries = self._dynamic.setdefault(child, [])
        stamps = self._stamps.setdefault(child, [])
        if stamps and entry.stamp_ns < stamps[-1] - self.cache_time_ns:
            # Far older than this frame's newest data: a backward clock jump (bag loop), not late data.
            _logger.info("TF for %r jumped back %.3f s: clearing dynamic transforms", child, (stamps[-1] - entry.stamp_ns) / 1e9)
            self._clear_dynamic_locked()
            entries = self._dynamic.setdefault(child, [])
            stamps = self._stamps.setdefault(child, [])
        k = bisect.bisect_left(stamps, entry.stamp_ns)
        if k < len(stamps) and stamps[k] == entry.stamp_ns:
            entries[k] = entry  # same stamp again: the newer message wins
        else:
            entries.insert(k, entry)
            stamps.insert(k, entry.stamp_ns)
        self._static.pop(child, None)
        # Prune behind the newest stamp by the cache length (tf2 TimeCache::pruneList).
        cutoff = stamps[-1] - self.cache_time_ns
        drop = bisect.bisect_left(stamps, cutoff)
        if drop:
            del entries[:drop]
            del stamps[:drop]
        return True

    def _reject(self, reason: str, text: str) -> bool:
        with self._cond:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1
            self.last_rejection = text
        _logger.debug("rejected %s", text)
        return False

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

    def _parent_of(self, frame: str) -> Optional[str]:
        if frame in self._static:
            return self._static[frame].parent
        entries = self._dynamic.get(frame)
        if entries:
            return entries[-1].parent
        return None

    def _path_to_root(self, frame: str) -> list[str]:
        """[frame, parent, grandparent, ..., root]."""
        path = [frame]
        while True:
            parent = self._parent_of(path[-1])
            if parent is None:
                return path
            path.append(parent)
            if len(path) > _MAX_GRAPH_DEPTH:
                raise ConnectivityError(f"the TF tree has a loop above frame {frame!r}")

    def _link_at(self, child: str, time_ns: int, target: str, source: str) -> tuple[np.ndarray, np.ndarray]:
        """(rotation, translation) of parent_T_child at ``time_ns`` (0 = newest)."""
        static = self._static.get(child)
        if static is not None:
            return static.rotation, static.translation
        entries, stamps = self._dynamic[child], self._stamps[child]
        if time_ns == 0:
            return entries[-1].rotation, entries[-1].translation
        where = f"when looking up transform from frame [{source}] to frame [{target}]"
        if len(stamps) == 1:
            if stamps[0] == time_ns:
                return entries[0].rotation, entries[0].translation
            raise ExtrapolationError(
                f"Lookup would require extrapolation at time {time_ns / 1e9:.9f}, but only time "
                f"{stamps[0] / 1e9:.9f} is in the buffer, {where}"
            )
        if time_ns > stamps[-1]:
            raise ExtrapolationError(
                f"Lookup would require extrapolation into the future. Requested time {time_ns / 1e9:.9f} but the "
                f"latest data is at time {stamps[-1] / 1e9:.9f}, {where}"
            )
        if time_ns < stamps[0]:
            raise ExtrapolationError(
                f"Lookup would require extrapolation into the past. Requested time {time_ns / 1e9:.9f} but the "
                f"earliest data is at time {stamps[0] / 1e9:.9f}, {where}"
            )
        k = bisect.bisect_left(stamps, time_ns)
        if stamps[k] == time_ns:
            return entries[k].rotation, entries[k].translation
        e0, e1 = entries[k - 1], entries[k]
        if e0.parent != e1.parent:
            return e0.rotation, e0.translation  # parent changed between samples: no interpolation (tf2)
        fraction = (time_ns - e0.stamp_ns) / (e1.stamp_ns - e0.stamp_ns)
        q = se3.slerp(e0.rotation, e1.rotation, fraction)
        t = (1.0 - fraction) * e0.translation + fraction * e1.translation
        return q, t

    def _chain(self, target: str, source: str) -> tuple[list[str], list[str]]:
        """Frames from source and from target up to (excluding) their common ancestor."""
        for name, frame in (("target_frame", target), ("source_frame", source)):
            if not frame:
                raise FrameNotFoundError(f"{name} is empty")
        known = self._frames
        for name, frame in (("target_frame", target), ("source_frame", source)):
            if frame not in known:
                raise FrameNotFoundError(f'"{frame}" passed to lookup_transform argument {name} does not exist.')
        source_path = self._path_to_root(source)
        target_path = self._path_to_root(target)
        common = set(source_path) & set(target_path)
        if not common:
            raise ConnectivityError(
                f"Could not find a connection between '{target}' and '{source}' because they are not part of the "
                f"same tree. Tf has two or more unconnected trees."
            )
        ancestor = next(f for f in source_path if f in common)
        return source_path[: source_path.index(ancestor)], target_path[: target_path.index(ancestor)]

    def _latest_common_time(self, links: Iterable[str]) -> int:
        """Newest time at which every dynamic link has data (0 when all links are static)."""
        latest = 0
        for child in links:
            if child in self._static:
                continue
            newest = self._stamps[child][-1]
            latest = newest if latest == 0 else min(latest, newest)
        return latest

    def _lookup_locked(self, target: str, source: str, time_ns: int) -> np.ndarray:
        up_from_source, up_from_target = self._chain(target, source)
        if time_ns == 0:
            time_ns = self._latest_common_time(up_from_source + up_from_target)

        def to_ancestor(path: list[str]) -> np.ndarray:
            T = np.eye(4)
            for child in path:  # child -> parent, composed on the left
                q, t = self._link_at(child, time_ns, target, source)
                T = se3.make_transform(q, t) @ T
            return T

        return se3.invert(to_ancestor(up_from_target)) @ to_ancestor(up_from_source)

    def lookup_transform(self, target: str, source: str, time_ns: int = 0, timeout_s: float = 0.0) -> np.ndarray:
        """4x4 float64 ``target_T_source`` at ``time_ns`` (0 = latest common time).

        Args:
            target, source: frame ids.
            time_ns: stamp in nanoseconds, 0 for the latest available.
            timeout_s: wall-clock seconds to wait for missing data (never from the executor thread).

        Raises:
            FrameNotFoundError, ConnectivityError, ExtrapolationError: the last failure after the timeout.
        """
        target, source = _strip(str(target)), _strip(str(source))
        deadline = time.monotonic() + max(float(timeout_s), 0.0)
        with self._cond:
            while True:
                try:
                    if target == source and target:
                        return np.eye(4)
                    return self._lookup_locked(target, source, int(time_ns))
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

    def latest_stamp(self, child: str) -> Optional[int]:
        """Newest stamp (ns) of a dynamic frame, 0 for a static one, None when unknown."""
        child = _strip(child)
        with self._cond:
            if child in self._static:
                return 0
            stamps = self._stamps.get(child)
            return stamps[-1] if stamps else None


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

    Args:
        buffer: the buffer to fill.
        node: the rclpy node owning the subscriptions.
        qos, static_qos: override the profiles (defaults ``qos.TF`` / ``qos.TF_STATIC``).
        tf_topic, tf_static_topic: topic names.
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
