"""Rules as expression trees: parse text with ``ast``, convert to sympy, LaTeX and VM programs.

An expression is a prefix tuple of nodes ``(kind, value)`` with kind ``"op"``
(an operator name from ``PRIMITIVES``), ``"var"`` (a grammar terminal) or
``"const"`` (a float). A ``Rule`` is a tuple of expressions, one per plastic
pathway of the network, even when the network has one; its ``RuleSpace`` names the
pathways, their grammars, the variables each one's synapses see and their LaTeX symbols.
Rules of several pathways are written ``"ff: x*y - y**2*w; lat: -x*y"``.
"""
from __future__ import annotations

import ast
import math
import warnings
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Sequence

import numpy as np
import sympy
from sympy.printing.str import StrPrinter

from .errors import GrammarError
from .grammar import Grammar
from .primitives import (
    KINDS,
    LOAD_OPCODES,
    OP_ADD,
    OP_AXPB,
    OP_CONST,
    OP_MUL,
    OP_MUL_CONST,
    OP_MUL_VAR,
    PRIMITIVES,
    VARIABLES,
    Variable,
)
from .vm import Program

Node = tuple  # ("op", name) | ("var", name) | ("const", value)
Expr = tuple  # prefix sequence of nodes


DEFAULT_SYMBOL = r"\Delta w_{ij}"


@dataclass(frozen=True)
class Pathway:
    """A plastic pathway: its name, grammar, LaTeX left-hand side and the variables its synapses
    see (name -> ``Variable``: kind and slot in the simulator's arrays)."""

    name: str
    grammar: Grammar
    symbol: str = DEFAULT_SYMBOL
    variables: tuple[Variable, ...] = ()  # empty: the catalogue's (primitives.VARIABLES)

    def symbols(self) -> dict[str, str]:
        """Variable name -> LaTeX symbol where the pathway gives its own (y_k for a lateral input)."""
        return {v.name: v.latex for v in self.variables if v.latex}

    def variable(self, name: str) -> Variable:
        for v in self.variables:
            if v.name == name:
                return v
        return VARIABLES[name]


@dataclass(frozen=True)
class RuleSpace:
    """The pathways a rule has one expression for (one for single-pathway networks)."""

    pathways: tuple[Pathway, ...]

    @classmethod
    def single(cls, grammar: Grammar, symbol: str = DEFAULT_SYMBOL) -> "RuleSpace":
        return cls((Pathway("w", grammar, symbol),))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.pathways)

    @property
    def multi(self) -> bool:
        return len(self.pathways) > 1

    def __len__(self) -> int:
        return len(self.pathways)

    def grammar(self, p: int = 0) -> Grammar:
        return self.pathways[p].grammar

    def describe(self) -> str:
        return ", ".join(self.names)


def as_space(space: "RuleSpace | Grammar") -> RuleSpace:
    return space if isinstance(space, RuleSpace) else RuleSpace.single(space)


