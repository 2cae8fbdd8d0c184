"""Choice data (animals accepting or rejecting odours), read and written without pickle.

NPZ schema, one row per encounter, each animal's encounters in time order::

    animal    int (N,)    animal index 0..A-1
    odour     int (N,)    odour presented (0 or 1)
    decision  int (N,)    1 = accepted, 0 = rejected
    reward    float (N,)  reward received (0 for rejections)
    names     str (A,)    optional animal names
    meta      str         optional JSON, informational only
    inputs    float (N, n_in)          optional: the input vector of each encounter (used instead of
                                       the odour's mean pattern plus modelled noise)
    w0        float (A, n_out, n_in)   optional: each animal's initial weights
    activity  float (N,)               optional: the recorded output (P(accept)) at each encounter,
                                       NaN where not recorded (objective fit_choice_activity)

Per-fly MATLAB files (the published format), one file per animal::

    X  (N, 2)     one-hot odour per encounter
    Y  (N,)       decision per encounter (0/1)
    R  (sum(Y),)  reward of each accepted encounter
    inputs (N, n_in)     optional: input vector of each encounter
    w0     (n_out, n_in) optional: the fly's initial weights
    activity (N,)        optional: recorded output per encounter, NaN where not recorded

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
    inputs: np.ndarray | None = None  # float64 (N, n_in): each encounter's input vector, if recorded
    w0: np.ndarray | None = None  # float64 (A, n_out, n_in): each animal's initial weights, if recorded
    activity: np.ndarray | None = None  # float64 (N,): recorded output per encounter (NaN: not recorded)

    @property
    def n_animals(self) -> int:
        return len(self.names)

    def animal_inputs(self, a: int) -> np.ndarray | None:
        """The recorded input vectors (n, n_in) of animal ``a``'s encounters, or None."""
        return None if self.inputs is None else self.inputs[self.animal == a]

    def animal_activity(self, a: int) -> np.ndarray | None:
        """The recorded output (n,) at animal ``a``'s encounters (NaN: not recorded), or None."""
        return None if self.activity is None else self.activity[self.animal == a]

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


