"""PyTorch eager backend: the reference path, and the one whose weights can change at run time.

The network runs in eval mode under ``torch.inference_mode`` on the CPU or a CUDA device (fp16 via
autocast on CUDA when asked; weights stay fp32 so that adapted fp32 weights can be swapped in).
``swap_weights(state_dict)`` loads new weights between frames: the state dict is checked against the
model (keys and shapes) before anything is copied, then loaded under the engine lock, so a frame never
sees half-old, half-new weights and a bad state dict leaves the engine unchanged.
"""
from __future__ import annotations

import inspect
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from monother_ros.errors import CheckpointError, ConfigError
from monother_ros.runtime.engine import EngineBase, EngineInfo, Precision, thresholds_for

if TYPE_CHECKING:
    import torch

    from monother_ros.model.variants import ModelConfig

__all__ = ["TorchEngine"]

_logger = logging.getLogger(__name__)


class TorchEngine(EngineBase):
    """PyTorch engine around a depth branch.

    Args:
        model: ``DepthBranch`` (or any module with the same contract: ``model(x)`` -> object with
            ``.depth``/``.confidence`` or a ``(depth, confidence)`` tuple).
        config: its configuration (mean/std, depth range, patch size, confidence head).
        model_hash: digest of weights + config (``load_model`` sets ``model.model_sha256``).
        input_hw: network input (h, w), multiples of the patch size; default ``config.input_size``.
        precision: ``fp16`` uses autocast on CUDA; on the CPU the engine always runs fp32.
        device: ``cpu`` (default), ``auto``, ``cuda`` or ``cuda:N`` (``runtime.device.resolve_device``).
        num_threads: if given, ``torch.set_num_threads`` (process-wide in torch).
        min_depth_m, max_depth_m, min_confidence: masking thresholds.

    Raises:
        ConfigError: input size not a multiple of the patch size, unknown device.
        BackendUnavailableError: CUDA asked for but not available.
    """

    def __init__(self, model: "torch.nn.Module", config: "ModelConfig", *, model_hash: str,
                 input_hw: Sequence[int] | None = None, precision: Precision = "fp32",
                 device: str | None = None, num_threads: int | None = None,
                 min_depth_m: float | None = None, max_depth_m: float | None = None,
                 min_confidence: float = 0.0) -> None:
        import torch

        hw = tuple(int(v) for v in (input_hw if input_hw is not None else config.input_size))
        p = config.patch_size
        if len(hw) != 2 or min(hw) <= 0 or hw[0] % p or hw[1] % p:
            raise ConfigError(f"input size {hw} must be two positive multiples of the patch size {p}")
        from monother_ros.runtime.device import resolve_device

        # ConfigError for a malformed name, BackendUnavailableError for a CUDA device torch cannot see.
        dev = torch.device(resolve_device(device or "cpu"))
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        used_precision: Precision = "fp16" if (precision == "fp16" and dev.type == "cuda") else "fp32"
        info = EngineInfo(
            input_hw=(hw[0], hw[1]), precision=used_precision, backend="torch", model_hash=model_hash,
            model_name=config.name, has_confidence=bool(config.confidence_head), mean=tuple(config.mean),
            std=tuple(config.std), min_depth_m=float(config.min_depth_m), max_depth_m=float(config.max_depth_m),
        )
        super().__init__(info, thresholds_for(info, min_depth_m, max_depth_m, min_confidence))
        self._device = dev
        self._model = model.to(dev).eval()
        self._config = config
        self._takes_features = "features" in inspect.signature(model.forward).parameters
        # The engine's numpy input buffer seen as a tensor (shared memory, no copy on the CPU).
        self._input_t = torch.from_numpy(self._input)
        if dev.type == "cuda":
            self._input_dev = torch.empty(self._input.shape, dtype=torch.float32, device=dev)
            h, w = hw
            pin = dict(pin_memory=True)
            self._depth_host = torch.empty((1, 1, h, w), dtype=torch.float32, **pin)
            self._conf_host = torch.empty((1, 1, h, w), dtype=torch.float32, **pin) if info.has_confidence else None
        _logger.info("torch engine %s (%s, %dx%d, %s, %s, %d threads)", config.name, model_hash[:12], hw[0], hw[1],
                     dev, used_precision, torch.get_num_threads())

    @classmethod
    def from_model_dir(cls, model_dir: str | os.PathLike, **kwargs: Any) -> "TorchEngine":
        """Load a saved model folder (``model/checkpoints.py`` format; of a dual model, its thermal student).

        Raises:
            CheckpointError: the folder is missing, corrupt, or an ONNX file was given.
        """
        path = Path(model_dir)
        if path.suffix == ".onnx":
            raise CheckpointError(f"the torch backend needs a checkpoint folder, not an ONNX file ({path})")
        from monother_ros.runtime.export import load_student

        model, config, model_hash = load_student(path)
        return cls(model, config, model_hash=model_hash, **kwargs)

    @property
    def model(self) -> "torch.nn.Module":
        """The wrapped network (read it, e.g. to copy its weights; change weights via :meth:`swap_weights`)."""
        return self._model

    @property
    def device(self) -> "torch.device":
        return self._device

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        from monother_ros.runtime.export import _depth_and_confidence

        if x is not self._input:
            np.copyto(self._input, x)
        cuda = self._device.type == "cuda"
        with torch.inference_mode():
            if cuda:
                self._input_dev.copy_(self._input_t, non_blocking=True)
                inp = self._input_dev
            else:
                inp = self._input_t
            with torch.autocast("cuda", dtype=torch.float16, enabled=cuda and self.info.precision == "fp16"):
                depth, conf = _depth_and_confidence(self._call(inp))
            if cuda:
                self._depth_host.copy_(depth.float())
                if self._conf_host is not None and conf is not None:
                    self._conf_host.copy_(conf.float())
                depth_np = self._depth_host.numpy()
                conf_np = self._conf_host.numpy() if self._conf_host is not None else None
            else:
                depth_np = depth.float().numpy()
                conf_np = conf.float().numpy() if conf is not None else None
        if self.info.has_confidence and conf_np is None:
            raise RuntimeError("model config has a confidence head but the model returned no confidence")
        return depth_np, (conf_np if self.info.has_confidence else None)

    def _call(self, inp: "torch.Tensor") -> Any:
        if self._takes_features:
            return self._model(inp, features=False)  # DepthBranch: skip the similarity features
        return self._model(inp)

    def swap_weights(self, state_dict: Mapping[str, "torch.Tensor"], *, model_hash: str | None = None) -> EngineInfo:
        """Load new weights between frames.

        Args:
            state_dict: complete state dict for the model (same keys and shapes; any device/dtype
                castable to the parameters').
            model_hash: digest of the new weights; default computed from them.

        Returns:
            The new :class:`EngineInfo` (``model_hash`` updated).

        Raises:
            CheckpointError: missing/unexpected keys or mismatched shapes (nothing is loaded then).
        """
        current = self._model.state_dict()
        missing = sorted(set(current) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(current))
        wrong = sorted(k for k in current.keys() & state_dict.keys()
                       if tuple(current[k].shape) != tuple(state_dict[k].shape))
        if missing or unexpected or wrong:
            raise CheckpointError(
                f"swap_weights: state dict does not fit {self.info.model_name}: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}, wrong shapes {wrong[:5]}")
        new_hash = model_hash or _hash_tensors(state_dict, self._config)
        with self._lock:
            self._model.load_state_dict(state_dict, strict=True)
            self._set_info(_replace_hash(self.info, new_hash))
        _logger.info("torch engine: swapped weights (%s)", new_hash[:12])
        return self.info

    def close(self) -> None:
        with self._lock:
            if self._device.type == "cuda":
                import torch

                torch.cuda.empty_cache()


def _replace_hash(info: EngineInfo, model_hash: str) -> EngineInfo:
    from dataclasses import replace

    return replace(info, model_hash=model_hash)


def _hash_tensors(state_dict: Mapping[str, "torch.Tensor"], config: "ModelConfig") -> str:
    from monother_ros.runtime.export import hash_tensors

    return hash_tensors(state_dict, config)