@dataclass(frozen=True)
class Rule:
    """A plasticity rule: one prefix expression per plastic pathway of its ``RuleSpace``."""

    exprs: tuple[Expr, ...]
    space: RuleSpace

    def __post_init__(self):
        if not isinstance(self.space, RuleSpace):  # Rule(exprs, grammar) for one pathway
            object.__setattr__(self, "space", RuleSpace.single(self.space))
        if len(self.exprs) != len(self.space):
            raise ValueError(f"a rule of {len(self.space)} pathway(s) ({self.space.describe()}) "
                             f"needs {len(self.space)} expression(s), got {len(self.exprs)}")

    @property
    def grammar(self) -> Grammar:
        """The grammar of a single-pathway rule (multi-pathway rules: ``space.grammar(p)``)."""
        if self.space.multi:
            raise ValueError("a rule of several pathways has one grammar per pathway: use space.grammar(p)")
        return self.space.grammar(0)

    @property
    def complexity(self) -> int:
        """Number of nodes over all pathways."""
        return sum(len(e) for e in self.exprs)

    def to_sympy(self) -> tuple[sympy.Expr, ...]:
        return tuple(expr_to_sympy(e) for e in self.exprs)

    def parts(self) -> list[str]:
        """Sympy-parsable text of each pathway's expression."""
        return [sympy_text(e) for e in self.to_sympy()]

    def text(self) -> str:
        """Sympy-parsable text; several pathways as ``ff: ...; lat: ...`` (read back by ``parse_rule``)."""
        parts = self.parts()
        if not self.space.multi:
            return parts[0]
        return "; ".join(f"{name}: {t}" for name, t in zip(self.space.names, parts))

    def latex_parts(self) -> list[str]:
        """LaTeX right-hand side of each pathway, with its grammar's symbols (or the pathway's own)."""
        return [to_latex(e, p.grammar, p.symbols()) for e, p in zip(self.to_sympy(), self.space.pathways)]

    def latex(self, lhs: bool = True) -> str:
        """LaTeX with the grammar's symbols, e.g. ``\\Delta w_{ij} = x_j y_i - ...``; pathways
        separated by '; '."""
        parts = self.latex_parts()
        if not lhs:
            return "; ".join(parts)
        return "; ".join(f"{p.symbol} = {t}" for p, t in zip(self.space.pathways, parts))

    def programs(self) -> tuple[Program, ...]:
        return tuple(_compile_cached(e, p) for e, p in zip(self.exprs, self.space.pathways))

    def constants(self) -> list[float]:
        return [v for e in self.exprs for k, v in e if k == "const"]

    def with_constants(self, values: Sequence[float]) -> "Rule":
        """The same tree with its constants (in prefix order) replaced by ``values``."""
        it = iter(values)
        exprs = tuple(tuple(("const", float(next(it))) if k == "const" else (k, v) for k, v in e)
                      for e in self.exprs)
        return Rule(exprs, self.space)

    def with_expr(self, p: int, expr: Expr) -> "Rule":
        """The rule with pathway ``p``'s expression replaced."""
        return Rule(self.exprs[:p] + (tuple(expr),) + self.exprs[p + 1:], self.space)

    def canonical(self) -> "Rule":
        """The rule rebuilt from its expanded sympy form (fewer nodes, stable text)."""
        return rule_from_sympy([canonical_sympy(e) for e in self.to_sympy()], self.space)

    def __str__(self) -> str:
        return self.text()


# ---------------------------------------------------------------- parsing

MAX_RULE_CHARS = 10_000  # longer rule text is refused before parsing


def parse_rule(text: str | Sequence[str], space: RuleSpace | Grammar, limits: bool = False) -> Rule:
    """Parse rule text (``"x*y - y**2*w"``) against a grammar or the pathways of a ``RuleSpace``
    with the ``ast`` module.

    Several pathways are written ``"ff: x*y - y**2*w; lat: -x*y"`` (names required, each
    pathway once) or given as a sequence of strings in the space's order. Raises
    ``GrammarError`` naming the offending token, pathway and grammar. ``limits``: hold each
    expression to its grammar's ``max_size`` and ``max_depth`` (for rules a user types).
    """
    rule = _parse_rule(text, as_space(space))
    if limits:
        for p, e in zip(rule.space.pathways, rule.exprs):
            depth = expr_depth(e)
            if len(e) > p.grammar.max_size or depth > p.grammar.max_depth:
                where = f"pathway '{p.name}': " if rule.space.multi else ""
                raise GrammarError(f"{where}rule has {len(e)} nodes and depth {depth}: grammar '{p.grammar.name}' "
                                   f"allows at most {p.grammar.max_size} nodes and depth {p.grammar.max_depth}")
    return rule


def expr_depth(expr: Expr) -> int:
    """Depth of a prefix expression (a single leaf: 1)."""
    depth, stack = 0, []  # remaining children of each open operator
    for kind, value in expr:
        depth = max(depth, len(stack) + 1)
        if kind == "op":
            stack.append(PRIMITIVES[value].arity)
        else:
            while stack:
                stack[-1] -= 1
                if stack[-1]:
                    break
                stack.pop()
    return depth


def _is_label(text: str) -> bool:
    """A pathway label: a name, or dotted names for a pathway's event (``ie.pre``)."""
    return all(part.isidentifier() for part in text.split("."))