def _float_array(npz, name: str, path: Path, ndim: int, expected: str) -> np.ndarray | None:
    """An optional float array of ``ndim`` dimensions, finite; None when absent."""
    if name not in npz.files:
        return None
    try:
        arr = npz[name]
    except ValueError:
        raise DataError(f"{path}: array '{name}' holds Python objects (never unpickled)") from None
    if arr.ndim != ndim or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise DataError(f"{path}: array '{name}' has shape {arr.shape} and dtype {arr.dtype}: expected numbers "
                        f"{expected}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)) and name != "activity":
        raise DataError(f"{path}: array '{name}' has NaN or inf")
    return arr


def _check_rich(inputs, w0, n: int, n_animals: int, where: str, names=("'inputs'", "'w0'")) -> None:
    """Shapes of the optional per-encounter inputs (n, n_in) and initial weights (A, n_out, n_in)."""
    if inputs is not None and (inputs.shape[0] != n or inputs.shape[1] == 0):
        raise DataError(f"{where}: {names[0]} has shape {inputs.shape}: expected (N, n_in) = ({n}, n_in), one "
                        "input vector per encounter")
    if w0 is not None:
        if w0.shape[0] != n_animals or 0 in w0.shape:
            raise DataError(f"{where}: {names[1]} has shape {w0.shape}: expected (animals, n_out, n_in) with "
                            f"{n_animals} animals")
        if inputs is not None and w0.shape[2] != inputs.shape[1]:
            raise DataError(f"{where}: {names[1]} has {w0.shape[2]} inputs per unit (shape {w0.shape}) but "
                            f"{names[0]} has {inputs.shape[1]} per encounter: expected the same n_in")


def _check_activity(activity, n: int, where: str, name: str = "'activity'") -> None:
    if activity.shape != (n,):
        raise DataError(f"{where}: {name} has shape {activity.shape}: expected (N,) = ({n},), one value per "
                        "encounter (NaN where not recorded)")
    if np.any(np.isinf(activity)):
        raise DataError(f"{where}: {name} has inf (NaN marks an encounter not recorded)")


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
        inputs = _float_array(npz, "inputs", path, 2, "(N, n_in): one input vector per encounter")
        w0 = _float_array(npz, "w0", path, 3, "(animals, n_out, n_in): each animal's initial weights")
        activity = _float_array(npz, "activity", path, 1, "(N,): the recorded output per encounter")
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
    _check_rich(inputs, w0, n, n_animals, str(path))
    if activity is not None:
        _check_activity(activity, n, str(path))
    order = np.argsort(animal, kind="stable")  # each animal's encounters stay in time order
    return ChoiceData(animal[order], odour[order], decision[order], reward[order], names, meta, str(path),
                      inputs=None if inputs is None else inputs[order], w0=w0,
                      activity=None if activity is None else activity[order])


def load_fly_mat(path: Path) -> tuple:
    """One per-fly MATLAB file -> (odour, decision, reward per encounter, inputs (N, n_in) or None,
    initial weights (n_out, n_in) or None, activity (N,) or None); ``DataError`` if malformed."""
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
    rich = []
    for name, ndim, expected in (("inputs", 2, "(N, n_in), one input vector per encounter"),
                                 ("w0", 2, "(n_out, n_in), the fly's initial weights")):
        if name not in mat:
            rich.append(None)
            continue
        arr = np.asarray(mat[name])
        if arr.ndim != ndim or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or 0 in arr.shape:
            raise DataError(f"{path}: variable {name} has shape {arr.shape} and dtype {arr.dtype}: expected {expected}")
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise DataError(f"{path}: variable {name} has NaN or inf")
        rich.append(arr)
    inputs, w0 = rich
    _check_rich(inputs, None if w0 is None else w0[None], n, 1, str(path), ("variable inputs", "variable w0"))
    activity = None
    if "activity" in mat:
        activity = np.asarray(mat["activity"])
        if not (np.issubdtype(activity.dtype, np.number) or activity.dtype == np.bool_):
            raise DataError(f"{path}: variable activity has dtype {activity.dtype}: expected numbers (N,)")
        activity = activity.astype(np.float64)
        activity = activity.ravel() if activity.ndim == 2 and 1 in activity.shape else activity
        _check_activity(activity, n, str(path), "variable activity")
    return X[:, 1].astype(np.int64), Y.astype(np.int64), reward, inputs, w0, activity


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
    rich = []
    for k, name in ((3, "inputs"), (4, "w0"), (5, "activity")):
        has = [p[k] is not None for p in parts]
        if any(has) and not all(has):  # a model needs them for every animal, or for none
            raise DataError(f"{source}: {names[has.index(True)]} records variable {name} but {names[has.index(False)]} "
                            f"does not: expected it in every fly file or in none")
        shapes = {p[k].shape[1:] if k in (3, 5) else p[k].shape for p in parts} if all(has) else set()
        if len(shapes) > 1:
            raise DataError(f"{source}: variable {name} has different shapes across fly files ({sorted(shapes)[:2]}): "
                            "expected one network")
        rich.append(None if not all(has) else np.concatenate([p[k] for p in parts]) if k in (3, 5)
                    else np.stack([p[k] for p in parts]))
    inputs, w0, activity = rich
    if inputs is not None and w0 is not None and w0.shape[2] != inputs.shape[1]:
        raise DataError(f"{source}: variable w0 has {w0.shape[2]} inputs per unit but variable inputs has "
                        f"{inputs.shape[1]} per encounter: expected the same n_in")
    return ChoiceData(animal, odour, decision, reward.astype(np.float64), names, meta, source, skipped, inputs, w0,
                      activity)


def save_choices_npz(path: str | Path, data: ChoiceData) -> None:
    """Write ``data`` in the NPZ schema, atomically."""
    rich = {k: v for k, v in (("inputs", data.inputs), ("w0", data.w0), ("activity", data.activity))
            if v is not None}
    savez_atomic(path, animal=data.animal, odour=data.odour, decision=data.decision, reward=data.reward,
                 names=np.array(data.names), meta=np.array(json.dumps(data.meta)), **rich)


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
        variables = {"X": X, "Y": decision.astype(np.float64)[:, None],
                     "R": reward[decision == 1].astype(np.float64)[:, None]}
        if data.inputs is not None:
            variables["inputs"] = data.animal_inputs(a)
        if data.w0 is not None:
            variables["w0"] = data.w0[a]
        if data.activity is not None:
            variables["activity"] = data.animal_activity(a)[:, None]
        with atomic_file(path, "wb") as fh:
            savemat(fh, variables)
        written.append(path)
    with atomic_file(folder / "meta.json") as fh:
        json.dump(data.meta, fh, indent=2)
    return written
