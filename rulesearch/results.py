"""The run folder: atomic writes (temp file, then rename) of JSON, CSV and NPZ, and reads."""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import sys
import secrets
from contextlib import contextmanager
from pathlib import Path


RUN_FILE, PARETO_FILE, CHECKPOINT_FILE, FRONT_PLOT = "run.json", "pareto.csv", "checkpoint.json", "front.png"
PARAMS_FILE, COEFFICIENTS_FILE, FIT_PLOT = "params.json", "coefficients.csv", "fit.png"
COEFFICIENTS_FULL_FILE = "coefficients_full.csv"  # LM fits: every term, before selection
PARETO_COLUMNS = ("complexity", "loss", "expression", "latex", "selected")


@contextmanager
def atomic_file(path: str | Path, mode: str = "w"):
    """Open a temp file next to ``path``; on success rename it over ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:  # like mkstemp, but with the permissions open() would give (0666 less the umask)
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": ""} if "b" not in mode else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj, compact: bool = False) -> None:
    """Write JSON atomically; ``compact`` (no indentation) is several times faster for big files."""
    text = json.dumps(obj, allow_nan=False, **({"separators": (",", ":")} if compact else {"indent": 2}))
    with atomic_file(path) as fh:
        fh.write(text + "\n")


def read_json(path: str | Path) -> dict:
    """A JSON object from a run folder; ``TaskError`` naming the file when it is missing, not
    UTF-8, truncated or not an object."""
    from .errors import TaskError
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh)
    except FileNotFoundError:
        raise TaskError(f"{path}: file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TaskError(f"{path}: not a complete JSON file ({exc})") from None
    except OSError as exc:
        raise TaskError(f"{path}: cannot read ({exc.strerror})") from None
    if not isinstance(obj, dict):
        raise TaskError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


def check_output(path: str | Path, force: bool = False, what: str = "--out") -> Path:
    """Refuse to write where something already is: an existing file, or a non-empty folder (unless
    ``force``). Nothing is written; ``TaskError`` naming the path."""
    from .errors import TaskError
    path = Path(path)
    if path.exists() and not path.is_dir():
        if not force:
            raise TaskError(f"{what} {path}: a file already exists there (pass --force to replace it)")
    elif path.is_dir() and any(path.iterdir()) and not force:
        raise TaskError(f"{what} {path}: the folder exists and is not empty (pass --force to write into it, "
                        "or --resume to continue a run)")
    return path


def write_csv(path: str | Path, columns, rows) -> None:
    with atomic_file(path) as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        writer.writerows(rows)


def read_csv(path: str | Path) -> list[dict]:
    from .errors import TaskError
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise TaskError(f"{path}: not a readable CSV file ({exc})") from None


def versions() -> dict:
    """Versions of Python, the platform and the libraries a result depends on."""
    from importlib.metadata import PackageNotFoundError, version
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in ("rulesearch", "numpy", "numba", "sympy", "deap", "scipy", "cma", "pyoperon"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def savez_atomic(path: str | Path, **arrays) -> None:
    import numpy as np
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    with atomic_file(path, "wb") as fh:
        fh.write(buffer.getvalue())


def run_kind(run_dir: str | Path) -> str | None:
    """The ``kind`` recorded in a folder's run.json (evolve, fit, families, ...), or None."""
    try:
        return str(read_json(Path(run_dir) / RUN_FILE).get("kind", "evolve"))
    except (OSError, ValueError, AttributeError):
        return None


def held_run(run_dir: str | Path) -> str:
    """"an 'evolve' run of task 'oja'", as far as the folder's run.json says, for messages."""
    try:
        info = read_json(Path(run_dir) / RUN_FILE)
        kind = str(info.get("kind", "evolve"))
        return f"{'an' if kind[:1] in 'aeiou' else 'a'} '{kind}' run of task '{info.get('task_name', '?')}'"
    except (OSError, ValueError, AttributeError):
        return "a run"
