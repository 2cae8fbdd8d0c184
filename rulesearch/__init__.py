"""rulesearch: discover synaptic plasticity rules.

    >>> import rulesearch
    >>> task = rulesearch.load_task("tasks/oja.toml")
    >>> task.evaluate([rulesearch.parse_rule("x*y - y**2*w", task.grammar)])
    >>> result = rulesearch.evolve(task, seed=1)
    >>> result.selected.expression

Names are imported on first use, so that importing a light submodule (the CLI's parser, a Dask
worker's plugin) does not compile or load the Numba kernels.
"""
import os
from importlib import import_module

# Numba's OpenMP threads spin while idle by default. A search issues many short population calls
# (constant optimisation), and on a busy machine the spinning thread takes the core the working one
# needs: a one-rule call then took 43 ms instead of 0.5 ms. Idle threads sleep instead, unless the
# user chose otherwise. Set before the first parallel kernel loads the OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
_EXPORTS = {"DataError": "errors", "GrammarError": "errors", "TaskError": "errors", "EvolveResult": "fronts",
            "evolve": "gp", "Grammar": "grammar", "load_grammar": "grammar", "Rule": "rules",
            "parse_rule": "rules", "WORST_LOSS": "tasks", "Task": "tasks", "load_task": "tasks"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'rulesearch' has no attribute {name!r}")