def _parse_rule(text, space: RuleSpace) -> Rule:
    if isinstance(text, str) and len(text) > MAX_RULE_CHARS:
        raise GrammarError(f"rule text of {len(text)} characters: expected at most {MAX_RULE_CHARS}")
    parts = text.split(";") if isinstance(text, str) else list(text)
    if not parts or any(not p.strip() for p in parts):
        raise GrammarError(f"rule {text!r}: empty expression")
    names = space.names
    if not space.multi:
        if len(parts) > 1:
            raise GrammarError(f"rule {text!r}: {len(parts)} expressions separated by ';', but the "
                               "network has one plastic pathway")
        body = parts[0].strip()
        label, sep, rest = body.partition(":")
        if sep and _is_label(label.strip()):
            if label.strip() != names[0]:
                raise GrammarError(f"rule {text!r}: unknown pathway '{label.strip()}' "
                                   "(the network has one plastic pathway: write the expression alone)")
            body = rest.strip()
        return Rule((_parse_one(body, space.grammar(0)),), space)
    if not isinstance(text, str):
        if len(parts) != len(names):
            raise GrammarError(f"rule {list(text)!r}: {len(parts)} expressions for the pathways "
                               f"{', '.join(names)}: expected {len(names)}")
        return Rule(tuple(_parse_one(p.strip(), space.grammar(k)) for k, p in enumerate(parts)), space)
    found = {}
    for part in parts:
        label, sep, body = part.partition(":")
        label = label.strip()
        if not sep or not _is_label(label):
            raise GrammarError(f"rule {text!r}: '{part.strip()}' names no pathway: write each part as "
                               f"'name: expression' with a name from {', '.join(names)}")
        if label not in names:
            raise GrammarError(f"rule {text!r}: unknown pathway '{label}' (pathways: {', '.join(names)})")
        if label in found:
            raise GrammarError(f"rule {text!r}: pathway '{label}' is given twice")
        found[label] = body.strip()
    missing = [n for n in names if n not in found]
    if missing:
        raise GrammarError(f"rule {text!r}: no expression for pathway {', '.join(missing)} "
                           f"(pathways: {', '.join(names)})")
    exprs = []
    for k, name in enumerate(names):
        if not found[name]:
            raise GrammarError(f"rule {text!r}: empty expression for pathway '{name}'")
        exprs.append(_parse_one(found[name], space.grammar(k), name))
    return Rule(tuple(exprs), space)


def _parse_one(text: str, grammar: Grammar, pathway: str | None = None) -> Expr:
    where = f"pathway '{pathway}': " if pathway else ""
    shown = text if len(text) <= 80 else text[:77] + "..."
    try:
        with warnings.catch_warnings():  # "invalid decimal literal" and the like: the error says it
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # invalid escape sequences
            tree = ast.parse(text, mode="eval")
        return tuple(_Parser(text, grammar, where).visit(tree.body))
    except SyntaxError as exc:
        raise GrammarError(f"{where}rule {shown!r}: not a valid expression ({exc.msg})") from None
    except (RecursionError, MemoryError):
        raise GrammarError(f"{where}rule {shown!r}: nested too deeply to parse") from None


_BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div"}
_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**",
            ast.Mod: "%", ast.FloorDiv: "//", ast.MatMult: "@", ast.BitXor: "^"}


