"""Train the MonoTher dual model (thermal student, RGB teacher, confidence network).

One script for every scale:

    # one process (CPU or one GPU)
    python -m training.train config/train/stage1_day_urban.yaml train_data=[runs/bags/day.mcap] epochs=1
    # several processes / GPUs on one host (gloo on CPU, nccl on GPU)
    torchrun --standalone --nproc_per_node 2 -m training.train config/train/stage1_day_urban.yaml
    # several hosts: the usual torchrun --nnodes/--node_rank/--rdzv_endpoint arguments
    # the same through the package CLI
    monother train config/train/stage2_night_campus.yaml init_from=runs/stage1/checkpoints/latest --export

Stage ``supervised`` trains all three networks with ground truth; stage ``label_free`` freezes the teacher
and the confidence network and trains the student with the confidence-weighted consistency loss (see
``monother_ros.distill.step``). ``batch_size`` is the global batch: each of the ``W`` ranks takes
``batch_size / W`` samples of the same seeded permutation (``DistributedSampler`` + ``set_epoch``), so a
run with W ranks sees the same global batches as a single process. DDP averages the ranks' gradients,
which equals one process accumulating W micro-batches (``micro_batch_size=batch_size/W``) exactly; one
process taking the whole batch at once differs slightly, because SILog and the top-k masks pool the
pixels of the batch. Rank 0 logs (tqdm bar with loss and samples/s, ``metrics.jsonl`` per epoch) and
writes checkpoints; ``init_from=resume`` continues from the latest checkpoint in ``out_dir`` and
reproduces the uninterrupted run. An update whose gradient norm is not finite is skipped and counted
(``skipped_steps`` in the log).

Speed (``apply_speed_options``): ``deterministic`` auto | on | off (auto = on for the CPU, off on CUDA, where
deterministic kernels cost several times the throughput and cuDNN autotuning is then on); ``amp`` off |
bf16 | fp16 runs the networks under ``torch.autocast`` while warping, metadata and losses stay float32
(fp16 with a ``GradScaler``, its state kept in the checkpoint); ``num_workers`` and ``pin_memory`` for the
DataLoader. ``bench/gpu_train_section.py`` times them side by side.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from monother_ros.errors import CheckpointError, ConfigError
from monother_ros.fileio import atomic_write_text
from training.checkpointing import latest_checkpoint, load_checkpoint, read_checkpoint, save_checkpoint
from training.config import TrainConfig, load_config

LOG = logging.getLogger(__name__)

# Parameters whose names start with these train at lr * encoder_lr_factor (MonoTher: encoder and DPT at lr/50).
SLOW_PREFIXES = ("student.pretrained.", "student.depth_head.", "teacher.pretrained.", "teacher.depth_head.")


# ------------------------------------------------------------------------------------ distributed


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size, device; ``owns_group`` when ``setup_distributed``
    created the process group (and so tears it down)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str = "auto") -> DistContext:
    """Initialise the process group when launched by torchrun (``WORLD_SIZE`` > 1), else a single process.

    Backend: nccl when the device is a CUDA GPU, gloo on CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is available")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        owns = True
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev, owns_group=owns)


