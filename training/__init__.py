"""Offline training of the MonoTher thermal student: supervised stage, then label-free distillation.

``training.config`` (frozen ``TrainConfig`` + YAML in ``config/train/``), ``training.data`` (one dataset
interface over rosbag2 bags and the MS2 folder layout), ``training.checkpointing`` (atomic, resumable
checkpoints), ``training.train`` (the torchrun-able entry point), ``training.commands`` (``monother train``
and ``monother export-model``).
"""
