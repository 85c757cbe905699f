"""Read ``.npy`` files from outside as data, never as code.

``np.load(allow_pickle=True)`` unpickles whatever an object array holds, and a pickle can call any
importable function while loading (a crafted ``__reduce__`` runs ``os.system``). Datasets still ship
pickled dicts as ``.npy`` (MS2's ``calib.npy``), so ``load_npy_data`` reads a plain array with
``allow_pickle=False`` and an object array with a restricted unpickler that resolves only what numpy
needs to rebuild arrays, scalars and dtypes, plus plain containers; any other global is refused before
it can be called.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from monother_ros.errors import MonotherError

__all__ = ["UnsafeDataError", "load_npy_data"]


class UnsafeDataError(MonotherError, ValueError):
    """A data file is unreadable, or wants to run code (a pickle referencing a non-data global)."""


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The numpy callables that array / scalar / dtype pickles reference, under their old and new paths."""
    reconstruct = np.empty(0).__reduce__()[0]  # numpy(._core).multiarray._reconstruct
    scalar = np.float64(0).__reduce__()[0]  # numpy(._core).multiarray.scalar
    frombuffer = np.arange(2).__reduce_ex__(5)[0]  # numpy(._core).numeric._frombuffer (protocol 5)
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = frombuffer
    return allowed


# Plain values that pickles build through a global reference (protocol <= 3 or Python 2 pickles).
_BUILTIN_GLOBALS: dict[tuple[str, str], Any] = {
    ("builtins", "complex"): complex,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "slice"): slice,
    ("collections", "OrderedDict"): dict,
    # Python 2 / protocol 2 pickles encode bytes as _codecs.encode(text, "latin1"): a pure function.
    ("_codecs", "encode"): __import__("codecs").encode,
}


class _DataUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy array/scalar/dtype rebuilders and plain containers."""

    _allowed = {**_numpy_globals(), **_BUILTIN_GLOBALS}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}: only numpy arrays, scalars, dtypes and plain containers are data"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused persistent reference: not plain data")


def load_npy_data(path: str | Path, *, max_bytes: int = 256 * 2**20) -> Any:
    """Load a ``.npy`` file without running code from it.

    Args:
        path: the file.
        max_bytes: largest file accepted (a calibration is a few KiB).

    Returns:
        A numeric ndarray as ``np.load`` returns it; for an object array holding one pickled value (a
        dict saved with ``np.save``), that value (``.item()``); other object arrays as they are.

    Raises:
        UnsafeDataError: missing, too large or malformed file, or a pickle that references anything but
            numpy arrays, scalars, dtypes and plain containers (nothing of it is executed).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UnsafeDataError(f"cannot read {path}: {exc.strerror}") from None
    if size > max_bytes:
        raise UnsafeDataError(f"{path} is {size} bytes, more than the {max_bytes} accepted")
    blob = path.read_bytes()
    stream = io.BytesIO(blob)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except ValueError as exc:
        raise UnsafeDataError(f"{path} is not a .npy file: {exc}") from None
    if not dtype.hasobject:
        try:
            return np.load(io.BytesIO(blob), allow_pickle=False)
        except ValueError as exc:
            raise UnsafeDataError(f"{path}: malformed array data: {exc}") from None
    try:
        # numpy pickles object arrays with pickle.dump after the header; latin1 reads Python 2 pickles.
        obj = _DataUnpickler(stream, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise UnsafeDataError(f"{path}: {exc}") from None
    except Exception as exc:  # truncated or garbled pickle streams raise EOFError, ValueError, TypeError...
        raise UnsafeDataError(f"{path}: malformed pickled data: {type(exc).__name__}: {exc}") from None
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.shape == () and tuple(shape) == ():
        return obj.item()
    return obj
