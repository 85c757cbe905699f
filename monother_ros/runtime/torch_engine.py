"""PyTorch backend (CPU or CUDA): the reference path, and the one whose weights can change at run time.

On the CPU the network runs fp32 in eval mode under ``torch.inference_mode`` and the numpy pre/post-
processing of ``EngineBase`` surrounds it. On a CUDA device the whole frame stays on the GPU:

* fp16 (the default precision there): the weights are cast once at load (``runtime.half``: matrix
  products and convolutions fp16; the ViT residual stream, LayerNorms, the depth logit and the small
  heads fp32), on a copy of the caller's module, never through per-frame autocast;
* the frame: the raw uint16/uint8 counts are copied once into a pinned buffer and from there to the
  device; percentile normalisation, resize, mean/std, the network, the resize back, masking and, when
  a camera is set (:meth:`TorchEngine.set_cloud_camera`), the organised point cloud run there
  (``core.frame_torch``, equal to the numpy path within 1e-4 relative); one device-to-host copy brings
  depth, confidence and points back into a fresh pinned block (the caller owns the arrays);
* CUDA graphs (``cuda_graphs=True``, the default on CUDA): after ``GRAPH_WARMUP_FRAMES`` eager frames of
  one camera size the frame is captured and then replayed (one launch instead of hundreds). A new
  camera size, a new cloud camera or weights that moved re-capture; a failed capture logs one WARN and
  the engine keeps running eagerly.

``swap_weights(state_dict)`` loads new weights between frames: the state dict is checked against the
model (keys and shapes) before anything is copied, then copied in place under the engine lock (fp32
tensors cast into fp16 parameters on copy), so a frame never sees half-old, half-new weights, a bad
state dict leaves the engine unchanged, and a captured graph (which reads the parameters where they
are) stays valid; it is re-captured only if a parameter's storage moved.
"""
from __future__ import annotations

import copy
import inspect
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from monother_ros.errors import CheckpointError, ConfigError
from monother_ros.runtime.engine import DepthResult, EngineBase, EngineInfo, Precision, _check_thermal, thresholds_for

if TYPE_CHECKING:
    import torch

    from monother_ros.core.frame_torch import CloudProjectorTorch, DepthPostprocessorTorch, ThermalPreprocessorTorch
    from monother_ros.model.variants import ModelConfig

__all__ = ["TorchEngine", "GRAPH_WARMUP_FRAMES"]

_logger = logging.getLogger(__name__)

# Eager frames before a capture: the first frames do one-time work (cuDNN/cuBLAS handles and algorithm
# choice, lazy module state, allocator growth) that must not happen inside a capture.
GRAPH_WARMUP_FRAMES = 2


@dataclass
class _FrameState:
    """Device buffers and processors of one camera size and bit depth (rebuilt when either changes)."""

    cam_hw: tuple[int, int]
    np_dtype: np.dtype
    host_raw: "torch.Tensor"  # (H, W) staging buffer of the raw counts (pinned on CUDA)
    host_raw_np: np.ndarray  # numpy view of it with the frame's dtype
    dev_raw: "torch.Tensor"  # (H, W) counts on the device
    pre: "ThermalPreprocessorTorch"
    post: "DepthPostprocessorTorch"
    cloud: "CloudProjectorTorch | None"
    out: "torch.Tensor"  # flat float32: depth plane, [confidence plane], [x y z i interleaved]
    applied_thresholds: tuple[float, float, float] | None = None
    eager_frames: int = 0
    graph: Any = None  # torch.cuda.CUDAGraph once captured
    graph_pointers: tuple[int, ...] = ()