class _Parser:
    def __init__(self, text: str, grammar: Grammar, where: str = ""):
        self.text, self.grammar, self.where = text, grammar, where

    def fail(self, message: str):
        raise GrammarError(f"{self.where}rule {self.text!r}: {message} ({self.grammar.describe()})")

    def need(self, op: str, token: str) -> None:
        if op not in self.grammar.operators:
            self.fail(f"operator '{token}' ({op}) is not allowed")

    def visit(self, node) -> list:
        if isinstance(node, ast.BinOp):
            op_type = type(node.op)
            if op_type is ast.Pow:
                return self.power(node)
            if op_type not in _BINOPS:
                self.fail(f"unsupported operator '{_SYMBOLS.get(op_type, op_type.__name__)}'")
            name = _BINOPS[op_type]
            self.need(name, _SYMBOLS[op_type])
            return [("op", name)] + self.visit(node.left) + self.visit(node.right)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.UAdd):
                return self.visit(node.operand)
            if not isinstance(node.op, ast.USub):
                self.fail(f"unsupported unary operator '{type(node.op).__name__}'")
            inner = self.visit(node.operand)
            if len(inner) == 1 and inner[0][0] == "const":
                return [("const", -inner[0][1])]
            return negate(inner, self.grammar)
        if isinstance(node, ast.Name):
            if node.id not in self.grammar.names:
                self.fail(f"unknown name '{node.id}'")
            return [("var", node.id)]
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                self.fail(f"unsupported literal {node.value!r}")
            if not math.isfinite(node.value):
                self.fail(f"non-finite number {node.value!r}")
            return [("const", float(node.value))]
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.keywords:
                self.fail("only calls like tanh(x) are allowed")
            name = node.func.id
            if name not in PRIMITIVES:
                self.fail(f"unknown function '{name}'")
            self.need(name, name)
            if len(node.args) != PRIMITIVES[name].arity:
                self.fail(f"'{name}' takes {PRIMITIVES[name].arity} argument(s), got {len(node.args)}")
            return [("op", name)] + [n for a in node.args for n in self.visit(a)]
        self.fail(f"unsupported syntax '{ast.unparse(node)}'")

    def power(self, node) -> list:
        exponent = node.right
        if isinstance(exponent, ast.UnaryOp) and isinstance(exponent.op, ast.USub) \
                and isinstance(exponent.operand, ast.Constant):
            value = -exponent.operand.value
        elif isinstance(exponent, ast.Constant):
            value = exponent.value
        else:
            self.fail(f"exponent '{ast.unparse(exponent)}' must be an integer literal")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value != int(value) or not 1 <= abs(value) <= 64:
            self.fail(f"exponent '{ast.unparse(exponent)}' must be a non-zero integer between -64 and 64")
        base = self.visit(node.left)
        expr = integer_power(base, abs(int(value)), self.grammar)
        if value < 0:
            self.need("div", "/")
            expr = [("op", "div"), ("const", 1.0)] + expr
        return expr


def negate(expr: list, grammar: Grammar) -> list:
    if "neg" in grammar.operators:
        return [("op", "neg")] + expr
    if "mul" in grammar.operators:
        return [("op", "mul"), ("const", -1.0)] + expr
    raise GrammarError(f"cannot negate without 'neg' or 'mul' ({grammar.describe()})")


