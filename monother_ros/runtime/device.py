"""Device names for every engine: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, checked in one place.

The depth node's ``device`` parameter, ``monother rig --device``, ``monother eval --device``,
``make_backend(device=...)`` and the teacher path all go through :func:`check_device` (syntax only, no
torch import: usable in parameter validators and argument parsing) and :func:`resolve_device` (turns
``auto`` into ``cuda:0`` when torch sees a CUDA GPU, else ``cpu``; refuses a CUDA device that does not
exist here).
"""
from __future__ import annotations

import logging
import re
from typing import Optional

from monother_ros.errors import BackendUnavailableError, ConfigError

__all__ = ["DEVICE_HELP", "check_device", "cuda_device_count", "device_validator", "resolve_device"]

_logger = logging.getLogger(__name__)

DEVICE_HELP = "auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda or cuda:N"
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device(text: str) -> str:
    """Normalise and validate a device name without touching torch.

    Args:
        text: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (case and surrounding blanks ignored).

    Returns:
        The normalised name (``cuda`` stays ``cuda``: the current CUDA device).

    Raises:
        ConfigError: anything else (``gpu``, ``cuda:-1``, ``cuda:x``, ``mps``...).
    """
    value = str(text).strip().lower()
    if not _DEVICE.match(value):
        raise ConfigError(f"device must be {DEVICE_HELP}; got {text!r}")
    return value


def device_validator(value: str) -> Optional[str]:
    """``ParamSpec`` validator form of :func:`check_device` (an error text or None)."""
    try:
        check_device(value)
    except ConfigError as exc:
        return str(exc)
    return None


def cuda_device_count() -> int:
    """CUDA devices torch can use here (0 without torch, without a CUDA build, or without a GPU)."""
    try:
        import torch
    except Exception:  # noqa: BLE001 - no torch at all, or a broken install: no CUDA either way
        return 0
    try:
        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a driver/runtime mismatch raises from the CUDA probe
        return 0


def resolve_device(text: str) -> str:
    """The concrete device for a device name.

    Args:
        text: as :func:`check_device`.

    Returns:
        ``cpu`` or ``cuda:N`` (``auto`` -> ``cuda:0`` when a CUDA GPU is visible to torch, else ``cpu``;
        ``cuda`` -> ``cuda:0``).

    Raises:
        ConfigError: malformed name.
        BackendUnavailableError: a CUDA device asked for explicitly that torch cannot see (no CUDA
            build of torch, no GPU, or index out of range); the message says what to install.
    """
    value = check_device(text)
    if value == "cpu":
        return "cpu"
    count = cuda_device_count()
    if value == "auto":
        return "cuda:0" if count else "cpu"
    index = int(value.split(":")[1]) if ":" in value else 0
    if count == 0:
        raise BackendUnavailableError(
            f"device {value} asked for, but torch sees no CUDA GPU: install a CUDA-enabled torch (on a Jetson, "
            f"NVIDIA's JetPack torch wheel) and check the driver, or use device cpu / auto")
    if index >= count:
        raise BackendUnavailableError(f"device {value} asked for, but torch sees only {count} CUDA device(s) "
                                      f"(cuda:0..cuda:{count - 1})")
    return f"cuda:{index}"
