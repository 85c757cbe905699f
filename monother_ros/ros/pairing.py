"""Time pairing of several message streams with message_filters' ApproximateTime policy semantics.

message_filters is not available as a wheel (checked on the wheel build), so this is our own implementation of the
policy users know from ``message_filters::sync_policies::ApproximateTime`` (C++), on plain
``(stamp_ns, payload)`` pairs with no rclpy dependency:

* one queue per stream; a set is emitted as soon as it is provably the best one: among all sets
  containing the *pivot* (the latest head when a candidate was formed), the one with the smallest
  time spread, with an age penalty (0.1) favouring older sets, as in the C++ policy;
* ``max_interval_ns`` (our ``slop``) rejects sets whose spread is larger;
* ``queue_size`` bounds messages held per stream; on overflow the oldest is dropped and counted, and a
  stream that dropped cannot be the pivot until a set forms without it as the latest head;
* optional per-stream inter-message lower bounds (minimum period) let sets be emitted earlier.

Each message is used in at most one set; messages skipped over are counted as ``discarded``.

Differences from the C++ policy, on purpose: a message older than its stream's newest one (out of
order) is dropped and counted instead of being queued, and one older by more than
``backward_jump_ns`` is taken for a backward clock jump (bag loop) and resets the synchroniser.
Callbacks run after the internal lock is released, so a callback may call :meth:`add`.

Also :func:`nearest_within`, the helper offline tools use to pick the nearest stamp, and
:class:`SynchronizedSubscriptions`, the thin rclpy wrapper feeding a synchroniser from N topics.
"""
from __future__ import annotations

import bisect
import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Optional, Sequence

__all__ = ["Stamped", "SyncCounters", "ApproximateTimeSynchronizer", "SynchronizedSubscriptions", "nearest_within"]

_logger = logging.getLogger(__name__)

_NO_LIMIT = 2**63 - 1


class Stamped(NamedTuple):
    """One message of a stream: its header stamp in nanoseconds and whatever payload the caller keeps."""

    stamp_ns: int
    payload: Any


@dataclass
class SyncCounters:
    """Per-stream message accounting (lists indexed by stream)."""

    received: list[int]
    overflow_dropped: list[int]   # dropped because the stream's queue was full
    discarded: list[int]          # skipped by the policy (no good partner)
    out_of_order: list[int]       # older than the stream's newest message, ignored
    emitted: int = 0              # sets emitted
    resets: int = 0               # backward time jumps / explicit resets

    @classmethod
    def zeros(cls, n: int) -> "SyncCounters":
        return cls([0] * n, [0] * n, [0] * n, [0] * n)

    @property
    def dropped(self) -> list[int]:
        """All messages per stream that will never be part of a set."""
        return [a + b + c for a, b, c in zip(self.overflow_dropped, self.discarded, self.out_of_order)]


@dataclass
class _Candidate:
    items: tuple[Stamped, ...]
    start_ns: int
    end_ns: int