def integer_power(base: list, n: int, grammar: Grammar) -> list:
    """Prefix tokens of ``base**n`` (n >= 1) with the grammar's square/cube/mul."""
    if n == 1:
        return list(base)
    if n == 2 and "square" in grammar.operators:
        return [("op", "square")] + base
    if n == 3 and "cube" in grammar.operators:
        return [("op", "cube")] + base
    if "mul" not in grammar.operators:
        raise GrammarError(f"power {n} needs 'mul' ({grammar.describe()})")
    if n % 2 == 0 and "square" in grammar.operators:
        return [("op", "square")] + integer_power(base, n // 2, grammar)
    return [("op", "mul")] + list(base) + integer_power(base, n - 1, grammar)


# ---------------------------------------------------------------- sympy

def symbol(name: str) -> sympy.Symbol:
    """The sympy symbol for a grammar terminal (real-valued, named as in the grammar)."""
    return sympy.Symbol(name, real=True)


def expr_to_sympy(expr: Expr) -> sympy.Expr:
    """Exact sympy meaning of a prefix expression (protected operators as plain ones)."""
    def build(i: int):
        kind, value = expr[i]
        if kind == "var":
            return symbol(value), i + 1
        if kind == "const":
            return sympy.Float(value) if value != int(value) else sympy.Integer(int(value)), i + 1
        prim = PRIMITIVES[value]
        args, j = [], i + 1
        for _ in range(prim.arity):
            a, j = build(j)
            args.append(a)
        return prim.sympy_fn(*args), j
    result, end = build(0)
    if end != len(expr):
        raise ValueError(f"malformed expression: {end} of {len(expr)} nodes used")
    return result


def canonical_sympy(e: sympy.Expr) -> sympy.Expr:
    """Expanded, simplified form used for display and equality of rules."""
    return sympy.expand(sympy.simplify(e))


class _RuleTextPrinter(StrPrinter):
    """sympy's text, with |a| written ``abs(a)`` (the grammar's name; sympy reads it back too)."""

    def _print_Abs(self, e):
        return f"abs({self._print(e.args[0])})"


def sympy_text(e: sympy.Expr) -> str:
    """Text that both sympy and ``parse_rule`` read back; floats kept to 6 significant digits."""
    e = e.xreplace({f: sympy.Float(float(f"{float(f):.6g}")) for f in e.atoms(sympy.Float)})
    return _RuleTextPrinter({"full_prec": False}).doprint(e)


def to_latex(e: sympy.Expr, grammar: Grammar, own: dict | None = None, digits: int = 4) -> str:
    """LaTeX with grammar symbols (``own``: name -> symbol overrides) and floats rounded to
    ``digits`` significant digits."""
    e = e.xreplace({f: sympy.Float(float(f"{float(f):.{digits}g}")) for f in e.atoms(sympy.Float)})
    names = {symbol(t.name): (own or {}).get(t.name, t.symbol) for t in grammar.terminals}
    return sympy.latex(e, symbol_names=names, full_prec=False)


def rule_from_sympy(exprs: Sequence[sympy.Expr], space: RuleSpace | Grammar) -> Rule:
    """Build a rule from sympy expressions (one per pathway) using each grammar's operators."""
    space = as_space(space)
    return Rule(tuple(tuple(_from_sympy(e, p.grammar)) for e, p in zip(exprs, space.pathways)), space)


_SYMPY_FUNCS = {sympy.tanh: "tanh", sympy.exp: "exp", sympy.Abs: "abs", sympy.sign: "sign"}


def _from_sympy(e, g: Grammar) -> list:
    if isinstance(e, sympy.Symbol):
        if e.name not in g.names:
            raise GrammarError(f"symbol '{e.name}' is not a terminal ({g.describe()})")
        return [("var", e.name)]
    if e.is_Number:
        if not e.is_real or not e.is_finite:
            raise GrammarError(f"constant {e} is not a finite real number")
        return [("const", float(e))]
    if isinstance(e, sympy.Add):
        terms = sorted(e.args, key=sympy.default_sort_key)
        positive = [t for t in terms if not t.could_extract_minus_sign()]
        negative = [-t for t in terms if t.could_extract_minus_sign()]
        if positive:
            out = _from_sympy(positive[0], g)
            for t in positive[1:]:
                out = [("op", "add")] + out + _from_sympy(t, g)
        else:
            out = negate(_from_sympy(negative[0], g), g)
            negative = negative[1:]
        for t in negative:
            if "sub" in g.operators:
                out = [("op", "sub")] + out + _from_sympy(t, g)
            else:
                out = [("op", "add")] + out + negate(_from_sympy(t, g), g)
        return out
    if isinstance(e, sympy.Mul):
        coeff, rest = e.as_coeff_Mul()
        if coeff == -1:
            return negate(_from_sympy(rest, g), g)
        num, den = sympy.fraction(e)
        if den != 1:
            if "div" not in g.operators:
                raise GrammarError(f"'{e}' needs division ({g.describe()})")
            return [("op", "div")] + _from_sympy(num, g) + _from_sympy(den, g)
        factors = sorted(e.args, key=lambda a: (not a.is_Number, sympy.default_sort_key(a)))
        out = _from_sympy(factors[0], g)
        for f in factors[1:]:
            out = [("op", "mul")] + out + _from_sympy(f, g)
        return out
    if isinstance(e, sympy.Pow):
        base, exp = e.args
        if not exp.is_Integer:
            raise GrammarError(f"power '{e}' has a non-integer exponent")
        n = int(exp)
        if n < 0:
            if "div" not in g.operators:
                raise GrammarError(f"'{e}' needs division ({g.describe()})")
            return [("op", "div"), ("const", 1.0)] + integer_power(_from_sympy(base, g), -n, g)
        return integer_power(_from_sympy(base, g), n, g)
    if e.func in _SYMPY_FUNCS:
        name = _SYMPY_FUNCS[e.func]
        if name not in g.operators:
            raise GrammarError(f"function '{name}' is not allowed ({g.describe()})")
        return [("op", name)] + _from_sympy(e.args[0], g)
    raise GrammarError(f"cannot express '{e}' in {g.describe()}")


# ---------------------------------------------------------------- programs

def _variable_first(expr: Expr) -> list:
    """The same expression with the operands of each product swapped where that puts a lone variable
    first (``square(y)*w`` -> ``w*square(y)``): the program then multiplies by the variable in place
    (MUL_VAR) instead of copying it onto the stack first. Exact: a*b == b*a in IEEE arithmetic."""
    def walk(i):
        kind, value = expr[i]
        if kind != "op":
            return [expr[i]], i + 1
        node = [expr[i]]
        args, j = [], i + 1
        for _ in range(PRIMITIVES[value].arity):
            sub, j = walk(j)
            args.append(sub)
        if value == "mul" and args[0][0][0] != "var" and len(args[1]) == 1 and args[1][0][0] == "var":
            args.reverse()
        for a in args:
            node += a
        return node, j

    out, _ = walk(0)
    return out


# Programs by (id(pathway), expression), and by (id(pathway), shape): an expression whose constants are
# replaced by their prefix positions. Each entry keeps its pathway alive, so that the id is not reused
# while the entry exists; the pathway's own (dataclass) hash cost 0.8 us a lookup. A search packs each
# rule it evaluates twice (semantic key, loss) and meets the same trees with other constants again and
# again (constant optimisation, snapping): rebuilding a program from its shape cost 4 us, compiling it
# 14 us.
_PROGRAMS: dict = {}
_SHAPES: dict = {}
_CACHE_MAX = 1 << 16
_POSITIONS = tuple(("const", float(i)) for i in range(256))


def _remember(cache: dict, key, value) -> None:
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value


def _compile_cached(expr: Expr, pathway: Pathway) -> Program:
    """compile_expr, remembered by the expression and, failing that, by its shape. A program's code
    depends on the order of its constants, not on their values. Programs are never modified after
    compilation."""
    key = (id(pathway), expr)
    hit = _PROGRAMS.get(key)
    if hit is not None:
        return hit[1]
    values, shape = [], []
    for token in expr:
        if token[0] == "const":
            shape.append(_POSITIONS[len(values)] if len(values) < len(_POSITIONS) else ("const", float(len(values))))
            values.append(token[1])
        else:
            shape.append(token)
    shape_key = (id(pathway), tuple(shape))
    known = _SHAPES.get(shape_key)
    if known is None:
        program = compile_expr(shape_key[1], pathway)
        known = (pathway, program, program.consts.astype(np.int64))
        _remember(_SHAPES, shape_key, known)
    program, order = known[1], known[2]
    if values:
        program = Program(program.code, program.arg, np.array(values, np.float64)[order], program.depth)
    if 0.0 not in values:  # 0.0 == -0.0 as keys, not as constants (1/-0.0): those are not remembered
        _remember(_PROGRAMS, key, (pathway, program))
    return program


def compile_expr(expr: Expr, pathway: Pathway | None = None) -> Program:
    """Prefix expression -> postfix VM program; variables are read from the slots ``pathway``
    gives them (default: the catalogue ``primitives.VARIABLES``)."""
    code, arg, consts = [], [], []
    depth = max_depth = 0
    for kind, value in reversed(_variable_first(expr)):  # reversed prefix = postfix of the mirrored tree
        if kind == "var":
            var = pathway.variable(value) if pathway is not None else VARIABLES[value]
            if var.kind not in KINDS or not 0 <= var.slot < 16:
                # superinstructions encode a variable as kind * 16 + slot
                raise ValueError(f"variable '{value}': kind {var.kind}, slot {var.slot} cannot be encoded "
                                 "(kinds 0-3, slots 0-15)")
            code.append(LOAD_OPCODES[var.kind])
            arg.append(var.slot)
            depth += 1
        elif kind == "const":
            code.append(OP_CONST)
            arg.append(len(consts))
            consts.append(value)
            depth += 1
        else:
            prim = PRIMITIVES[value]
            code.append(prim.opcode)
            arg.append(prim.arity)
            depth -= prim.arity - 1
        max_depth = max(max_depth, depth)
    if depth != 1:
        raise ValueError("malformed expression")
    code, arg = _fuse(code, arg)
    return Program(np.array(code, np.int64), np.array(arg, np.int64),
                   np.array(consts, np.float64), max_depth)


_LOAD_KIND = {op: kind for kind, op in LOAD_OPCODES.items()}


def _fuse(code: list, arg: list) -> tuple[list, list]:
    """Replace instruction runs by superinstructions (same result, fewer passes over synapses):
    ``load v, mul, const c, add`` -> AXPB (c + v * top), ``load v, mul`` -> MUL_VAR,
    ``const c, mul`` -> MUL_CONST. Constant indices are unchanged."""
    out_code, out_arg = [], []
    i, n = 0, len(code)
    while i < n:
        op = code[i]
        nxt = code[i + 1] if i + 1 < n else -1
        if op in _LOAD_KIND and nxt == OP_MUL:
            var = _LOAD_KIND[op] * 16 + arg[i]
            if i + 3 < n and code[i + 2] == OP_CONST and code[i + 3] == OP_ADD:
                out_code.append(OP_AXPB)
                out_arg.append(arg[i + 2] * 64 + var)
                i += 4
            else:
                out_code.append(OP_MUL_VAR)
                out_arg.append(var)
                i += 2
        elif op == OP_CONST and nxt == OP_MUL:
            out_code.append(OP_MUL_CONST)
            out_arg.append(arg[i])
            i += 2
        else:
            out_code.append(op)
            out_arg.append(arg[i])
            i += 1
    return out_code, out_arg


# ---------------------------------------------------------------- constants

def snap_candidates(value: float) -> list[float]:
    """Short numbers near ``value``, simplest first: integers, simple fractions, 1-3 digits."""
    out = []
    for cand in [round(value)] + [float(Fraction(value).limit_denominator(d)) for d in (2, 4, 10)] \
            + [float(f"{value:.{d}g}") for d in (1, 2, 3)]:
        if cand not in out and cand != value:
            out.append(float(cand))
    return out


def snap_constants(rule: Rule, loss: Callable[[list[Rule]], np.ndarray], tol: float = 0.01,
                   abs_tol: float = 0.0) -> Rule:
    """Replace each constant by the simplest short number whose loss is within ``tol`` (relative).

    ``loss`` evaluates a batch of rules at once; one batch per constant.
    """
    base = float(loss([rule])[0])
    limit = base * (1 + tol) + abs_tol
    values = rule.constants()
    for i, v in enumerate(values):
        cands = snap_candidates(v)
        if not cands:
            continue
        trials = [rule.with_constants(values[:i] + [c] + values[i + 1:]) for c in cands]
        losses = loss(trials)
        for c, l in zip(cands, losses):
            if l <= limit:
                values[i] = c
                break
    return rule.with_constants(values)


# ---------------------------------------------------------------- cheap simplification

def _to_nested(expr: Expr, i: int = 0):
    kind, value = expr[i]
    if kind != "op":
        return (kind, value), i + 1
    args, j = [], i + 1
    for _ in range(PRIMITIVES[value].arity):
        a, j = _to_nested(expr, j)
        args.append(a)
    return ("op", value, tuple(args)), j


def _flatten(node) -> list:
    if node[0] != "op":
        return [node]
    return [("op", node[1])] + [n for a in node[2] for n in _flatten(a)]


def _const(node):
    return node[1] if node[0] == "const" else None


_FOLD = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
         "div": lambda a, b: a / b if abs(b) > 1e-10 else 0.0, "neg": lambda a: -a,
         "square": lambda a: a * a, "cube": lambda a: a * a * a}


def _simplify(node):
    if node[0] != "op":
        return node
    op, args = node[1], tuple(_simplify(a) for a in node[2])
    consts = [_const(a) for a in args]
    if all(c is not None for c in consts) and op in _FOLD:
        value = _FOLD[op](*consts)
        if math.isfinite(value):
            return ("const", float(value))
    if len(args) == 2:
        a, b = args
        ca, cb = consts
        if op == "add" and ca == 0.0:
            return b
        if op in ("add", "sub") and cb == 0.0:
            return a
        if op == "mul" and (ca == 0.0 or cb == 0.0):
            return ("const", 0.0)
        if op == "mul" and ca == 1.0:
            return b
        if op in ("mul", "div") and cb == 1.0:
            return a
        if op == "div" and ca == 0.0:
            return ("const", 0.0)
        if op == "sub" and a == b:
            return ("const", 0.0)
    return ("op", op, args)


def simplify_identities(expr: Expr) -> Expr:
    """Fold constants and drop x+0, x*1, x*0, x-x, ... without sympy (fast, exact for the VM)."""
    node, _ = _to_nested(expr)
    return tuple(_flatten(_simplify(node)))
