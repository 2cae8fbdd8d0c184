"""rulesearch: discover synaptic plasticity rules.

    >>> import rulesearch
    >>> task = rulesearch.load_task("tasks/oja.toml")
    >>> task.evaluate([rulesearch.parse_rule("x*y - y**2*w", task.grammar)])
    >>> result = rulesearch.evolve(task, seed=1)
    >>> result.selected.expression
"""
from .errors import DataError, GrammarError, TaskError
from .gp import EvolveResult, evolve
from .grammar import Grammar, load_grammar
from .rules import Rule, parse_rule
from .tasks import WORST_LOSS, Task, load_task

__version__ = "0.1.0"
__all__ = ["DataError", "EvolveResult", "Grammar", "GrammarError", "Rule", "Task", "TaskError",
           "WORST_LOSS", "evolve", "load_grammar", "load_task", "parse_rule"]
