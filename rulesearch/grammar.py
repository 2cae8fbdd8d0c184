"""Grammar files: which variables and operators a rule may use.

A grammar file is TOML::

    name = "hebbian"
    [terminals]
    x = { symbol = "x_j", meaning = "presynaptic activity" }
    [operators]
    use = ["add", "sub", "mul", "div", "neg", "square"]
    [constants]
    range = [-1.0, 1.0]
    [limits]
    max_depth = 6
    max_size = 25
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ._fields import Fields
from ._toml import read_toml
from .errors import GrammarError
from .primitives import DEFAULT_OPERATORS, PRIMITIVES, VARIABLES, Variable

GRAMMAR_DIR = Path(__file__).resolve().parent.parent / "grammars"  # in a source checkout


@dataclass(frozen=True)
class Terminal:
    """A variable a rule may read, with the LaTeX symbol used when printing rules."""

    name: str
    symbol: str
    meaning: str

    @property
    def variable(self) -> Variable:
        return VARIABLES[self.name]


@dataclass(frozen=True)
class Grammar:
    """A validated grammar: terminals, allowed operators, constant range and size limits."""

    name: str
    terminals: tuple[Terminal, ...]
    operators: tuple[str, ...]
    constant_range: tuple[float, float] | None
    max_depth: int = 6
    max_size: int = 25
    source: str = "<memory>"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.terminals)

    def terminal(self, name: str) -> Terminal:
        for t in self.terminals:
            if t.name == name:
                return t
        raise KeyError(name)

    def describe(self) -> str:
        return f"grammar '{self.name}' ({self.source}): terminals {', '.join(self.names)}; " \
               f"operators {', '.join(self.operators)}"


def find_grammar(name: str, near: Path | None = None) -> Path | None:
    """Resolve a grammar name or path: as given, next to ``near``, in ``near/../grammars``,
    in ./grammars, or in the source checkout's grammars/ (``.toml`` may be left out)."""
    folders = [Path.cwd()]
    if near is not None:
        folders += [near, near.parent / "grammars"]
    folders += [Path.cwd() / "grammars", GRAMMAR_DIR]
    for folder in folders:
        for candidate in (folder / name, folder / f"{name}.toml"):
            if candidate.is_file():
                return candidate
    return None


def load_grammar(path: str | Path) -> Grammar:
    """Load and validate a grammar file; raise ``GrammarError`` naming the file and field."""
    path = Path(path)
    fields = Fields(read_toml(path, GrammarError), path, "", GrammarError)
    name = fields.get("name", str, path.stem)
    fields.get("description", str, "")

    term_table = fields.get("terminals", dict)
    if not term_table:
        fields.fail("terminals", "is empty: expected at least one terminal")
    terminals = []
    for key, spec in term_table.items():
        if key not in VARIABLES:
            raise GrammarError(f"{path}: field 'terminals.{key}' is not a known variable "
                               f"(known: {', '.join(VARIABLES)})")
        tf = Fields(spec, path, f"terminals.{key}", GrammarError)
        terminals.append(Terminal(key, tf.get("symbol", str, key),
                                  tf.get("meaning", str, VARIABLES[key].meaning)))
        tf.finish()

    ops = fields.sub("operators", {})
    use = ops.get("use", list, list(DEFAULT_OPERATORS))
    for op in use:
        if op not in PRIMITIVES:
            ops.fail("use", f"has unknown operator {op!r}: expected any of {', '.join(PRIMITIVES)}")
    if not any(PRIMITIVES[op].arity == 2 for op in use):
        ops.fail("use", "has no binary operator: expected at least one of add, sub, mul, div")
    ops.finish()

    consts = fields.sub("constants", {})
    enabled = consts.get("enabled", bool, True)
    low, high = consts.numbers("range", (-1.0, 1.0), length=2)
    if not low < high:
        consts.fail("range", f"is [{low}, {high}]: expected low < high")
    consts.finish()

    limits = fields.sub("limits", {})
    max_depth = limits.get("max_depth", int, 6, low=1, high=17)
    max_size = limits.get("max_size", int, 25, low=1, high=200)
    limits.finish()
    fields.finish()
    return Grammar(name, tuple(terminals), tuple(dict.fromkeys(use)),
                   (low, high) if enabled else None, max_depth, max_size, str(path))