def teardown_distributed(ctx: DistContext) -> None:
    """Destroy the process group if ``setup_distributed`` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def _mean_across_ranks(values: dict[str, float], count: int, ctx: DistContext) -> dict[str, float]:
    """Sample-weighted mean of per-rank sums (``values`` are sums over ``count`` steps)."""
    keys = sorted(values)
    totals = torch.tensor([values[k] for k in keys] + [float(count)], dtype=torch.float64)
    if ctx.distributed:
        totals = totals.to(ctx.device)
        dist.all_reduce(totals)
        totals = totals.cpu()
    n = max(totals[-1].item(), 1.0)
    return {k: totals[i].item() / n for i, k in enumerate(keys)}


# ------------------------------------------------------------------------------------------ model


@dataclass(frozen=True)
class SpeedOptions:
    """What ``apply_speed_options`` switched on for a run.

    Attributes:
        deterministic: deterministic algorithms on (bit-identical repeats).
        autocast_dtype: dtype of the networks' forward under autocast, or None (fp32).
        pin_memory: DataLoader pins batches (CUDA only).
    """

    deterministic: bool
    autocast_dtype: torch.dtype | None
    pin_memory: bool


_AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def apply_speed_options(config: TrainConfig, device: torch.device) -> SpeedOptions:
    """Set torch's process-wide determinism switches for ``config`` on ``device``; the run's speed options.

    Deterministic: ``torch.use_deterministic_algorithms(True, warn_only=True)`` and no cuDNN autotuning.
    Otherwise nondeterministic kernels are allowed and, on CUDA, cuDNN picks the fastest convolution
    algorithms for the run's fixed shapes (``cudnn.benchmark``). The caller restores the switches.
    """
    deterministic = config.deterministic_on(device.type)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
    return SpeedOptions(deterministic=deterministic, autocast_dtype=_AMP_DTYPES[config.amp],
                        pin_memory=bool(config.pin_memory and device.type == "cuda"))


def optimizer_update(optimizer: torch.optim.Optimizer, scaler: "torch.amp.GradScaler", trainable: list[nn.Parameter],
                     grad_clip: float) -> bool:
    """After ``scaler.scale(loss).backward()``: clip the global gradient norm to ``grad_clip`` (0 = off) and
    step, unless the norm is not finite (a NaN/inf gradient would poison every weight through AdamW).

    Returns:
        True when the optimiser stepped. One host sync (the norm).
    """
    scaler.unscale_(optimizer)  # (fp16) true gradients before clipping; a no-op when the scaler is off
    norm = torch.nn.utils.clip_grad_norm_(trainable, grad_clip if grad_clip > 0 else float("inf"))
    stepped = bool(torch.isfinite(norm))
    if stepped:
        scaler.step(optimizer)
    scaler.update()  # (fp16) lower the loss scale after an overflow, raise it after a quiet stretch
    return stepped


def build_model(config: TrainConfig):
    """``MonotherDual`` for the config's presets, with the optional initial weights loaded."""
    from monother_ros.model.checkpoints import read_model_dir
    from monother_ros.model.dual import MonotherDual, teacher_config_for
    from monother_ros.model.variants import get_preset

    student_cfg = get_preset(config.model)
    teacher_cfg = get_preset(config.teacher_model).replace(modality="rgb") if config.teacher_model else teacher_config_for(student_cfg)
    if config.input_size:
        student_cfg = student_cfg.replace(input_size=tuple(config.input_size))
        teacher_cfg = teacher_cfg.replace(input_size=tuple(config.input_size))
    model = MonotherDual(student_cfg, teacher_cfg, confidence=True, freeze_bn=config.freeze_batchnorm,
                         confidence_width=config.confidence_width)
    for branch_name, path in (("student", config.student_init), ("teacher", config.teacher_init)):
        if path:
            tensors, _, meta = read_model_dir(path)
            if meta.get("kind") == MonotherDual.checkpoint_kind:  # a whole dual model: take this branch's weights
                prefix = branch_name + "."
                tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            result = getattr(model, branch_name).load_state_dict(tensors, strict=False)
            if result.unexpected_keys or result.missing_keys:
                raise CheckpointError(f"{branch_name}_init {path}: missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")
    if config.init_from not in ("scratch", "resume"):
        source = Path(config.init_from)
        ckpt = source if (source / "state.pt").is_file() else latest_checkpoint(source.parent if source.name == "checkpoints" else source)
        if ckpt is None:
            raise CheckpointError(f"init_from={config.init_from}: no training checkpoint there")
        tensors, _ = read_checkpoint(ckpt)
        model.load_state_dict(tensors, strict=True)
        LOG.info("initialised weights from %s", ckpt)
    return model, student_cfg, teacher_cfg


