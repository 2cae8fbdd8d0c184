"""Activity data files (NPZ) in the documented schema, read without pickle.

Schema::

    x     float (trials, steps, n_in)   presynaptic rates
    y     float (trials, steps, n_out)  recorded postsynaptic activity, NaN = not recorded
    w0    float (trials, n_out, n_in)   initial weights
    m0    float (trials, n_out, n_out)  optional: initial lateral weights (networks with a
                                        lateral pathway; zero diagonal); absent: all 0
    meta  str (optional)                JSON, informational only
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError
from .results import savez_atomic


@dataclass(frozen=True)
class ActivityData:
    x: np.ndarray  # (trials, steps, n_in)
    y: np.ndarray  # (trials, steps, n_out), NaN = not recorded
    w0: np.ndarray  # (trials, n_out, n_in)
    meta: dict
    source: str = "<memory>"
    m0: np.ndarray | None = None  # (trials, n_out, n_out) initial lateral weights, or None


def _array(npz, name: str, ndim: int, shape_text: str, path: Path) -> np.ndarray:
    if name not in npz.files:
        raise DataError(f"{path}: array '{name}' is missing: expected float {shape_text}")
    try:
        arr = npz[name]
    except ValueError:
        raise DataError(f"{path}: array '{name}' holds Python objects: expected float "
                        f"{shape_text} (object arrays are never unpickled)") from None
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)) \
            or arr.dtype == np.bool_:
        raise DataError(f"{path}: array '{name}' has dtype {arr.dtype}: expected float {shape_text}")
    if arr.ndim != ndim:
        raise DataError(f"{path}: array '{name}' has shape {arr.shape}: expected {shape_text}")
    return arr.astype(np.float64)


def open_npz(path: Path, arrays: str):
    """``np.load`` without pickle; ``DataError`` naming the file and the expected ``arrays``."""
    try:
        npz = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        raise DataError(f"{path}: not an NPZ file (expected arrays {arrays})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: a single .npy array: expected an NPZ file with arrays {arrays}")
    return npz


def read_meta(npz, path: Path) -> dict:
    """The optional JSON ``meta`` array as a dict ({} when absent)."""
    if "meta" not in npz.files:
        return {}
    try:
        meta = json.loads(str(npz["meta"]))
    except (ValueError, TypeError):
        raise DataError(f"{path}: array 'meta' is not a JSON string") from None
    return meta if isinstance(meta, dict) else {"meta": meta}


def load_activity(path: str | Path) -> ActivityData:
    """Read and validate an activity NPZ file; raise ``DataError`` naming file, array and problem."""
    path = Path(path)
    with open_npz(path, "x, y, w0") as npz:
        x = _array(npz, "x", 3, "(trials, steps, n_in)", path)
        y = _array(npz, "y", 3, "(trials, steps, n_out)", path)
        w0 = _array(npz, "w0", 3, "(trials, n_out, n_in)", path)
        m0 = _array(npz, "m0", 3, "(trials, n_out, n_out)", path) if "m0" in npz.files else None
        meta = read_meta(npz, path)
    trials, steps, n_in = x.shape
    if y.shape[:2] != (trials, steps):
        raise DataError(f"{path}: array 'y' has shape {y.shape}: expected (trials, steps, n_out) "
                        f"with trials={trials}, steps={steps} as in 'x'")
    n_out = y.shape[2]
    if w0.shape != (trials, n_out, n_in):
        raise DataError(f"{path}: array 'w0' has shape {w0.shape}: expected (trials, n_out, n_in) "
                        f"= {(trials, n_out, n_in)}")
    if m0 is not None:
        if m0.shape != (trials, n_out, n_out):
            raise DataError(f"{path}: array 'm0' has shape {m0.shape}: expected (trials, n_out, n_out) "
                            f"= {(trials, n_out, n_out)}")
        if not np.all(np.isfinite(m0)):
            raise DataError(f"{path}: array 'm0' has NaN or inf: expected finite weights")
    if min(trials, steps, n_in, n_out) == 0:
        raise DataError(f"{path}: an array is empty (x {x.shape}, y {y.shape})")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{path}: array 'x' has NaN or inf: expected finite rates")
    if not np.all(np.isfinite(w0)):
        raise DataError(f"{path}: array 'w0' has NaN or inf: expected finite weights")
    if np.any(np.isinf(y)):
        raise DataError(f"{path}: array 'y' has inf: expected finite values or NaN for unrecorded")
    if np.all(np.isnan(y)):
        raise DataError(f"{path}: array 'y' is all NaN: expected some recorded activity")
    return ActivityData(x, y, w0, meta, str(path), m0)


def save_activity(path: str | Path, data: ActivityData) -> None:
    """Write ``data`` in the schema, atomically."""
    lateral = {} if data.m0 is None else {"m0": data.m0}
    savez_atomic(path, x=data.x, y=data.y, w0=data.w0, meta=np.array(json.dumps(data.meta)), **lateral)