class ApproximateTimeSynchronizer:
    """message_filters ApproximateTime policy over N streams of ``(stamp_ns, payload)``.

    Args:
        num_streams: number of streams (>= 2).
        queue_size: messages kept per stream (including those provisionally passed over); >= 1,
            2 or more recommended (as in message_filters).
        max_interval_ns: largest accepted spread of stamps within a set (``slop``); None = unlimited.
        age_penalty: > 0 favours emitting older sets sooner (message_filters default 0.1).
        inter_message_lower_bounds_ns: per-stream minimum period between messages, if known; lets the
            policy prove a set optimal without waiting for the next message.
        backward_jump_ns: a message older than its stream's newest by more than this resets everything.
        callback: called with a tuple of :class:`Stamped` (one per stream, in stream order) per set.

    Thread safety: all methods may be called from any thread (one internal lock).
    """

    def __init__(
        self,
        num_streams: int = 2,
        *,
        queue_size: int = 10,
        max_interval_ns: Optional[int] = None,
        age_penalty: float = 0.1,
        inter_message_lower_bounds_ns: Optional[Sequence[int]] = None,
        backward_jump_ns: int = 1_000_000_000,
        callback: Optional[Callable[[tuple[Stamped, ...]], None]] = None,
    ) -> None:
        if num_streams < 2:
            raise ValueError(f"num_streams must be >= 2, got {num_streams}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if max_interval_ns is not None and max_interval_ns < 0:
            raise ValueError(f"max_interval_ns must be >= 0, got {max_interval_ns}")
        if age_penalty < 0:
            raise ValueError(f"age_penalty must be >= 0, got {age_penalty}")
        bounds = list(inter_message_lower_bounds_ns or [0] * num_streams)
        if len(bounds) != num_streams or any(b < 0 for b in bounds):
            raise ValueError(f"inter_message_lower_bounds_ns must be {num_streams} values >= 0, got {bounds}")
        if backward_jump_ns < 0:
            raise ValueError(f"backward_jump_ns must be >= 0, got {backward_jump_ns}")
        self._n = num_streams
        self._queue_size = queue_size
        self._max_interval = _NO_LIMIT if max_interval_ns is None else int(max_interval_ns)
        self._age_penalty = float(age_penalty)
        self._lower_bounds = [int(b) for b in bounds]
        self._backward_jump = int(backward_jump_ns)
        self._callbacks: list[Callable[[tuple[Stamped, ...]], None]] = [callback] if callback else []
        self._lock = threading.Lock()
        self.counters = SyncCounters.zeros(num_streams)
        self._clear_state()

    # ------------------------------------------------------------------ public

    @property
    def num_streams(self) -> int:
        return self._n

    def register_callback(self, callback: Callable[[tuple[Stamped, ...]], None]) -> None:
        """Add a callback for emitted sets."""
        self._callbacks.append(callback)

    def add(self, stream: int, stamp_ns: int, payload: Any = None) -> list[tuple[Stamped, ...]]:
        """Feed one message; returns the sets emitted because of it (callbacks are called too)."""
        if not 0 <= stream < self._n:
            raise ValueError(f"stream {stream} out of range 0..{self._n - 1}")
        stamp_ns = int(stamp_ns)
        with self._lock:
            self.counters.received[stream] += 1
            newest = self._newest[stream]
            if newest is not None and stamp_ns < newest:
                if newest - stamp_ns > self._backward_jump:
                    _logger.info("stream %d jumped back %.3f s: resetting the synchroniser", stream, (newest - stamp_ns) / 1e9)
                    self._reset_locked()
                else:
                    self.counters.out_of_order[stream] += 1
                    return []
            self._newest[stream] = stamp_ns
            self._emitted = []
            self._add(stream, Stamped(stamp_ns, payload))
            emitted, self._emitted = self._emitted, []
        for items in emitted:
            for callback in self._callbacks:
                callback(items)
        return emitted

    def reset(self) -> None:
        """Forget every queued message and candidate (call on a backward clock jump); counters stay."""
        with self._lock:
            self._reset_locked()

    def queued(self, stream: int) -> int:
        """Messages of ``stream`` currently held (waiting or provisionally passed over)."""
        with self._lock:
            return len(self._deques[stream]) + len(self._past[stream])

    # ------------------------------------------------------------------ policy internals (lock held)

    def _clear_state(self) -> None:
        self._deques: list[deque[Stamped]] = [deque() for _ in range(self._n)]
        self._past: list[list[Stamped]] = [[] for _ in range(self._n)]
        self._has_dropped = [False] * self._n
        self._candidate: Optional[_Candidate] = None
        self._pivot: Optional[int] = None
        self._pivot_time = 0
        self._newest: list[Optional[int]] = [None] * self._n
        self._emitted: list[tuple[Stamped, ...]] = []

    def _reset_locked(self) -> None:
        for i in range(self._n):
            self.counters.discarded[i] += len(self._deques[i]) + len(self._past[i])
        self.counters.resets += 1
        self._clear_state()

    def _all_non_empty(self) -> bool:
        return all(self._deques)

    def _add(self, i: int, item: Stamped) -> None:
        q = self._deques[i]
        q.append(item)
        if len(q) == 1 and self._all_non_empty():
            self._process()
        # During _process() a queue may hold queue_size + 1 messages; trim afterwards, as the C++ policy.
        if len(q) + len(self._past[i]) > self._queue_size:
            self._recover_all()  # cancel any candidate search
            q.popleft()
            self.counters.overflow_dropped[i] += 1
            self._has_dropped[i] = True
            if self._pivot is not None:
                self._candidate = None
                self._pivot = None
                self._process()

    def _delete_front(self, i: int) -> None:
        self._deques[i].popleft()
        self.counters.discarded[i] += 1

    def _move_front_to_past(self, i: int) -> None:
        self._past[i].append(self._deques[i].popleft())

    def _make_candidate(self, start_ns: int, end_ns: int) -> None:
        self._candidate = _Candidate(tuple(q[0] for q in self._deques), start_ns, end_ns)
        for i, past in enumerate(self._past):
            self.counters.discarded[i] += len(past)  # a better candidate makes them useless
            past.clear()

    def _recover(self, i: int, count: Optional[int] = None) -> None:
        past, q = self._past[i], self._deques[i]
        count = len(past) if count is None else count
        for _ in range(count):
            q.appendleft(past.pop())

    def _recover_all(self, counts: Optional[Sequence[int]] = None) -> None:
        for i in range(self._n):
            self._recover(i, None if counts is None else counts[i])

    def _publish_candidate(self) -> None:
        assert self._candidate is not None
        self._emitted.append(self._candidate.items)
        self.counters.emitted += 1
        self._candidate = None
        self._pivot = None
        # Put passed-over messages back and remove the published ones (the fronts).
        for i in range(self._n):
            self._recover(i)
            self._deques[i].popleft()

    def _boundary(self, times: Sequence[int], end: bool) -> tuple[int, int]:
        """(index, time) of the latest (end) or earliest (start) time; ties as message_filters:
        the end takes the last index with the latest time, the start the first with the earliest."""
        index, time = 0, times[0]
        for i in range(1, len(times)):
            if (times[i] < time) != end:
                index, time = i, times[i]
        return index, time

    def _virtual_times(self) -> list[int]:
        """Head stamps, with empty queues replaced by the earliest time their next message can have."""
        times = []
        for i in range(self._n):
            q = self._deques[i]
            if q:
                times.append(q[0].stamp_ns)
            else:
                bound = self._past[i][-1].stamp_ns + self._lower_bounds[i]
                times.append(max(bound, self._pivot_time))
        return times

    def _worse_or_equal(self, end_ns: int, start_ns: int) -> bool:
        """Is an interval [start, end] no better than the current candidate (with the age penalty)?"""
        c = self._candidate
        return (end_ns - c.end_ns) * (1 + self._age_penalty) >= (start_ns - c.start_ns)

    def _process(self) -> None:
        while self._all_non_empty():
            heads = [q[0].stamp_ns for q in self._deques]
            end_index, end_time = self._boundary(heads, end=True)
            start_index, start_time = self._boundary(heads, end=False)
            for i in range(self._n):
                if i != end_index:
                    # No dropped message could have been better than the ones we hold.
                    self._has_dropped[i] = False
            if self._pivot is None:
                if end_time - start_time > self._max_interval:
                    self._delete_front(start_index)  # spread too large for any set
                    continue
                if self._has_dropped[end_index]:
                    self._delete_front(start_index)  # the would-be pivot lost messages: bad pivot
                    continue
                self._make_candidate(start_time, end_time)
                self._pivot, self._pivot_time = end_index, end_time
                self._move_front_to_past(start_index)
            else:
                if not self._worse_or_equal(end_time, start_time):
                    self._make_candidate(start_time, end_time)  # better: same pivot
                self._move_front_to_past(start_index)

            if start_index == self._pivot:
                self._publish_candidate()  # every set containing the pivot has been seen
            elif self._worse_or_equal(end_time, self._pivot_time):
                # Any later set contains [pivot_time, end_time], already too wide: candidate is optimal.
                self._publish_candidate()
            elif not self._all_non_empty():
                self._virtual_search()

    def _virtual_search(self) -> None:
        """Use the inter-message lower bounds to prove the candidate optimal before more data arrives."""
        moves = [0] * self._n
        while True:
            times = self._virtual_times()
            end_index, end_time = self._boundary(times, end=True)
            start_index, start_time = self._boundary(times, end=False)
            if self._worse_or_equal(end_time, self._pivot_time):
                self._publish_candidate()  # also undoes the virtual moves
                return
            if not self._worse_or_equal(end_time, start_time):
                self._recover_all(moves)  # an optimistic future set could be better: wait
                return
            self._move_front_to_past(start_index)
            moves[start_index] += 1


def nearest_within(stamps: Sequence[int], t: int, tolerance: int) -> Optional[int]:
    """Index of the stamp nearest to ``t`` if within ``tolerance`` (inclusive), else None.

    Args:
        stamps: ascending stamps (ns or any integer/float unit); ties pick the earlier index.
        t: the query time, same unit.
        tolerance: largest accepted |stamp - t| (>= 0).
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    n = len(stamps)
    if n == 0:
        return None
    k = bisect.bisect_left(stamps, t)
    best: Optional[int] = None
    for j in (k - 1, k):
        if 0 <= j < n and (best is None or abs(stamps[j] - t) < abs(stamps[best] - t)):
            best = j
    if best is not None and abs(stamps[best] - t) <= tolerance:
        return best
    return None


class SynchronizedSubscriptions:
    """Subscribe to N stamped topics and feed an :class:`ApproximateTimeSynchronizer` (rclpy side).

    Each message goes in with its ``header.stamp`` as ``Stamped(stamp_ns, msg)``; the synchroniser's
    callbacks run in the executor thread that delivered the completing message, so keep them short.
    A backward jump of the node's clock (bag loop with ``use_sim_time``) resets the synchroniser.

    Args:
        node: the rclpy node.
        topics: (message type, topic, QoS profile) per stream, in the synchroniser's stream order.
        synchronizer: the policy instance (its ``num_streams`` must equal ``len(topics)``).
        reset_on_clock_jump: register the reset on backward clock jumps.
    """

    def __init__(self, node, topics: Sequence[tuple[Any, str, Any]], synchronizer: ApproximateTimeSynchronizer,
                 *, reset_on_clock_jump: bool = True) -> None:
        from monother_ros.ros.tf import on_backward_clock_jump

        if len(topics) != synchronizer.num_streams:
            raise ValueError(f"{len(topics)} topics for a synchroniser of {synchronizer.num_streams} streams")
        self.node = node
        self.synchronizer = synchronizer
        self.subscriptions = [
            node.create_subscription(msg_type, topic, self._make_callback(i), qos)
            for i, (msg_type, topic, qos) in enumerate(topics)
        ]
        self._jump_handle = on_backward_clock_jump(node, synchronizer.reset) if reset_on_clock_jump else None

    def _make_callback(self, stream: int) -> Callable[[Any], None]:
        def on_message(msg: Any) -> None:
            stamp = msg.header.stamp
            self.synchronizer.add(stream, int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec), msg)

        return on_message

    def destroy(self) -> None:
        """Destroy the subscriptions (before destroying the node)."""
        for subscription in self.subscriptions:
            self.node.destroy_subscription(subscription)
        self.subscriptions = []
        self._jump_handle = None
