"""Camera calibration files as ROS ``camera_calibration`` writes them (camera_calibration_parsers YAML).

The file (``ost.yaml``, or what a driver's ``camera_info_url`` points at) holds::

    image_width: 640
    image_height: 512
    camera_name: boson
    camera_matrix: {rows: 3, cols: 3, data: [fx, 0, cx, 0, fy, cy, 0, 0, 1]}
    distortion_model: plumb_bob
    distortion_coefficients: {rows: 1, cols: 5, data: [k1, k2, t1, t2, k3]}
    rectification_matrix: {rows: 3, cols: 3, data: [...]}
    projection_matrix: {rows: 3, cols: 4, data: [...]}

Read with ``yaml.safe_load`` (data only, no object construction) from a plain path or a ``file://`` URL;
every malformed case raises :class:`~monother_ros.errors.CalibrationError` naming the file and the key.
No ROS dependency: the ``ros`` layer turns a :class:`CameraCalibration` into a ``CameraInfo``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from monother_ros.errors import CalibrationError

__all__ = ["CameraCalibration", "calibration_path", "read_calibration", "parse_calibration"]

_MAX_FILE_BYTES = 1 << 20  # a calibration is < 2 KiB; refuse anything huge before parsing it


@dataclass(frozen=True)
class CameraCalibration:
    """One camera's calibration (row-major lists, as in ``sensor_msgs/CameraInfo``).

    Attributes:
        width, height: image size in pixels. camera_name: as written by the calibrator.
        K: 9 values. D: distortion coefficients. distortion_model: e.g. plumb_bob.
        R: 9 values (identity when absent). P: 12 values ([K | 0] when absent).
    """

    width: int
    height: int
    camera_name: str
    K: tuple[float, ...]
    D: tuple[float, ...]
    distortion_model: str
    R: tuple[float, ...]
    P: tuple[float, ...]


def calibration_path(url: str) -> Path:
    """The local file a ``camera_info_url`` names (``file:///abs/path`` or a plain path; ``~`` expanded).

    Raises:
        CalibrationError: another scheme (``package://``, ``http://``): resolve it to a file path first.
    """
    url = url.strip()
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        path = unquote(parsed.path) if parsed.scheme == "file" else url
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            path = f"/{parsed.netloc}{path}" if not path.startswith("/") else path
        return Path(path).expanduser()
    raise CalibrationError(f"camera_info_url {url!r}: only file:// URLs and paths are supported "
                           f"(not {parsed.scheme}://); give the file's path")


def read_calibration(url: str) -> CameraCalibration:
    """Read and check a calibration YAML file.

    Raises:
        CalibrationError: missing/unreadable/huge file, not YAML, a missing key, wrong sizes, non-finite values.
    """
    path = calibration_path(url)
    try:
        size = path.stat().st_size
        if size > _MAX_FILE_BYTES:
            raise CalibrationError(f"calibration file {path} is {size} bytes: not a camera calibration")
        text = path.read_text(encoding="utf-8")
    except CalibrationError:
        raise
    except FileNotFoundError:
        raise CalibrationError(f"calibration file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"cannot read calibration file {path}: {exc}") from None
    return parse_calibration(text, source=str(path))


def parse_calibration(text: str, *, source: str = "<text>") -> CameraCalibration:
    """Parse camera_calibration_parsers YAML text (see the module docstring).

    Raises:
        CalibrationError: as :func:`read_calibration`.
    """
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CalibrationError(f"calibration file {source} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise CalibrationError(f"calibration file {source} is not a YAML mapping")

    def integer(key: str) -> int:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise CalibrationError(f"calibration file {source}: {key} must be a positive integer, got {value!r}")
        return value

    def matrix(key: str, rows: int, cols: int, *, required: bool = True) -> tuple[float, ...] | None:
        value = data.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, dict) or not isinstance(value.get("data"), list):
            raise CalibrationError(f"calibration file {source}: {key} must be a mapping with rows, cols and data")
        numbers = _floats(value["data"], f"{source}: {key}")
        declared = (value.get("rows"), value.get("cols"))
        if rows and (declared != (rows, cols) or len(numbers) != rows * cols):
            raise CalibrationError(f"calibration file {source}: {key} must be {rows}x{cols} "
                                   f"({rows * cols} values), got rows={declared[0]} cols={declared[1]} "
                                   f"with {len(numbers)} values")
        return numbers

    width, height = integer("image_width"), integer("image_height")
    K = matrix("camera_matrix", 3, 3)
    D = matrix("distortion_coefficients", 0, 0, required=False) or ()
    R = matrix("rectification_matrix", 3, 3, required=False) or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    P = matrix("projection_matrix", 3, 4, required=False) or (K[0], K[1], K[2], 0.0, K[3], K[4], K[5], 0.0,
                                                                K[6], K[7], K[8], 0.0)
    model = data.get("distortion_model", "plumb_bob" if D else "")
    if not isinstance(model, str):
        raise CalibrationError(f"calibration file {source}: distortion_model must be a string, got {model!r}")
    name = data.get("camera_name", "")
    return CameraCalibration(width, height, str(name) if name is not None else "", K, tuple(D), model, R, P)


def _floats(values: list[Any], where: str) -> tuple[float, ...]:
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise CalibrationError(f"calibration file {where} holds {value!r}, not a finite number")
        out.append(float(value))
    return tuple(out)