def param_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups of the trainable parameters: encoder + DPT at ``lr * encoder_lr_factor``, the
    confidence network at ``lr * confidence_lr_factor``, the rest (metric heads, student confidence
    head) at ``lr``; every RGB-teacher parameter additionally at ``teacher_lr_factor`` (a pretrained teacher
    fine-tuned gently). Empty groups are left out."""
    factors = {"encoder_dpt": config.encoder_lr_factor, "confidence_net": config.confidence_lr_factor, "heads": 1.0,
               "teacher_encoder_dpt": config.encoder_lr_factor * config.teacher_lr_factor,
               "teacher_heads": config.teacher_lr_factor}
    buckets: dict[str, list[nn.Parameter]] = {name: [] for name in factors}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("confidence_net."):
            bucket = "confidence_net"
        else:
            bucket = "encoder_dpt" if name.startswith(SLOW_PREFIXES) else "heads"
            if name.startswith("teacher.") and config.teacher_lr_factor != 1.0:
                bucket = "teacher_" + bucket
        buckets[bucket].append(p)
    groups = [{"params": ps, "lr": config.lr * factors[name], "name": name} for name, ps in buckets.items() if ps]
    if not groups:
        raise ConfigError(f"stage {config.stage}: no trainable parameters")
    return groups


def make_optimizer(model: nn.Module, config: TrainConfig, total_steps: int):
    groups = param_groups(model, config)
    params = [p for g in groups for p in g["params"]]
    # One fused kernel per step on CUDA instead of a dozen per parameter group (15 ms -> a few ms for the
    # ViT-L dual on an H200); deterministic like the default implementation.
    fused = bool(params) and all(p.is_cuda for p in params)
    optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay,
                                  fused=fused or None)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[g["lr"] for g in groups],
        total_steps=max(total_steps, 2),
        pct_start=config.pct_start,
        div_factor=config.div_factor,
        final_div_factor=config.final_div_factor,
        cycle_momentum=config.cycle_momentum,
        base_momentum=0.85,
        max_momentum=0.95,
    )
    return optimizer, scheduler


# ------------------------------------------------------------------------------------------- data


def _options(config: TrainConfig, student_cfg):
    from training.data import DataOptions

    size = tuple(config.input_size) if config.input_size else tuple(student_cfg.input_size)
    rgb_size = tuple(config.rgb_input_size) if config.rgb_input_size else size
    if rgb_size != size:
        raise ConfigError(f"the dual model needs the RGB input at the thermal size; rgb_input_size {rgb_size} != {size}")
    return DataOptions.from_config(config, size, rgb_size, student_cfg.max_depth_m)


def build_datasets(config: TrainConfig, student_cfg, ctx: DistContext):
    """(train, val or None). With a cache folder rank 0 decodes first and the others read its cache."""
    from training.data import build_dataset

    options = _options(config, student_cfg)
    kwargs = dict(cache_dir=config.cache_dir or None, seed=config.seed, brightness=config.brightness,
                  contrast=config.contrast, gamma=tuple(config.gamma))

    # Validation always needs ground truth, even when training reads none (label-free stage).
    val_options = dataclasses.replace(options, gt_source="auto") if options.gt_source == "none" else options

    def make():
        train = build_dataset(config.train_data, options, augment=config.augment, rgb_low_light=config.rgb_low_light, **kwargs)
        val = build_dataset(config.val_data, val_options, augment=False, **kwargs) if config.val_data else None
        return train, val

    if config.cache_dir and ctx.distributed:
        if ctx.is_main:
            result = make()
        _barrier(ctx)
        if not ctx.is_main:
            result = make()
        return result
    return make()


def epoch_batches(sampler, epoch: int, local_batch: int, steps: int) -> list[list[int]]:
    """This rank's index batches of ``epoch`` (the sampler's seeded permutation, cut into full batches)."""
    sampler.set_epoch(epoch)
    indices = list(iter(sampler))
    return [indices[k * local_batch:(k + 1) * local_batch] for k in range(steps)]


def _micro_batches(batch: dict[str, Any], size: int) -> list[dict[str, Any]]:
    """Split a batch into micro-batches of ``size`` samples (0 or >= batch: the batch itself)."""
    n = batch["thermal"].shape[0]
    if size <= 0 or size >= n:
        return [batch]
    out = []
    for start in range(0, n, size):
        out.append({k: (v[start:start + size] if isinstance(v, (torch.Tensor, list)) else v) for k, v in batch.items()})
    return out


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


# ------------------------------------------------------------------------------------- validation


@torch.no_grad()
def evaluate(student: nn.Module, dataset, device: torch.device, *, max_depth_m: float, batch_size: int = 4) -> dict[str, float]:
    """MonoTher metrics of the student on ``dataset`` (``core.metrics``, per frame then averaged, the
    reference protocol), plus ``frames`` scored. Frames without ground truth are skipped."""
    from monother_ros.core.metrics import MetricAccumulator
    from training.data import collate

    was_training = student.training
    student.eval()
    acc = MetricAccumulator("per_frame", min_depth=1e-3, max_depth=max_depth_m)
    for start in range(0, len(dataset), batch_size):
        samples = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        samples = [s for s in samples if s["gt_depth_thermal"] is not None]
        if not samples:
            continue
        batch = collate(samples)
        depth = student(batch["thermal"].to(device), features=False).depth[:, 0].float().cpu().numpy()
        for gt, pred in zip(batch["gt_depth_thermal"].numpy(), depth):
            acc.update(gt, pred)
    student.train(was_training)
    if acc.frames == 0:
        return {}
    return {**acc.result(), "frames": acc.frames}


# ------------------------------------------------------------------------------------------ train


@dataclass
class TrainResult:
    """What a run did (rank 0's view)."""

    out_dir: Path
    steps: int
    epochs_done: int
    last_checkpoint: Path | None
    history: list[dict[str, Any]]
    samples_per_s: float
    stopped_early: bool
    model: nn.Module | None = None  # this rank's trained model (unwrapped), for callers and tests


def _finite_or_none(values: dict[str, float]) -> dict[str, float | None]:
    """JSON has no inf/NaN: such values become null (and are logged)."""
    out: dict[str, float | None] = {}
    for k, v in values.items():
        if math.isfinite(v):
            out[k] = v
        else:
            LOG.warning("epoch mean of %s is %s", k, v)
            out[k] = None
    return out


def _truncate_metrics(path: Path, epochs_done: int) -> None:
    """Drop log lines of epochs after ``epochs_done`` (written before a crash, redone after resuming)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("epoch", 0) <= epochs_done]
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def run(config: TrainConfig, *, progress: bool = True) -> TrainResult:
    """Train according to ``config`` (distributed when launched by torchrun).

    Raises:
        ConfigError: invalid data / batch / stage set-up.
        BagError, CheckpointError: unreadable inputs.
    """
    from torch.utils.data import DataLoader, DistributedSampler

    from monother_ros.distill.step import prepare_stage, training_step
    from training.data import collate

    ctx = setup_distributed(config.device)
    deterministic_before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    benchmark_before = torch.backends.cudnn.benchmark
    try:
        if config.threads:
            torch.set_num_threads(config.threads)
        speed = apply_speed_options(config, ctx.device)
        out_dir = Path(config.out_dir)
        if config.batch_size % ctx.world_size:
            raise ConfigError(f"batch_size {config.batch_size} is not divisible by the {ctx.world_size} processes")
        local_batch = config.batch_size // ctx.world_size

        # Same initial weights on every rank (DDP also broadcasts rank 0's, this keeps single == multi).
        torch.manual_seed(config.seed)
        model, student_cfg, _ = build_model(config)
        model.to(ctx.device)
        train_ds, val_ds = build_datasets(config, student_cfg, ctx)
        sampler = DistributedSampler(train_ds, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=config.seed, drop_last=False)
        steps_per_epoch = len(sampler) // local_batch
        if steps_per_epoch == 0:
            raise ConfigError(f"{len(train_ds)} training pairs are fewer than one global batch of {config.batch_size}")
        total_steps = steps_per_epoch * config.epochs

        prepare_stage(model, config.stage)
        optimizer, scheduler = make_optimizer(model, config, total_steps)
        scaler = torch.amp.GradScaler(ctx.device.type, enabled=config.amp == "fp16")
        step, start_epoch, start_in_epoch = 0, 0, 0
        sums: dict[str, float] = {}
        count = 0
        history: list[dict[str, Any]] = []
        if config.init_from != "resume" and (latest_checkpoint(out_dir) is not None or (out_dir / "metrics.jsonl").is_file()):
            raise ConfigError(f"out_dir {out_dir} holds a previous run: continue it with init_from=resume or choose another out_dir")
        if config.init_from == "resume":
            ckpt = latest_checkpoint(out_dir)
            if ckpt is None:
                raise CheckpointError(f"init_from=resume: no checkpoint under {out_dir / 'checkpoints'}")
            state = load_checkpoint(ckpt, model, optimizer, scheduler)
            if scaler.is_enabled() and state["extra"].get("grad_scaler"):
                scaler.load_state_dict(state["extra"]["grad_scaler"])
            step, start_epoch, start_in_epoch = int(state["step"]), int(state["epoch"]), int(state["step_in_epoch"])
            sums = {k: float(v) for k, v in state["extra"].get("epoch_sums", {}).items()}
            count = int(state["extra"].get("epoch_count", 0))
            LOG.info("resumed from %s at epoch %d step %d", ckpt, start_epoch, step)
            saved_world = int(state["extra"].get("world_size", ctx.world_size))
            if saved_world != ctx.world_size and start_in_epoch:
                LOG.warning("checkpoint written with %d processes, resuming with %d: the rest of epoch %d sees "
                            "different batches than an uninterrupted run", saved_world, ctx.world_size, start_epoch + 1)
            if ctx.is_main:
                _truncate_metrics(out_dir / "metrics.jsonl", start_epoch)
            # Per-rank RNG streams continue from the checkpoint (rank 0's); offset the others as at start.
            if ctx.rank:
                torch.manual_seed(config.seed + 1000 * ctx.rank + step)
        else:
            torch.manual_seed(config.seed + 1000 * ctx.rank)
        np.random.seed((config.seed + ctx.rank) % 2**32)

        net: nn.Module = model
        if ctx.distributed:
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None,
                find_unused_parameters=True,  # ablations leave some heads unused (e.g. no consistency term)
            )
        trainable = [p for p in model.parameters() if p.requires_grad]
        weights = dataclasses.asdict(config.weights)
        if ctx.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "config.yaml").write_text(config.to_yaml())
            for report in train_ds.reports:
                LOG.info("train data: %s", report.summary())
        metrics_path = out_dir / "metrics.jsonl"
        last_ckpt: Path | None = None
        stopped_early = False
        run_start = time.perf_counter()
        samples_done = 0

        def checkpoint(epoch: int, in_epoch: int) -> Path | None:
            if not ctx.is_main:
                return None
            return save_checkpoint(
                out_dir, model=model, optimizer=optimizer, scheduler=scheduler, step=step, epoch=epoch,
                step_in_epoch=in_epoch, config=config.to_dict(),
                extra={"epoch_sums": dict(sums), "epoch_count": count, "world_size": ctx.world_size,
                       **({"grad_scaler": scaler.state_dict()} if scaler.is_enabled() else {})},
                keep=config.keep_checkpoints,
            )

        skipped = 0  # optimiser updates skipped for non-finite gradients (this epoch)
        epoch = start_epoch
        for epoch in range(start_epoch, config.epochs):
            train_ds.set_epoch(epoch)
            batches = epoch_batches(sampler, epoch, local_batch, steps_per_epoch)
            first = start_in_epoch if epoch == start_epoch else 0
            if first == 0:
                sums, count = {}, 0
            skipped = 0
            loader = DataLoader(train_ds, batch_sampler=batches[first:], collate_fn=collate, num_workers=config.num_workers,
                                pin_memory=speed.pin_memory)
            prepare_stage(model, config.stage)
            bar = None
            if ctx.is_main and progress:
                from tqdm import tqdm

                bar = tqdm(total=steps_per_epoch, initial=first, desc=f"epoch {epoch + 1}/{config.epochs}", unit="step", dynamic_ncols=True, file=sys.stderr)
            epoch_start = time.perf_counter()
            epoch_samples = 0
            in_epoch = first
            for batch in loader:
                batch = to_device(batch, ctx.device)
                optimizer.zero_grad(set_to_none=True)
                chunks = _micro_batches(batch, config.micro_batch_size)
                step_losses: dict[str, float] = {}
                for c, chunk in enumerate(chunks):
                    # Gradient accumulation: DDP all-reduces only on the last micro-batch.
                    sync = contextlib.nullcontext() if (c == len(chunks) - 1 or not ctx.distributed) else net.no_sync()
                    with sync:
                        result = training_step(net, chunk, stage=config.stage, distillation=config.distillation, weights=weights,
                                               student_nll_keep_fraction=config.student_nll_keep_fraction,
                                               autocast_dtype=speed.autocast_dtype)
                        scaler.scale(result.total / len(chunks)).backward()
                    for k, v in result.losses.items():
                        step_losses[k] = step_losses.get(k, 0.0) + float(v) / len(chunks)
                if not optimizer_update(optimizer, scaler, trainable, config.grad_clip):
                    skipped += 1
                    LOG.warning("step %d: non-finite gradient norm, update skipped", step + 1)
                scheduler.step()
                step += 1
                in_epoch += 1
                count += 1
                for k, v in step_losses.items():
                    sums[k] = sums.get(k, 0.0) + v
                epoch_samples += config.batch_size
                samples_done += config.batch_size
                if bar is not None:
                    rate = epoch_samples / max(time.perf_counter() - epoch_start, 1e-9)
                    bar.set_postfix(loss=f"{step_losses['total']:.4f}", samples_s=f"{rate:.2f}")
                    bar.update(1)
                if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0 and in_epoch < steps_per_epoch:
                    last_ckpt = checkpoint(epoch, in_epoch) or last_ckpt
                if config.stop_after_steps and step >= config.stop_after_steps:
                    stopped_early = True
                    break
            if bar is not None:
                bar.close()
            if stopped_early:
                last_ckpt = checkpoint(epoch, in_epoch) or last_ckpt
                _barrier(ctx)
                break
            train_means = _mean_across_ranks(sums, count, ctx)
            elapsed = time.perf_counter() - epoch_start
            record: dict[str, Any] = {
                "epoch": epoch + 1, "step": step, "train": _finite_or_none(train_means), "time_s": round(elapsed, 3),
                "skipped_steps": skipped,
                "samples_per_s": (epoch_samples * 1.0 / elapsed) if elapsed > 0 else None,
                "lr": [g["lr"] for g in optimizer.param_groups], "world_size": ctx.world_size,
            }
            if ctx.is_main and val_ds is not None:
                record["val"] = evaluate(model.student, val_ds, ctx.device, max_depth_m=student_cfg.max_depth_m)
            if ctx.is_main:
                if epoch == start_epoch:
                    record["data"] = [dataclasses.asdict(r) for r in train_ds.reports]
                _append_jsonl(metrics_path, record)
                LOG.info("epoch %d: %s", epoch + 1, json.dumps(record["train"], sort_keys=True))
            history.append(record)
            sums, count = {}, 0
            last_ckpt = checkpoint(epoch + 1, 0) or last_ckpt
            _barrier(ctx)
        total_time = time.perf_counter() - run_start
        return TrainResult(out_dir=out_dir, steps=step, epochs_done=len(history),
                           last_checkpoint=last_ckpt, history=history,
                           samples_per_s=samples_done / total_time if total_time > 0 else 0.0, stopped_early=stopped_early,
                           model=model)
    finally:
        torch.use_deterministic_algorithms(deterministic_before[0], warn_only=deterministic_before[1])
        torch.backends.cudnn.benchmark = benchmark_before
        teardown_distributed(ctx)


# ----------------------------------------------------------------------------------------- export


def load_trained(run_or_checkpoint: str | Path):
    """The dual model of a training run's latest checkpoint (or of one checkpoint directory; a run's
    ``checkpoints`` folder works too).

    Returns:
        ``(model, student ModelConfig, TrainConfig, checkpoint dir, checkpoint state)``.

    Raises:
        CheckpointError: no training checkpoint there.
    """
    path = Path(run_or_checkpoint)
    if (path / "state.pt").is_file():
        ckpt = path
    else:
        ckpt = latest_checkpoint(path.parent if path.name == "checkpoints" else path)
    if ckpt is None:
        raise CheckpointError(f"{path}: no training checkpoint")
    tensors, state = read_checkpoint(ckpt)
    config = TrainConfig.from_dict(state["config"]).replace(init_from="scratch", student_init="", teacher_init="")
    model, student_cfg, _ = build_model(config)
    model.load_state_dict(tensors, strict=True)
    return model, student_cfg, config, ckpt, state


def export_student(run_dir: str | Path, out_dir: str | Path | None = None, *, onnx: bool = True, tensorrt: str = "auto",
                   dual: str = "none") -> dict[str, Any]:
    """Save the student of the latest checkpoint of ``run_dir`` in our model format, export ONNX, and
    build a TensorRT engine where TensorRT and a GPU exist; optionally save the whole dual model too.

    Args:
        run_dir: a training run folder (with ``checkpoints/``) or one checkpoint directory.
        out_dir: where ``model/`` (safetensors + config.json) and ``model.onnx`` go; default ``run_dir/export``.
        onnx: export ONNX.
        tensorrt: ``auto`` (build when available), ``yes`` (fail when unavailable) or ``no``.
        dual: ``none``, or ``float32`` / ``float16``: also save student + RGB teacher + confidence network
            (kind ``monother_dual``) to ``<model dir>/dual`` in that dtype. Online adaptation and the node's
            teacher path load it next to the student (``load_dual`` looks for ``<student>/dual``); float16
            halves its size (loading casts back to the model's float32).

    Returns:
        Paths written and the ONNX metadata.
    """
    if dual not in ("none", "float32", "float16"):
        raise ConfigError(f"dual must be none, float32 or float16, got {dual!r}")
    from monother_ros.model.checkpoints import save_model

    run_dir = Path(run_dir)
    model, student_cfg, config, ckpt, state = load_trained(run_dir)
    out = Path(out_dir) if out_dir else (run_dir if ckpt != run_dir else ckpt.parent.parent) / "export"
    out.mkdir(parents=True, exist_ok=True)
    model_dir = save_model(model.student.eval(), student_cfg, out / "model", metadata={
        "source_checkpoint": str(ckpt), "step": int(state["step"]), "train_stage": config.stage,
        "distillation": config.distillation, "seed": config.seed,
    })
    written: dict[str, Any] = {"model_dir": str(model_dir), "checkpoint": str(ckpt)}
    if dual != "none":
        dual_model = copy.deepcopy(model).eval().to(torch.float16 if dual == "float16" else torch.float32)
        written["dual_dir"] = str(save_model(dual_model, student_cfg, Path(model_dir) / "dual", kind="monother_dual", metadata={
            "source_checkpoint": str(ckpt), "step": int(state["step"]), "dtype": dual,
            "confidence_width": config.confidence_width,
        }))
    if onnx:
        from monother_ros.runtime.export import export_model_dir

        info = export_model_dir(model_dir, out / "model.onnx")
        written["onnx"] = str(out / "model.onnx")
        written["onnx_info"] = dataclasses.asdict(info) if dataclasses.is_dataclass(info) else str(info)
        if tensorrt != "no":
            written["tensorrt"] = _build_tensorrt(out / "model.onnx", required=tensorrt == "yes")
    return written


def _build_tensorrt(onnx_path: Path, *, required: bool) -> str | None:
    """Build (and cache) the TensorRT engine of ``onnx_path`` through the runtime's backend factory."""
    from monother_ros.errors import BackendUnavailableError
    from monother_ros.runtime.engine import available_backends, make_backend

    reason = available_backends().get("tensorrt")
    if reason:  # available_backends maps unavailable backends to the reason
        if required:
            raise BackendUnavailableError(f"TensorRT engine requested but unavailable: {reason}")
        LOG.info("TensorRT not available (%s): engine not built", reason)
        return None
    engine = make_backend(onnx_path, "tensorrt")  # exports/builds into the engine cache (keyed, reused)
    info = engine.info
    return f"{info.backend} {info.precision} {info.input_hw[0]}x{info.input_hw[1]} model {info.model_hash[:12]}"


# ------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.train [CONFIG.yaml] [key=value ...] [--export]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="training.train", description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", help="YAML file under config/train/ (or any path)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. epochs=2 train_data=[a.mcap]")
    parser.add_argument("--export", action="store_true", help="after training, save the student, export ONNX (+TensorRT)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    # Only rank 0 logs progress; the other ranks report warnings and errors.
    level = logging.INFO if int(os.environ.get("RANK", "0")) == 0 else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    config_path = args.config
    overrides = list(args.overrides)
    if config_path and "=" in config_path and not config_path.endswith((".yaml", ".yml")):
        overrides.insert(0, config_path)
        config_path = None
    config = load_config(config_path, overrides)
    result = run(config, progress=not args.no_progress)
    if args.export and int(os.environ.get("RANK", "0")) == 0 and not result.stopped_early:
        written = export_student(result.out_dir)
        LOG.info("exported: %s", json.dumps({k: v for k, v in written.items() if k != "onnx_info"}))
    return 0


if __name__ == "__main__":
    from monother_ros.errors import MonotherError

    try:
        sys.exit(main())
    except MonotherError as exc:  # user errors: one line, exit 2 (as the monother CLI)
        print(f"training.train: error: {exc}", file=sys.stderr)
        sys.exit(2)