class TorchEngine(EngineBase):
    """PyTorch engine around a depth branch.

    Args:
        model: ``DepthBranch`` (or any module with the same contract: ``model(x)`` -> object with
            ``.depth``/``.confidence`` or a ``(depth, confidence)`` tuple). fp16 runs a converted copy
            (the caller's module keeps its fp32 weights); fp32 runs the module itself, moved to ``device``.
        config: its configuration (mean/std, depth range, patch size, confidence head).
        model_hash: digest of weights + config (``load_model`` sets ``model.model_sha256``).
        input_hw: network input (h, w), multiples of the patch size; default ``config.input_size``.
        precision: ``fp16`` casts the weights once on CUDA (see ``runtime.half``); on the CPU the engine
            always runs fp32.
        device: ``cpu`` (default), ``auto``, ``cuda`` or ``cuda:N`` (``runtime.device.resolve_device``).
        num_threads: if given, ``torch.set_num_threads`` (process-wide in torch).
        min_depth_m, max_depth_m, min_confidence: masking thresholds.
        cuda_graphs: capture and replay the frame as a CUDA graph (CUDA only; default True there).
        device_frames: run pre/post-processing with ``core.frame_torch`` on the engine's device
            (default: on CUDA; the CPU default is the numpy path, faster there; True on the CPU runs the
            torch code on CPU tensors, which is how the tests check it).
        fp32_residual_stream: with fp16, keep the ViT residual stream and LayerNorms in fp32 (default;
            ``runtime.half``).

    Raises:
        ConfigError: input size not a multiple of the patch size, unknown device.
        BackendUnavailableError: CUDA asked for but not available.
    """

    def __init__(self, model: "torch.nn.Module", config: "ModelConfig", *, model_hash: str,
                 input_hw: Sequence[int] | None = None, precision: Precision = "fp32",
                 device: str | None = None, num_threads: int | None = None,
                 min_depth_m: float | None = None, max_depth_m: float | None = None,
                 min_confidence: float = 0.0, cuda_graphs: bool = True,
                 device_frames: bool | None = None, fp32_residual_stream: bool = True) -> None:
        import torch

        hw = tuple(int(v) for v in (input_hw if input_hw is not None else config.input_size))
        p = config.patch_size
        if len(hw) != 2 or min(hw) <= 0 or hw[0] % p or hw[1] % p:
            raise ConfigError(f"input size {hw} must be two positive multiples of the patch size {p}")
        if precision not in ("fp16", "fp32"):
            raise ConfigError(f"precision must be fp16 or fp32, got {precision!r}")
        from monother_ros.runtime.device import resolve_device

        # ConfigError for a malformed name, BackendUnavailableError for a CUDA device torch cannot see.
        dev = torch.device(resolve_device(device or "cpu"))
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        cuda = dev.type == "cuda"
        used_precision: Precision = "fp16" if (precision == "fp16" and cuda) else "fp32"
        info = EngineInfo(
            input_hw=(hw[0], hw[1]), precision=used_precision, backend="torch", model_hash=model_hash,
            model_name=config.name, has_confidence=bool(config.confidence_head), mean=tuple(config.mean),
            std=tuple(config.std), min_depth_m=float(config.min_depth_m), max_depth_m=float(config.max_depth_m),
        )
        super().__init__(info, thresholds_for(info, min_depth_m, max_depth_m, min_confidence))
        self._device = dev
        self._config = config
        self._takes_features = "features" in inspect.signature(model.forward).parameters
        if used_precision == "fp16":
            from monother_ros.runtime.half import convert_to_fp16

            # A converted copy: the caller's module (e.g. the student of a dual model that another path
            # runs in fp32) keeps its fp32 weights.
            model = convert_to_fp16(copy.deepcopy(model).to(dev), fp32_residual_stream=fp32_residual_stream)
        else:
            model = model.to(dev)  # fp32: the caller's module itself (moved in place, weights shared)
        self._model = model.eval()
        self._dtype = torch.float16 if used_precision == "fp16" else torch.float32
        self._cuda_graphs = bool(cuda_graphs) and cuda
        self._device_frames = cuda if device_frames is None else bool(device_frames)
        self._graph_failed = False
        self._frame: _FrameState | None = None
        self._cloud_camera: Any = None
        self._cloud_options: Any = None
        self._stream = torch.cuda.Stream(dev) if cuda else None
        # The engine's numpy input buffer seen as a tensor (shared memory, no copy on the CPU).
        self._input_t = torch.from_numpy(self._input)
        self._input_dev = torch.empty(self._input.shape, dtype=torch.float32, device=dev) if cuda else self._input_t
        if cuda:
            # The weights were copied/converted on the default stream; the engine's stream does not
            # wait for that one by itself.
            torch.cuda.synchronize(dev)
        _logger.info("torch engine %s (%s, %dx%d, %s, %s, graphs %s, %d threads)", config.name, model_hash[:12],
                     hw[0], hw[1], dev, used_precision, "on" if self._cuda_graphs else "off", torch.get_num_threads())

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
        """The network the engine runs (with fp16 a converted copy; change weights via :meth:`swap_weights`)."""
        return self._model

    @property
    def device(self) -> "torch.device":
        return self._device

    @property
    def graph_captured(self) -> bool:
        """Whether frames of the current camera size replay a captured CUDA graph."""
        return self._frame is not None and self._frame.graph is not None

    @property
    def device_frames(self) -> bool:
        """Whether whole frames (pre/post-processing, and the cloud when set) run on the engine's device."""
        return self._device_frames

    def set_cloud_camera(self, camera: Any | None, options: Any | None = None) -> None:
        """Compute the organised point cloud with the frame (``DepthResult.points``), or stop (None).

        Args:
            camera: ``core.camera.PinholeCamera`` (``width``, ``height``, ``fx``, ``fy``, ``cx``, ``cy``)
                of the thermal frames; frames of another size get no points.
            options: ``core.cloud.CloudOptions`` (``decimation``, ``max_range_m``); default every pixel.

        Only the device path computes points (``device_frames``); elsewhere this is ignored.

        Raises:
            ValueError: ``options.rgb`` (the colour needs the RGB frame: ``core.cloud`` does that).
        """
        if options is not None and getattr(options, "rgb", False):
            raise ValueError("the engine's cloud has no rgb field; colour clouds with core.cloud.CloudProjector")
        with self._lock:
            self._cloud_camera = camera
            self._cloud_options = options
            self._frame = None  # rebuilt (and re-captured) with the cloud on the next frame

    # ------------------------------------------------------------------ inference
    def infer(self, thermal: np.ndarray) -> DepthResult:
        """Depth at the camera resolution (see :meth:`EngineBase.infer`); on the device path also the
        point cloud when a camera is set.

        Device-path timings: ``preprocess_ms`` stages the frame into the pinned buffer,
        ``inference_ms`` is the device work (copy in, pre-processing, network, post-processing, cloud,
        copy out), ``postprocess_ms`` wraps the results.
        """
        if not self._device_frames:
            return super().infer(thermal)
        thermal = _check_thermal(thermal)
        with self._lock:
            t0 = time.perf_counter()
            st = self._frame_state(thermal)
            np.copyto(st.host_raw_np, thermal)
            t1 = time.perf_counter()
            host = self._run_frame(st)
            t2 = time.perf_counter()
            result = self._unpack(st, host)
            t3 = time.perf_counter()
        timings = {"preprocess_ms": (t1 - t0) * 1e3, "inference_ms": (t2 - t1) * 1e3,
                   "postprocess_ms": (t3 - t2) * 1e3, "total_ms": (t3 - t0) * 1e3}
        return replace(result, timings=timings)

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Network only, numpy in and out (``infer_tensor``, and ``infer`` on the numpy path)."""
        import torch

        if x is not self._input:
            np.copyto(self._input, x)
        cuda = self._device.type == "cuda"
        with torch.inference_mode(), self._stream_context():
            if cuda:
                self._input_dev.copy_(self._input_t, non_blocking=True)
            depth, conf = self._forward(self._input_dev)
            depth = depth.float()
            conf = conf.float() if conf is not None else None
            if cuda:
                depth_host = torch.empty(depth.shape, dtype=torch.float32, pin_memory=True)
                depth_host.copy_(depth, non_blocking=True)
                conf_host = None
                if conf is not None:
                    conf_host = torch.empty(conf.shape, dtype=torch.float32, pin_memory=True)
                    conf_host.copy_(conf, non_blocking=True)
                self._stream.synchronize()
                depth, conf = depth_host, conf_host
            depth_np = depth.numpy()
            conf_np = conf.numpy() if conf is not None else None
        if self.info.has_confidence and conf_np is None:
            raise RuntimeError("model config has a confidence head but the model returned no confidence")
        return depth_np, (conf_np if self.info.has_confidence else None)

    def forward_device(self, x: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor | None"]:
        """The network on a device tensor, eagerly (benchmarks, tools): (1, 3, h, w) float32 normalised
        input on ``device`` -> (depth (1, 1, h, w), confidence or None) in the engine's precision.

        The caller runs it under ``torch.inference_mode()`` (and on the stream it synchronises).
        """
        return self._forward(x)

    def _forward(self, x: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor | None"]:
        from monother_ros.runtime.export import _depth_and_confidence

        inp = x.to(self._dtype)
        out = self._model(inp, features=False) if self._takes_features else self._model(inp)
        return _depth_and_confidence(out)

    # ------------------------------------------------------------------ device frames
    def _stream_context(self):
        """The engine's device and stream as the current ones (nothing on the CPU)."""
        import contextlib

        import torch

        stack = contextlib.ExitStack()
        if self._stream is not None:
            stack.enter_context(torch.cuda.device(self._device))
            stack.enter_context(torch.cuda.stream(self._stream))
        return stack

    def _frame_state(self, thermal: np.ndarray) -> _FrameState:
        """The buffers for this frame's size and dtype (built on the first frame of that kind)."""
        import torch

        from monother_ros.core.frame_torch import CloudProjectorTorch, DepthPostprocessorTorch, ThermalPreprocessorTorch

        st = self._frame
        if st is not None and st.cam_hw == thermal.shape and st.np_dtype == thermal.dtype:
            return st
        self._frame = None  # drop the old graph and buffers first (frees the graph's memory pool)
        cuda = self._device.type == "cuda"
        cam_hw = (int(thermal.shape[0]), int(thermal.shape[1]))
        bits = 16 if thermal.dtype == np.uint16 else 8
        raw_dtype = torch.int16 if bits == 16 else torch.uint8  # int16: uint16 bit patterns (see counts_to_index)
        host_raw = torch.empty(cam_hw, dtype=raw_dtype, pin_memory=cuda)
        host_raw_np = host_raw.numpy().view(thermal.dtype)
        dev = self._device
        with self._stream_context():
            dev_raw = host_raw if not cuda else torch.empty(cam_hw, dtype=raw_dtype, device=dev)
            info = self.info
            pre = ThermalPreprocessorTorch(cam_hw, info.input_hw, bits=bits, mean=info.mean, std=info.std, device=dev)
            post = DepthPostprocessorTorch(info.input_hw, cam_hw, device=dev)
            cloud = None
            camera = self._cloud_camera
            if camera is not None:
                if (camera.height, camera.width) == cam_hw:
                    cloud = CloudProjectorTorch.from_camera(camera, self._cloud_options, device=dev)
                else:
                    _logger.warning("torch engine: cloud camera is %dx%d but frames are %dx%d: no points",
                                    camera.width, camera.height, cam_hw[1], cam_hw[0])
            size = (1 + int(info.has_confidence)) * cam_hw[0] * cam_hw[1]
            if cloud is not None:
                size += 4 * cloud.height * cloud.width
            out = torch.empty(size, dtype=torch.float32, device=dev)
        if cuda:
            self._stream.synchronize()
        self._frame = _FrameState(cam_hw=cam_hw, np_dtype=thermal.dtype, host_raw=host_raw, host_raw_np=host_raw_np,
                                  dev_raw=dev_raw, pre=pre, post=post, cloud=cloud, out=out)
        return self._frame

    def _frame_on_device(self, st: _FrameState) -> "torch.Tensor":
        """raw counts (``st.dev_raw``) -> ``st.out``: the whole frame as device ops (captured as a graph)."""
        import torch

        h, w = st.cam_hw
        n = h * w
        x = st.pre(st.dev_raw, out=self._input_dev)
        depth, conf = self._forward(x)
        has_conf = self.info.has_confidence
        if has_conf and conf is None:
            raise RuntimeError("model config has a confidence head but the model returned no confidence")
        d_out = st.out[:n].view(h, w)
        c_out = st.out[n:2 * n].view(h, w) if has_conf else None
        d, c = st.post(depth, conf if has_conf else None, depth_out=d_out, confidence_out=c_out)
        if st.cloud is not None:
            start = n * (2 if has_conf else 1)
            ch, cw = st.cloud.height, st.cloud.width
            intensity = c if c is not None else torch.isfinite(d).to(torch.float32)
            st.cloud.pack(d, intensity, out=st.out[start:start + 4 * ch * cw].view(ch, cw, 4))
        return st.out

    def _run_frame(self, st: _FrameState) -> "torch.Tensor":
        """Copy the staged frame in, run it (graph or eager), copy the outputs out; returns the host tensor."""
        import torch

        th = self._thresholds
        wanted = (th.min_depth_m, th.max_depth_m, th.min_confidence)
        cuda = self._device.type == "cuda"
        with torch.inference_mode(), self._stream_context():
            if st.applied_thresholds != wanted:
                st.post.set_thresholds(*wanted)  # on the engine's stream: ordered before the next frame
                st.applied_thresholds = wanted
            if not cuda:
                return self._frame_on_device(st).clone()
            st.dev_raw.copy_(st.host_raw, non_blocking=True)
            if st.graph is None and self._cuda_graphs and not self._graph_failed and st.eager_frames >= GRAPH_WARMUP_FRAMES:
                self._capture(st)
            if st.graph is not None:
                st.graph.replay()
                out = st.out
            else:
                out = self._frame_on_device(st)
                st.eager_frames += 1
            host = torch.empty(out.shape, dtype=torch.float32, pin_memory=True)  # a fresh block: the caller's
            host.copy_(out, non_blocking=True)
            self._stream.synchronize()
        return host

    def _capture(self, st: _FrameState) -> None:
        """Capture ``_frame_on_device`` for ``st``; on failure log one WARN and stay eager."""
        import torch

        try:
            self._stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            # thread_local: legal CUDA calls of other threads (another engine, the learner) do not
            # invalidate this capture.
            with torch.cuda.graph(graph, stream=self._stream, capture_error_mode="thread_local"):
                self._frame_on_device(st)
            st.graph = graph
            st.graph_pointers = self._weight_pointers()
            _logger.info("torch engine: captured a CUDA graph for %dx%d frames", st.cam_hw[1], st.cam_hw[0])
        except Exception as exc:  # any capture error: the eager path computes the same frame
            self._graph_failed = True
            st.graph = None
            try:
                torch.cuda.synchronize(self._device)
                _reset_rng_capture_state(self._device)
            except Exception:  # pragma: no cover - the device is unusable; the eager frame will say so
                pass
            _logger.warning("torch engine: CUDA graph capture failed (%s: %s); running eagerly from now on",
                            exc.__class__.__name__, exc)

    def _weight_pointers(self) -> tuple[int, ...]:
        return tuple(t.data_ptr() for t in (*self._model.parameters(), *self._model.buffers()))

    def _unpack(self, st: _FrameState, host: "torch.Tensor") -> DepthResult:
        """Numpy views of the host block: depth, confidence, points (the block is the caller's)."""
        h, w = st.cam_hw
        n = h * w
        flat = host.numpy()
        depth = flat[:n].reshape(h, w)
        conf = flat[n:2 * n].reshape(h, w) if self.info.has_confidence else None
        points = None
        if st.cloud is not None:
            start = n * (2 if self.info.has_confidence else 1)
            points = flat[start:start + 4 * st.cloud.height * st.cloud.width].view(np.uint8)
        return DepthResult(depth=depth, confidence=conf, points=points)

    # ------------------------------------------------------------------ weights
    def swap_weights(self, state_dict: Mapping[str, "torch.Tensor"], *, model_hash: str | None = None) -> EngineInfo:
        """Load new weights between frames.

        Args:
            state_dict: complete state dict for the model (same keys and shapes; any device/dtype
                castable to the parameters': fp32 tensors are cast into fp16 weights on copy).
            model_hash: digest of the new weights; default computed from them.

        Returns:
            The new :class:`EngineInfo` (``model_hash`` updated).

        Raises:
            CheckpointError: missing/unexpected keys or mismatched shapes (nothing is loaded then).
        """
        import torch

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
            if self._stream is not None:
                torch.cuda.synchronize(self._device)  # the new tensors may still be written on another stream
            with torch.no_grad(), self._stream_context():
                # In-place copies (dtype cast on copy): the captured graph keeps reading the right memory.
                self._model.load_state_dict(state_dict, strict=True)
                for module in self._model.modules():  # derived tensors a captured graph reads
                    refresh = getattr(module, "refresh_pos_embed_cache", None)
                    if refresh is not None:
                        refresh()
            if self._stream is not None:
                self._stream.synchronize()
            st = self._frame
            if st is not None and st.graph is not None and st.graph_pointers != self._weight_pointers():
                st.graph = None  # a tensor was replaced rather than copied into: capture again
            self._set_info(_replace_hash(self.info, new_hash))
        _logger.info("torch engine: swapped weights (%s)", new_hash[:12])
        return self.info

    def close(self) -> None:
        with self._lock:
            self._frame = None
            if self._device.type == "cuda":
                import torch

                torch.cuda.empty_cache()


def _replace_hash(info: EngineInfo, model_hash: str) -> EngineInfo:
    return replace(info, model_hash=model_hash)


def _hash_tensors(state_dict: Mapping[str, "torch.Tensor"], config: "ModelConfig") -> str:
    from monother_ros.runtime.export import hash_tensors

    return hash_tensors(state_dict, config)


def _reset_rng_capture_state(device: "torch.device") -> None:
    """Undo what a failed capture leaves in torch's CUDA random generator.

    ``torch.cuda.graph`` puts the default CUDA generator in capture mode when a capture begins and takes
    it out when the capture ends; a capture that fails mid-way ends with an error before that, and every
    later random op on the device (a learner's dropout or weight init in the same process) then raises
    "Offset increment outside graph capture encountered unexpectedly". One empty, successful capture on
    a side stream runs the generator's begin/end pair again and leaves it in its normal state.
    """
    import torch

    stream = torch.cuda.Stream(device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.stream(stream):
        scratch = torch.zeros(1, device=device)
        stream.synchronize()
        with torch.cuda.graph(graph, stream=stream, capture_error_mode="thread_local"):
            scratch.add_(1.0)
    stream.synchronize()
    del graph
