"""Choice data (animals accepting or rejecting odours), read and written without pickle.

NPZ schema, one row per encounter, each animal's encounters in time order::

    animal    int (N,)    animal index 0..A-1
    odour     int (N,)    odour presented (0 or 1)
    decision  int (N,)    1 = accepted, 0 = rejected
    reward    float (N,)  reward received (0 for rejections)
    names     str (A,)    optional animal names
    meta      str         optional JSON, informational only

Per-fly MATLAB files (the published format), one file per animal::

    X  (N, 2)     one-hot odour per encounter
    Y  (N,)       decision per encounter (0/1)
    R  (sum(Y),)  reward of each accepted encounter

``--data`` takes an NPZ file, a .mat file, or a folder of .mat files (one per animal).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import open_npz, read_meta
from .errors import DataError
from .results import atomic_file, savez_atomic


@dataclass(frozen=True)
class ChoiceData:
    animal: np.ndarray  # int64 (N,)
    odour: np.ndarray  # int64 (N,)
    decision: np.ndarray  # int64 (N,)
    reward: np.ndarray  # float64 (N,)
    names: tuple[str, ...]
    meta: dict = field(default_factory=dict)
    source: str = "<memory>"
    skipped: tuple[str, ...] = ()  # one line per file of a folder that could not be read

    @property
    def n_animals(self) -> int:
        return len(self.names)

    def per_animal(self, a: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(odour, decision, reward) of animal ``a``, in time order."""
        sel = self.animal == a
        return self.odour[sel], self.decision[sel], self.reward[sel]


def _validate(animal, odour, decision, reward, where: str) -> None:
    for name, arr in (("odour", odour), ("decision", decision)):
        if arr.size and not np.all((arr == 0) | (arr == 1)):
            raise DataError(f"{where}: '{name}' must hold 0 or 1, found {sorted(set(np.unique(arr)) - {0, 1})[:3]}")
    if not np.all(np.isfinite(reward)):
        raise DataError(f"{where}: 'reward' has NaN or inf")
    if np.any(reward[decision == 0] != 0):
        raise DataError(f"{where}: 'reward' is non-zero on a rejected encounter (decision 0)")


def _int_array(npz, name: str, path: Path) -> np.ndarray:
    if name not in npz.files:
        raise DataError(f"{path}: array '{name}' is missing: expected int (N,) "
                        "(choice data: animal, odour, decision, reward)")
    try:
        arr = npz[name]
    except ValueError:
        raise DataError(f"{path}: array '{name}' holds Python objects (never unpickled)") from None
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DataError(f"{path}: array '{name}' has shape {arr.shape} and dtype {arr.dtype}: expected numbers (N,)")
    return arr


def _load_npz(path: Path) -> ChoiceData:
    with open_npz(path, "animal, odour, decision, reward") as npz:
        animal, odour, decision = (_int_array(npz, n, path) for n in ("animal", "odour", "decision"))
        reward = _int_array(npz, "reward", path).astype(np.float64)
        names = None
        if "names" in npz.files:
            try:
                names = tuple(str(s) for s in npz["names"])
            except ValueError:
                raise DataError(f"{path}: array 'names' holds Python objects (never unpickled)") from None
        meta = read_meta(npz, path)
    n = len(animal)
    if not (len(odour) == len(decision) == len(reward) == n) or n == 0:
        raise DataError(f"{path}: arrays animal, odour, decision, reward must have one equal, non-zero length "
                        f"(got {len(animal)}, {len(odour)}, {len(decision)}, {len(reward)})")
    if np.any(animal < 0) or np.any(animal != np.round(animal)):
        raise DataError(f"{path}: 'animal' must hold indices 0, 1, 2, ...")
    animal = animal.astype(np.int64)
    n_animals = int(animal.max()) + 1
    if names is None:
        names = tuple(f"animal{a}" for a in range(n_animals))
    elif len(names) != n_animals:
        raise DataError(f"{path}: 'names' has {len(names)} entries: expected {n_animals} (max animal index + 1)")
    odour, decision = odour.astype(np.int64), decision.astype(np.int64)
    missing = sorted(set(range(n_animals)) - set(animal.tolist()))
    if missing:
        raise DataError(f"{path}: 'animal' has no encounters for animal(s) {missing[:5]} (indices must run "
                        f"0..{n_animals - 1} without gaps)")
    _validate(animal, odour, decision, reward, str(path))
    order = np.argsort(animal, kind="stable")  # each animal's encounters stay in time order
    return ChoiceData(animal[order], odour[order], decision[order], reward[order], names, meta, str(path))


