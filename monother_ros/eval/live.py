"""Live evaluation (``monother eval --live``): score what the running node graph publishes for a bag.

For each model and bag, ``monother_ros.ros.bag_player.play_and_record`` starts the real ``thermal_depth``
node (from the params file, ``use_sim_time`` on), plays the bag's thermal topics into DDS with ``/clock``
at ``rate`` x real time and records every ``depth/image`` / ``depth/confidence`` with its latency. The
recording is then scored exactly like the offline mode (same frames, ground truth, metrics), with frames
the node did not answer counted as ``frames_dropped``; timing adds ``latency_ms`` per frame, the output
rate and the drop count (``metrics.json`` key ``live``).

This module imports no rclpy: the ROS side lives in ``monother_ros.ros.bag_player`` and is imported
inside :func:`evaluate_live`.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from monother_ros.errors import BagError, ConfigError, MonotherError
from monother_ros.eval.evaluate import (EvalFrame, EvalOptions, EvalRun, ModelSpec, Prediction, check_output_dir,
                                        evaluate_bag, finish_run)

__all__ = ["LiveOptions", "RecordedPredictor", "evaluate_live"]

LOG = logging.getLogger(__name__)


@dataclass
class LiveOptions:
    """Live-mode settings.

    Attributes:
        rate: playback speed factor (1 = real time).
        config: params file for the node graph (None: the shipped config/rig.yaml).
        ready_timeout_s: how long to wait for the node to start listening.
        drain_s: how long to wait for outputs after the last published frame.
        num_threads: engine CPU threads (0: the params file's).
    """

    rate: float = 1.0
    config: str | Path | None = None
    ready_timeout_s: float = 60.0
    drain_s: float = 2.0
    num_threads: int = 0


class RecordedPredictor:
    """Predictions from a live recording: the node's output with the frame's stamp, or None (dropped)."""

    def __init__(self, name: str, recording: Any, description: dict[str, Any]) -> None:
        self.name = name
        self.recording = recording
        self._description = description

    def predict(self, frame: EvalFrame) -> Prediction | None:
        out = self.recording.outputs.get(frame.stamp_ns)
        if out is None:
            return None
        depth, confidence, latency_ms = out
        return Prediction(depth, confidence, {"latency_ms": latency_ms})

    def describe(self) -> dict[str, Any]:
        return dict(self._description)

    def close(self) -> None:
        self.recording = None


def _latency_stats(recording: Any) -> dict[str, float] | None:
    values = [lat for _, _, lat in recording.outputs.values() if math.isfinite(lat)]
    if not values:
        return None
    a = np.asarray(values)
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "max": float(a.max()), "n": int(a.size)}


def evaluate_live(bags: Sequence[str | Path], models: Sequence[ModelSpec], options: EvalOptions, out_dir: str | Path,
                  live: LiveOptions | None = None) -> EvalRun:
    """Play each bag through the node graph once per model and score the recorded outputs.

    Raises:
        ConfigError: bad options; MonotherError: nothing could be scored (outputs written so far stay).
    """
    from monother_ros.eval import report

    live = live or LiveOptions()
    options.validate()
    if live.rate < 0 or not math.isfinite(live.rate):
        raise ConfigError(f"--rate must be >= 0 (0 = as fast as possible), got {live.rate}")
    if options.lidar_topic is None and options.gt_topic is None:
        raise ConfigError("live mode needs ground truth (--gt-topic or --lidar-topic)")
    out = check_output_dir(out_dir)
    run = EvalRun(mode="live", options=options)
    run.extra["live"] = {}
    t0 = time.perf_counter()
    try:
        from monother_ros.ros.bag_player import play_and_record
    except ImportError as exc:
        raise ConfigError(f"live mode needs rclpy and the ROS message packages: {exc}") from exc
    # RGB goes out too when the bag has it: the node only subscribes with teacher.enabled (a --config
    # with teacher / fusion on scores the fused output), and unsubscribed topics cost almost nothing.
    play_topics = (options.thermal_topic, options.info_topic, options.tf_topic, "/rgb/image_raw",
                   "/rgb/image_raw/compressed", "/rgb/camera_info")
    # The node's transport follows the bag's thermal type: CompressedImage is subscribed (thermal.transport
    # compressed) on <base>/compressed, image_transport's naming; RGB likewise when the bag has only compressed RGB.
    for spec in models:
        if spec.name in run.models:
            raise ConfigError(f"two models are named {spec.name!r}; use --model NAME=PATH")
        run.models[spec.name] = {"path": str(spec.path), "status": "ok", "backend": options.backend, "mode": "live"}
        live_stats = run.extra["live"].setdefault(spec.name, {"published": 0, "received": 0, "dropped": 0, "bags": {}})
        for bag in bags:
            bag = Path(bag)
            try:
                from monother_ros.eval.bag_reader import BagReader

                with BagReader(bag) as reader:  # check the topics first: a clear message, no node started
                    if reader.ros_version != 2:
                        # Its messages are ROS 1 serialised: they cannot go onto DDS as they are.
                        raise BagError(f"{bag} is a ROS 1 bag: --live replays rosbag2 bags only (score it offline, "
                                       "or convert it: `rosbags-convert --src BAG --dst FOLDER --dst-typestore ros2_humble`)")
                    reader.require_topics(options.thermal_topic, options.truth_topic)
                    present = [t for t in play_topics if t in reader.topics]
                    thermal_transport = _transport_of(reader.topics[options.thermal_topic].msgtype,
                                                      options.thermal_topic)
                rgb_transport = ("compressed" if "/rgb/image_raw/compressed" in present and "/rgb/image_raw" not in
                                 present else "raw")
                unused_rgb = "/rgb/image_raw" if rgb_transport == "compressed" else "/rgb/image_raw/compressed"
                present = [t for t in present if t != unused_rgb]
                recording = play_and_record(
                    bag, spec.path, backend=options.backend, device=options.device, precision=options.precision,
                    rate=live.rate, config=live.config,
                    thermal_topic=options.thermal_topic, topics=present, num_threads=live.num_threads,
                    ready_timeout_s=live.ready_timeout_s, drain_s=live.drain_s,
                    thermal_transport=thermal_transport, rgb_transport=rgb_transport)
            except MonotherError as exc:
                msg = f"live replay of {bag} with model {spec.name} failed: {exc}"
                LOG.error("%s", msg)
                run.errors.append(msg)
                if not isinstance(exc, BagError):  # the node (its model or backend) did not start
                    run.models[spec.name].update(status="error", error=msg)
                report.write_metrics(run, out)
                continue
            predictor = RecordedPredictor(spec.name, recording, run.models[spec.name])
            name = _bag_name(run, bag, spec.name)
            evaluate_bag(run, bag, [predictor], name=name)
            span = recording.output_wall_span_s
            rate_hz = (recording.received - 1) / span if span > 0 else None
            in_hz = recording.published / recording.play_wall_s if recording.play_wall_s > 0 else None
            live_stats["bags"][name] = {
                "published": recording.published, "received": recording.received,
                "dropped": recording.published - recording.received, "output_rate_hz": rate_hz,
                "input_rate_hz": in_hz, "play_wall_s": recording.play_wall_s, "bag_s": recording.bag_s,
                "first_output_s": recording.first_output_s, "latency_ms": _latency_stats(recording),
            }
            live_stats["published"] += recording.published
            live_stats["received"] += recording.received
            live_stats["dropped"] = live_stats["published"] - live_stats["received"]
            live_stats["output_rate_hz"] = rate_hz
            live_stats["input_rate_hz"] = in_hz
            live_stats["latency_ms"] = _latency_stats(recording)
            run.wall_s = time.perf_counter() - t0
            report.write_metrics(run, out)
    return finish_run(run, out, t0)


def _transport_of(msgtype: str, topic: str) -> str:
    """``compressed`` for a CompressedImage topic named ``<base>/compressed``, ``raw`` for an Image topic.

    Raises:
        ConfigError: a CompressedImage topic under another name (the node subscribes ``<base>/compressed``).
    """
    if msgtype.endswith("CompressedImage"):
        if not topic.endswith("/compressed"):
            raise ConfigError(f"{topic} holds CompressedImage messages but live mode plays them to a node that "
                              "subscribes <base>/compressed (image_transport naming): record the topic under that name")
        return "compressed"
    return "raw"


def _bag_name(run: EvalRun, bag: Path, model: str) -> str:
    """The bag's key: shared by every model (a second model scores into the same bag entry)."""
    base = bag.name
    for suffix in (".mcap", ".db3"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    return base
