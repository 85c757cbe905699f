"""The RGB-teacher pair engine: thermal student + RGB teacher + confidence network + warp, per frame pair.

For a thermal frame with an RGB partner and the extrinsic ``T_rgb_thermal``, :meth:`PairEngine.infer_pair`

1. preprocesses the thermal image with the student engine's own ``core.preprocess`` pipeline and the RGB
   image with ``core.preprocess.RgbPreprocessor`` to the same network input size;
2. runs the student and the teacher (both with their similarity features), builds the 8-channel
   metadata (``distill.metadata``) and runs the confidence network on it, exactly as
   ``MonotherDual.forward(..., need_confidence=True)`` does;
3. warps the teacher depth and confidence into the thermal view at network resolution
   (``core.warp``), and resizes/masks everything back to the thermal camera with ``core.preprocess``.

The fusion of the two depth maps is plain math in ``core.fusion``; the caller decides what to publish.
Thermal-only frames go through :meth:`infer` (the student engine alone), so a :class:`PairEngine` is also
an ``Engine`` and can sit wherever one does (``runtime.engine_holder``).

Device and precision: the networks run on ``device`` (``cpu``, ``cuda``, ``cuda:N``); ``fp16`` uses
autocast on CUDA (CPU always fp32). The warp runs on the CPU at network resolution, on outputs already
copied back for the postprocessing.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

import numpy as np

from monother_ros.errors import ConfigError
from monother_ros.runtime.engine import DepthResult, EngineInfo, MaskThresholds, Precision

if TYPE_CHECKING:
    import torch

    from monother_ros.runtime.torch_engine import TorchEngine

__all__ = ["PairEngine", "PairResult"]

_logger = logging.getLogger(__name__)


@dataclass
class PairResult:
    """Outputs of one pair, at the thermal camera's resolution (all (H, W) float32).

    Attributes:
        student_depth: metres, NaN invalid (engine thresholds applied).
        student_confidence: [0, 1] (1 where valid when the student has no confidence head).
        teacher_depth: the teacher's depth warped into the thermal frame, metres, NaN where unseen.
        teacher_confidence: the teacher's confidence warped into the thermal frame, 0 where unseen.
        timings: milliseconds: ``student_ms`` (preprocessing), ``teacher_ms`` (networks), ``warp_ms``
            (warp + postprocessing), ``total_ms``.
    """

    student_depth: np.ndarray
    student_confidence: np.ndarray
    teacher_depth: np.ndarray
    teacher_confidence: np.ndarray
    timings: dict[str, float]


class PairEngine:
    """Student engine + frozen RGB teacher + confidence network; build it with :meth:`from_model_dir`.

    Args:
        student: the thermal student's :class:`~monother_ros.runtime.torch_engine.TorchEngine` (its
            preprocessing, thresholds and thermal-only inference are the pair engine's).
        teacher: the RGB ``DepthBranch`` (eval mode, on the student engine's device).
        confidence_net: the confidence U-Net (eval mode, same device).
        precision: ``fp16`` (autocast on CUDA) or ``fp32``.
        settings: how the student engine was made (``config``: its ``ModelConfig``, ``input_hw``,
            ``num_threads``), reused by :meth:`with_student`.
    """

    def __init__(self, student: "TorchEngine", teacher: "torch.nn.Module", confidence_net: "torch.nn.Module", *,
                 precision: Precision = "fp32", settings: Optional[dict[str, Any]] = None) -> None:
        self.student = student
        self.teacher = teacher
        self.confidence_net = confidence_net
        self.device = student.device
        self.precision: Precision = "fp16" if (precision == "fp16" and self.device.type == "cuda") else "fp32"
        self._settings = dict(settings or {})
        self._rgb_pre = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_model_dir(cls, model_dir: str | os.PathLike, *, input_hw: Optional[Sequence[int]] = None,
                       device: str = "cpu", precision: Precision = "fp32", num_threads: Optional[int] = None,
                       min_depth_m: Optional[float] = None, max_depth_m: Optional[float] = None,
                       min_confidence: float = 0.0) -> "PairEngine":
        """Load a dual model folder, or a student folder carrying its dual in ``<model_dir>/dual``.

        Args:
            model_dir: a saved dual model folder (``kind monother_dual``), or a student folder with the
                dual in ``dual/`` (the shipped ``engines/default``: that student, the dual's teacher).
            input_hw: network input (h, w), multiples of 14; default the model's.
            device: torch device (``cpu``, ``cuda``, ``cuda:N``).
            precision: ``fp16`` (autocast, CUDA only) or ``fp32``.
            num_threads: torch CPU threads (None = leave).
            min_depth_m, max_depth_m, min_confidence: masking thresholds of the student (None = model's).

        Raises:
            ConfigError: an ONNX file, or a folder without RGB teacher or confidence network.
            CheckpointError: the folder cannot be read.
            BackendUnavailableError: CUDA asked for but unavailable.
        """
        from monother_ros.model import import_monother  # noqa: F401 - registers the dual model builder
        from monother_ros.model.checkpoints import load_model, read_model_dir

        path = Path(model_dir)
        if path.suffix == ".onnx":
            raise ConfigError(f"the teacher path needs a dual model folder (student + RGB teacher + confidence "
                              f"network), not an ONNX file: {path}")
        _, _, meta = read_model_dir(path)
        kind = str(meta.get("kind"))
        if kind == "monother_dual":
            model, config = load_model(path, map_location="cpu")
        elif (path / "dual" / "config.json").is_file():
            # A student folder carrying its dual (as engines/default does): this student, that teacher.
            from monother_ros.model.dual_loading import load_dual

            model, config = load_dual(path, device="cpu")
        else:
            raise ConfigError(f"the teacher path needs a dual model (student + RGB teacher + confidence network), "
                              f"but {path} holds a '{kind}' model without a teacher (and no {path}/dual)")
        if getattr(model, "confidence_net", None) is None:
            raise ConfigError(f"the teacher path: the dual model in {path} has no confidence network")
        from monother_ros.runtime.torch_engine import TorchEngine

        model.eval()
        student = TorchEngine(model.student, config, model_hash=str(meta.get("model_sha256", "")),
                              input_hw=input_hw, precision=precision, device=device, num_threads=num_threads,
                              min_depth_m=min_depth_m, max_depth_m=max_depth_m, min_confidence=min_confidence)
        teacher = model.teacher.to(student.device).eval()
        confidence_net = model.confidence_net.to(student.device).eval()
        return cls(student, teacher, confidence_net, precision=precision,
                   settings={"config": config, "input_hw": student.info.input_hw, "num_threads": num_threads})

    def with_student(self, model_dir: str | os.PathLike) -> "PairEngine":
        """A new pair engine for another model folder, sharing this one's teacher and confidence network.

        A student folder (an adapted checkpoint) gets this engine's teacher; a dual folder brings its
        own. Device, precision, input size and current thresholds carry over. ``self`` is unchanged.

        Raises:
            ConfigError: the student's configuration differs from the running one (the teacher's
                metadata would not fit), or the folder is an ONNX file.
            CheckpointError: the folder cannot be read.
        """
        from monother_ros.model.checkpoints import read_model_dir
        from monother_ros.runtime.export import load_student
        from monother_ros.runtime.torch_engine import TorchEngine

        path = Path(model_dir)
        th = self.thresholds
        common = dict(input_hw=self._settings.get("input_hw"), precision=self.precision,
                      num_threads=self._settings.get("num_threads"), min_depth_m=th.min_depth_m,
                      max_depth_m=th.max_depth_m, min_confidence=th.min_confidence)
        if path.suffix == ".onnx":
            raise ConfigError(f"the teacher path swaps model folders, not ONNX files: {path}")
        _, _, meta = read_model_dir(path)
        if str(meta.get("kind")) == "monother_dual":
            return PairEngine.from_model_dir(path, device=str(self.device), **common)
        model, config, model_hash = load_student(path)
        running = self._settings["config"]
        if config.replace(name=running.name) != running:
            raise ConfigError(f"{path} holds a '{config.name}' student that differs from the running "
                              f"'{running.name}' (the teacher path needs the same student configuration)")
        student = TorchEngine(model, config, model_hash=model_hash, device=str(self.device), **common)
        return PairEngine(student, self.teacher, self.confidence_net, precision=self.precision,
                          settings={**self._settings, "config": config})

    # ------------------------------------------------------------------ the Engine interface (student alone)

    @property
    def info(self) -> EngineInfo:
        return self.student.info

    @property
    def thresholds(self) -> MaskThresholds:
        return self.student.thresholds

    def set_thresholds(self, thresholds: MaskThresholds) -> None:
        self.student.set_thresholds(thresholds)

    def infer(self, thermal: np.ndarray) -> DepthResult:
        """Thermal-only inference (no RGB partner): the student engine alone."""
        return self.student.infer(thermal)

    def preprocess(self, thermal: np.ndarray) -> np.ndarray:
        return self.student.preprocess(thermal)

    def infer_tensor(self, x: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        return self.student.infer_tensor(x)

    def close(self) -> None:
        """Release the student engine (the teacher may be shared with a newer pair engine: the garbage
        collector frees it with its last user)."""
        self.student.close()

    # ------------------------------------------------------------------ pairs

    def infer_pair(self, thermal: np.ndarray, rgb: np.ndarray, thermal_camera: Any, rgb_camera: Any,
                   T_rgb_thermal: np.ndarray) -> PairResult:
        """One paired frame.

        Args:
            thermal: (H, W) uint8/uint16 raw thermal image.
            rgb: (Hr, Wr, 3) uint8 in R, G, B order.
            thermal_camera, rgb_camera: ``core.camera.PinholeCamera`` of the two images.
            T_rgb_thermal: (4, 4) thermal optical frame -> RGB optical frame, metres.

        Returns:
            :class:`PairResult` at the thermal camera's resolution.

        Raises:
            ValueError: a malformed image.
        """
        import torch

        from monother_ros.core import preprocess as pp
        from monother_ros.core.warp import backward_warp_np, warp_depth_np
        from monother_ros.distill.metadata import MetadataBuilder
        from monother_ros.runtime.half import cast_floats

        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        t0 = time.perf_counter()
        info = self.student.info
        h, w = info.input_hw
        dev = self.device
        with self._lock:
            x_t = torch.from_numpy(self.student.preprocess(thermal)).to(dev)
            if self._rgb_pre is None or self._rgb_pre.in_hw != rgb.shape[:2]:
                teacher_config = self.teacher.config
                self._rgb_pre = pp.RgbPreprocessor(rgb.shape[:2], (h, w), mean=teacher_config.mean,
                                                   std=teacher_config.std)
            x_r = torch.from_numpy(self._rgb_pre(np.ascontiguousarray(rgb)).copy()).to(dev)
            # The metadata's RGB channels are the image in [0, 1] at the prediction grid.
            rgb_unit = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))[None].astype(np.float32) / 255.0)
            k_t = thermal_camera.resized(w, h, align_corners=True)
            k_r = rgb_camera.resized(w, h, align_corners=True)
            builder = MetadataBuilder(rgb_unit.to(dev), k_t.K, k_r.K, T_rgb_thermal, min_depth=info.min_depth_m,
                                      max_depth=info.max_depth_m)
            t1 = time.perf_counter()
            student_net = self.student.model
            fp16 = self.precision == "fp16"
            with torch.inference_mode():
                # As MonotherDual.forward(need_confidence=True): both branches with features, then the
                # confidence network on the metadata built from them. The networks run in fp16 when asked
                # (the student's weights are cast once, the teacher under autocast); the metadata (warps,
                # similarities, depth differences) is built in fp32 as in training.
                with torch.autocast("cuda", dtype=torch.float16, enabled=fp16):
                    s_out = student_net(x_t, features=True)
                    r_out = self.teacher(x_r, features=True)
                with torch.autocast("cuda", enabled=False):
                    metadata = builder(cast_floats(s_out, torch.float32), cast_floats(r_out, torch.float32))
                with torch.autocast("cuda", dtype=torch.float16, enabled=fp16):
                    c_r_t = self.confidence_net(metadata)
                d_s = s_out.depth[0, 0].float().cpu().numpy()
                c_s = s_out.confidence[0, 0].float().cpu().numpy() if s_out.confidence is not None else None
                d_r = r_out.depth[0, 0].float().cpu().numpy()
                c_r = c_r_t[0, 0].float().cpu().numpy()
            t2 = time.perf_counter()
        T_thermal_rgb = np.linalg.inv(np.asarray(T_rgb_thermal, np.float64))
        teacher_depth, _ = warp_depth_np(d_r, d_s, k_r.K, k_t.K, T_thermal_rgb)
        teacher_conf, seen = backward_warp_np(c_r, d_s, k_r.K, k_t.K, T_thermal_rgb)
        teacher_conf = np.where(seen, np.clip(teacher_conf, 0.0, 1.0), 0.0).astype(np.float32)
        out_hw = tuple(thermal.shape)
        th = self.student.thresholds
        s_depth, s_conf = pp.postprocess_depth(d_s, out_hw, min_depth=th.min_depth_m, max_depth=th.max_depth_m,
                                               confidence=c_s, min_confidence=th.min_confidence)
        if s_conf is None:
            s_conf = np.isfinite(s_depth).astype(np.float32)
        t_depth = pp.mask_depth(pp.resize_depth(np.nan_to_num(teacher_depth, nan=0.0), out_hw),
                                min_depth=th.min_depth_m, max_depth=th.max_depth_m)
        t_conf = pp.resize_depth(teacher_conf, out_hw)
        np.clip(t_conf, 0.0, 1.0, out=t_conf)
        t3 = time.perf_counter()
        timings = {"student_ms": (t1 - t0) * 1e3, "teacher_ms": (t2 - t1) * 1e3, "warp_ms": (t3 - t2) * 1e3,
                   "total_ms": (t3 - t0) * 1e3}
        return PairResult(s_depth, s_conf, t_depth, t_conf, timings)

    def warm_up(self) -> None:
        """Run one synthetic thermal frame and one synthetic pair (lazy initialisation off the stream)."""
        from monother_ros.core.camera import PinholeCamera

        h, w = self.info.input_hw
        ramp = (np.arange(h * w, dtype=np.uint32).reshape(h, w) * 7 % 65535).astype(np.uint16)
        self.infer(ramp)
        camera = PinholeCamera.from_hfov(w, h, 60.0)
        rgb = np.repeat((ramp >> 8).astype(np.uint8)[..., None], 3, axis=2)
        self.infer_pair(ramp, rgb, camera, camera, np.eye(4))