def load_fly_mat(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One per-fly MATLAB file -> (odour, decision, reward per encounter); ``DataError`` if malformed."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError
    try:
        mat = loadmat(path)
    except NotImplementedError:
        raise DataError(f"{path}: MATLAB v7.3 (HDF5) file: save it with -v7 (or as NPZ)") from None
    except (OSError, ValueError, TypeError, MatReadError):
        raise DataError(f"{path}: not a MATLAB .mat file (expected variables X, Y, R)") from None
    missing = [k for k in ("X", "Y", "R") if k not in mat]
    if missing:
        raise DataError(f"{path}: variable {missing[0]} is missing (expected X (N, 2), Y (N,), R (sum(Y),))")
    X, Y, R = (np.asarray(mat[k]) for k in ("X", "Y", "R"))
    if not all(np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_ for a in (X, Y, R)):
        raise DataError(f"{path}: X, Y and R must be numeric")
    X = X.astype(np.float64)
    if X.ndim != 2 or X.shape[1] != 2:
        raise DataError(f"{path}: X has shape {X.shape}: expected (N, 2), one-hot odour per encounter")
    if X.shape[0] == 0:
        raise DataError(f"{path}: X has no rows: expected at least one encounter")
    n = X.shape[0]
    Y, R = Y.astype(np.float64).ravel(), R.astype(np.float64).ravel()
    if Y.size != n:
        raise DataError(f"{path}: Y has {Y.size} entries: expected N = {n} (one decision per row of X)")
    if not np.all((X == 0) | (X == 1)) or not np.all(X.sum(axis=1) == 1):
        raise DataError(f"{path}: X must be one-hot (each row one 1 and one 0)")
    if not np.all((Y == 0) | (Y == 1)):
        raise DataError(f"{path}: Y must hold 0 or 1")
    accepted = int(Y.sum())
    if R.size != accepted:
        raise DataError(f"{path}: R has {R.size} entries: expected sum(Y) = {accepted} (one reward per acceptance)")
    if not np.all(np.isfinite(R)):
        raise DataError(f"{path}: R has NaN or inf")
    reward = np.zeros(n)
    reward[Y == 1] = R
    return X[:, 1].astype(np.int64), Y.astype(np.int64), reward


def load_choices(path: str | Path) -> ChoiceData:
    """Choice data from an NPZ file, one .mat file, or a folder of per-fly .mat files.

    In a folder, a malformed file is skipped (its one-line reason kept in
    ``skipped``) and the other files are read; no readable file is an error.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file or folder not found")
    if path.is_dir():
        files = sorted(path.glob("*.mat"))
        if not files:
            raise DataError(f"{path}: folder has no .mat files (one per fly: X, Y, R)")
        parts, names, skipped = [], [], []
        for f in files:
            try:
                parts.append(load_fly_mat(f))
                names.append(f.stem)
            except DataError as exc:
                skipped.append(str(exc))
        if not parts:
            raise DataError(f"{path}: no readable fly file ({len(skipped)} malformed; first: {skipped[0]})")
        meta = {}
        meta_file = path / "meta.json"
        if meta_file.is_file():
            try:
                meta = json.loads(meta_file.read_text())
            except ValueError:
                skipped.append(f"{meta_file}: not JSON (ignored)")
        return _concat(parts, tuple(names), meta if isinstance(meta, dict) else {}, str(path), tuple(skipped))
    if path.suffix == ".mat":
        return _concat([load_fly_mat(path)], (path.stem,), {}, str(path), ())
    return _load_npz(path)


def _concat(parts, names, meta, source, skipped) -> ChoiceData:
    animal = np.concatenate([np.full(len(p[0]), a, np.int64) for a, p in enumerate(parts)])
    odour, decision, reward = (np.concatenate([p[k] for p in parts]) for k in range(3))
    return ChoiceData(animal, odour, decision, reward.astype(np.float64), names, meta, source, skipped)


def save_choices_npz(path: str | Path, data: ChoiceData) -> None:
    """Write ``data`` in the NPZ schema, atomically."""
    savez_atomic(path, animal=data.animal, odour=data.odour, decision=data.decision, reward=data.reward,
                 names=np.array(data.names), meta=np.array(json.dumps(data.meta)))


def save_choices_mat(folder: str | Path, data: ChoiceData) -> list[Path]:
    """One MATLAB file per animal (X one-hot, Y decisions, R rewards of acceptances), atomically."""
    from scipy.io import savemat
    folder = Path(folder)
    written = []
    for a, name in enumerate(data.names):
        odour, decision, reward = data.per_animal(a)
        X = np.zeros((len(odour), 2))
        X[np.arange(len(odour)), odour] = 1.0
        path = folder / f"{name}.mat"
        with atomic_file(path, "wb") as fh:
            savemat(fh, {"X": X, "Y": decision.astype(np.float64)[:, None],
                         "R": reward[decision == 1].astype(np.float64)[:, None]})
        written.append(path)
    with atomic_file(folder / "meta.json") as fh:
        json.dump(data.meta, fh, indent=2)
    return written
