"""Online label-free adaptation of the thermal student (no ROS; the node is ``ros/adaptation_node.py``).

Public API::

    from monother_ros.adapt import LearnerConfig, OnlineLearner, PairSample, load_dual

    dual, cfg = load_dual("engines/default_dual")               # student + RGB teacher + confidence net
    learner = OnlineLearner(dual, LearnerConfig(checkpoint_dir="runs/adapt"), on_update=swap)
    learner.start()                                              # background training thread
    learner.offer(PairSample(thermal, rgb, K_t, K_r, T_rgb_thermal, stamp_ns=...))  # keyframe rule
    learner.pause(); learner.resume(); learner.reset(); learner.save(); learner.status()

Modules: ``buffer`` (pair samples, replay buffer, held-out slice, keyframe rule), ``learner`` (training
rounds through ``distill.step.training_step``, held-out guards, resume), ``checkpoint_store`` (crash-safe
checkpoint folders).
"""
from monother_ros.adapt.buffer import HeldOutSlice, KeyframeConfig, KeyframeSelector, PairSample, ReplayBuffer, collate_samples
from monother_ros.adapt.checkpoint_store import CheckpointStore
from monother_ros.adapt.learner import (
    LearnerConfig, ModelUpdate, OnlineLearner, RoundResult, consistency_score, evaluate_student, load_dual,
)

__all__ = [
    "CheckpointStore", "HeldOutSlice", "KeyframeConfig", "KeyframeSelector", "LearnerConfig", "ModelUpdate",
    "OnlineLearner", "PairSample", "ReplayBuffer", "RoundResult", "collate_samples", "consistency_score",
    "evaluate_student", "load_dual",
]
