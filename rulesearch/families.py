"""Parametric rule families that run on the same VM as GP rules.

A family maps a parameter vector to a rule. Each family builds one *template*
program once, whose constant slots point into the extended parameter vector
``[params..., fixed constants...]``; a batch of parameter vectors is then packed
by copying the template's code and gathering constants (no per-candidate
compilation), so a CMA-ES generation is one population evaluation.

- ``TaylorFamily``: dw/eta = sum over exponent tuples of theta_abc x^a y^b w^c,
  powers 0..max_power per variable (27 terms for x, y, w at power 2), evaluated
  in nested Horner form.
- ``MLPFamily``: dw/eta = MLP(chosen terminals), hidden layers of tanh/sigmoid/linear units.
- ``PathwayFamilies``: one family per plastic pathway, parameters concatenated in pathway
  order and named ``ff.theta_x1_y1_w0``.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from .errors import GrammarError
from .grammar import Grammar
from .rules import Rule, RuleSpace, compile_expr, integer_power, parse_rule, sympy_text, to_latex
from .vm import PackedPrograms, interleave

ADD, MUL, TANH = ("op", "add"), ("op", "mul"), ("op", "tanh")


def _sum(parts: Sequence[list]) -> list:
    out = list(parts[0])
    for p in parts[1:]:
        out = [ADD] + out + list(p)
    return out


class _Template:
    """A compiled program whose constants are gathered from the extended parameter vector."""

    def __init__(self, expr: list, n_params: int, fixed: Sequence[float]):
        self.fixed = np.asarray(fixed, float)
        program = compile_expr(tuple(expr))
        self.code, self.arg, self.depth = program.code, program.arg, program.depth
        self.index = program.consts.astype(np.int64)  # const slot -> position in [params, fixed]
        self.n_params = n_params

    def pack(self, params: np.ndarray) -> PackedPrograms:
        params = np.atleast_2d(np.asarray(params, float))
        if params.shape[1] != self.n_params:
            raise ValueError(f"expected {self.n_params} parameters per candidate, got {params.shape[1]}")
        n = params.shape[0]
        ext = np.concatenate([params, np.broadcast_to(self.fixed, (n, len(self.fixed)))], axis=1)
        return PackedPrograms(np.tile(self.code, n), np.tile(self.arg, n),
                              np.ascontiguousarray(ext[:, self.index]).ravel(),
                              np.arange(n + 1, dtype=np.int64) * len(self.code),
                              np.arange(n + 1, dtype=np.int64) * len(self.index), self.depth)


def variable_tokens(variable: str, grammar: Grammar) -> list:
    """Prefix tokens of a family input: a grammar terminal, or an expression such as ``r - rbar``."""
    if variable in grammar.names:
        return [("var", variable)]
    if variable.isidentifier():
        raise ValueError(f"Invalid variable {variable!r}: not a terminal of grammar '{grammar.name}' "
                         f"(valid: {', '.join(grammar.names)}, or an expression over them such as 'r - rbar')")
    try:
        return list(parse_rule(variable, grammar).exprs[0])
    except GrammarError as exc:
        raise ValueError(f"Invalid variable {variable!r}: not an expression over the terminals of grammar "
                         f"'{grammar.name}' ({exc})") from None


def variable_label(variable: str, grammar: Grammar) -> str:
    """``x`` for a terminal, ``(r-rbar)`` for an expression (used in term names and monomials)."""
    return variable if variable in grammar.names else "(" + variable.replace(" ", "") + ")"


def _check_variables(grammar: Grammar, variables: Sequence[str], family: str) -> None:
    if not variables or len(set(variables)) != len(variables):
        raise ValueError(f"{family} family: expected distinct variables, got {list(variables)}")
    for v in variables:
        variable_tokens(v, grammar)


@dataclass(frozen=True, eq=False)
class TaylorFamily:
    """Truncated Taylor (Volterra) expansion over chosen grammar terminals.

    ``exclude``: term names fixed at zero (a term mask); they are not parameters.
    """

    grammar: Grammar
    variables: tuple[str, ...]
    max_power: int | tuple[int, ...] = 2  # one for all variables, or one per variable
    exclude: tuple[str, ...] = ()
    kind: str = field(default="taylor", init=False)

    def __post_init__(self):
        _check_variables(self.grammar, self.variables, "Taylor")
        if len(self.powers) != len(self.variables) or not all(0 <= p <= 6 for p in self.powers):
            raise ValueError(f"max_power {self.max_power}: expected 0..6, or one such number per variable "
                             f"({len(self.variables)})")
        all_names = [self.term_name(e) for e in self.all_terms]
        bad = [n for n in self.exclude if n not in all_names]
        if bad:
            raise ValueError(f"excluded term {bad[0]!r} is not a term of this family "
                             f"(terms look like {all_names[min(4, len(all_names) - 1)]})")
        object.__setattr__(self, "_template", None)

    @property
    def powers(self) -> tuple[int, ...]:
        """Maximum power of each variable."""
        if isinstance(self.max_power, int):
            return (self.max_power,) * len(self.variables)
        return tuple(self.max_power)

    @property
    def all_terms(self) -> list[tuple[int, ...]]:
        return list(itertools.product(*(range(p + 1) for p in self.powers)))

    @property
    def terms(self) -> list[tuple[int, ...]]:
        """Exponent tuples of the fitted terms, in parameter order (first variable slowest)."""
        return [e for e in self.all_terms if self.term_name(e) not in self.exclude]

    def term_name(self, exponents: Sequence[int]) -> str:
        """``theta_x1_y1_w0`` for x*y; expression inputs appear as ``(r-rbar)1``."""
        return "theta_" + "_".join(f"{variable_label(v, self.grammar)}{p}" for v, p in zip(self.variables, exponents))

    @property
    def names(self) -> list[str]:
        return [self.term_name(e) for e in self.terms]

    @property
    def n_params(self) -> int:
        return len(self.terms)

    def monomial_text(self, exponents: Sequence[int]) -> str:
        """``x*y`` for (1, 1, 0); ``1`` for the constant term; an expression input is printed as the
        rule line prints it (``x*(r - rbar)``)."""
        labels = [v if v in self.grammar.names else f"({parse_rule(v, self.grammar).text()})"
                  for v in self.variables]
        parts = [v if p == 1 else f"{v}**{p}" for v, p in zip(labels, exponents) if p]
        return "*".join(parts) or "1"

    def rule(self, coefficients: Sequence[float], threshold: float = 0.0) -> Rule:
        """sum_k c_k * monomial_k over terms with |c_k| > threshold * max|c| (readable form: each
        monomial a product of the family's variables, ``1.05*x*(r - rbar)``; its ``canonical()``
        would expand expression inputs into ``1.05*r*x - 1.05*rbar*x``)."""
        coefficients = np.asarray(coefficients, float)
        if coefficients.shape != (self.n_params,):
            raise ValueError(f"expected {self.n_params} coefficients, got shape {coefficients.shape}")
        cut = threshold * np.abs(coefficients).max(initial=0.0)
        g = self.grammar
        parts = []
        for c, exps in zip(coefficients, self.terms):
            if c == 0.0 or abs(c) <= cut:
                continue
            term = [("const", float(c))]
            for v, p in zip(self.variables, exps):
                if p:
                    term = [MUL] + term + integer_power(variable_tokens(v, g), p, g)
            parts.append(term)
        return Rule((tuple(_sum(parts) if parts else [("const", 0.0)]),), g)

    def _readable_sympy(self, coefficients: Sequence[float], threshold: float):
        """The terms of ``rule`` as sympy, each a coefficient times a product of the family's variables.
        Expression inputs are kept unevaluated: sympy would otherwise distribute a lone coefficient
        over them (0.07*(r - rbar) -> 0.07*r - 0.07*rbar)."""
        import sympy
        coefficients = np.asarray(coefficients, float)
        if coefficients.shape != (self.n_params,):
            raise ValueError(f"expected {self.n_params} coefficients, got shape {coefficients.shape}")
        cut = threshold * np.abs(coefficients).max(initial=0.0)
        factors = [parse_rule(v, self.grammar).to_sympy()[0] for v in self.variables]
        factors = [f if v in self.grammar.names else sympy.UnevaluatedExpr(f) for v, f in zip(self.variables, factors)]

        def number(c):  # a coefficient that prints as 1 (6 significant digits) is written as none
            return sympy.Integer(int(np.sign(c))) if float(f"{abs(c):.6g}") == 1.0 else sympy.Float(c)

        terms = [number(c) * sympy.Mul(*[f ** p for f, p in zip(factors, exps)])
                 for c, exps in zip(coefficients, self.terms) if c != 0.0 and abs(c) > cut]
        return sympy.Add(*terms) if terms else sympy.Integer(0)

    def text(self, coefficients: Sequence[float], threshold: float = 0.0) -> str:
        """The readable rule as text, in the family's variables: ``-0.05*w + 1.05*x*(r - rbar)``
        (``rule(...).text()`` is the same function; sympy may expand a lone ``c*(r - rbar)`` there)."""
        return sympy_text(self._readable_sympy(coefficients, threshold))

    def latex(self, coefficients: Sequence[float], threshold: float = 0.0, own: dict | None = None) -> str:
        """The readable rule's right-hand side in LaTeX, in the family's variables:
        ``- 0.05 w_{ij} + 1.05 x_j \\left(r - \\bar{r}\\right)`` (``own``: symbol overrides)."""
        return to_latex(self._readable_sympy(coefficients, threshold), self.grammar, own)

    def _horner(self, order: tuple, exponents: dict, index: dict) -> list:
        """Nested Horner form over the variables in ``order`` (outermost first). Outer variables
        are read least often, so expression inputs (r - rbar) go outside; innermost steps
        ``c + v * (...)`` over terminals compile to one VM superinstruction each."""
        if len(exponents) == len(self.variables):
            key = tuple(exponents[i] for i in range(len(self.variables)))
            return [("const", float(index.get(key, self.n_params)))]  # masked terms -> the fixed 0
        level = order[len(exponents)]
        v = variable_tokens(self.variables[level], self.grammar)
        coeffs = [self._horner(order, {**exponents, level: p}, index) for p in range(self.powers[level] + 1)]
        h = coeffs[-1]
        for c in reversed(coeffs[:-1]):
            h = [ADD] + c + [MUL] + v + h
        return h

    def pack(self, params: np.ndarray) -> PackedPrograms:
        """Programs for a batch of coefficient vectors (n, n_params), nested Horner form."""
        if self._template is None:
            index = {e: k for k, e in enumerate(self.terms)}
            order = tuple(sorted(range(len(self.variables)), key=lambda i: self.variables[i] in self.grammar.names))
            object.__setattr__(self, "_template", _Template(self._horner(order, {}, index), self.n_params, [0.0]))
        return self._template.pack(params)

    def initial(self, rng: np.random.Generator) -> np.ndarray:
        return np.zeros(self.n_params)

    def coefficient_rows(self, params: Sequence[float]) -> list[dict]:
        """One row per term: name, monomial text, exponents (in ``variables`` order), value."""
        return [{"term": n, "monomial": self.monomial_text(e), "exponents": e, "value": float(v),
                 "family": self} for n, e, v in zip(self.names, self.terms, params)]

    def spec(self) -> dict:
        return {"family": "taylor", "variables": list(self.variables),
                "max_power": self.max_power if isinstance(self.max_power, int) else list(self.max_power),
                "exclude": list(self.exclude), "names": self.names}


# No relu: (z + |z|)/2 repeats z, so the program would grow exponentially with depth.
MLP_ACTIVATIONS = ("tanh", "sigmoid", "linear")
MLP_FIXED = (0.5, 1.0)  # constants the activations use, appended to the parameters


@dataclass(frozen=True, eq=False)
class MLPFamily:
    """dw/eta = MLP(u), u = chosen terminals; parameters layer by layer, weights (row-major) then biases.

    The output layer is linear. Parameters: for each layer (fan_out, fan_in) weights then fan_out biases.
    """

    grammar: Grammar
    variables: tuple[str, ...]
    hidden: tuple[int, ...] = (10,)
    activation: str = "tanh"
    kind: str = field(default="mlp", init=False)

    def __post_init__(self):
        _check_variables(self.grammar, self.variables, "MLP")
        if self.activation not in MLP_ACTIVATIONS:
            raise ValueError(f"Invalid activation {self.activation!r} for the MLP family. "
                             f"Valid options: {', '.join(MLP_ACTIVATIONS)}")
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"MLP hidden sizes {list(self.hidden)}: expected positive integers")
        object.__setattr__(self, "_template", None)

    @property
    def layers(self) -> list[tuple[int, int]]:
        sizes = [len(self.variables), *self.hidden, 1]
        return list(zip(sizes[1:], sizes[:-1]))  # (fan_out, fan_in)

    @property
    def names(self) -> list[str]:
        out = []
        for k, (n_out, n_in) in enumerate(self.layers):
            out += [f"W{k}_{i}_{j}" for i in range(n_out) for j in range(n_in)]
            out += [f"b{k}_{i}" for i in range(n_out)]
        return out

    @property
    def n_params(self) -> int:
        return sum(o * i + o for o, i in self.layers)

    def _act(self, z: list, value) -> list:
        half, one = value(self.n_params), value(self.n_params + 1)  # the fixed constants 0.5, 1
        if self.activation == "tanh":
            return [TANH] + z
        if self.activation == "sigmoid":  # (1 + tanh(z/2)) / 2
            return [MUL, half, ADD, one, TANH, MUL, half] + z
        return z

    def _expr(self, value) -> list:
        """Prefix tokens; ``value(k)`` gives the constant token of parameter k."""
        units = [variable_tokens(v, self.grammar) for v in self.variables]
        k = 0
        last = len(self.layers) - 1
        for layer, (n_out, n_in) in enumerate(self.layers):
            w0, b0 = k, k + n_out * n_in
            new = []
            for i in range(n_out):
                z = _sum([[MUL, value(w0 + i * n_in + j)] + units[j] for j in range(n_in)] + [[value(b0 + i)]])
                new.append(z if layer == last else self._act(z, value))
            units = new
            k = b0 + n_out
        return units[0]

    def pack(self, params: np.ndarray) -> PackedPrograms:
        """Programs for a batch of parameter vectors (n, n_params)."""
        if self._template is None:
            expr = self._expr(lambda k: ("const", float(k)))
            object.__setattr__(self, "_template", _Template(expr, self.n_params, MLP_FIXED))
        return self._template.pack(params)

    def rule(self, params: Sequence[float], threshold: float = 0.0) -> Rule:
        """The MLP as one expression tree (for the VM, sympy and checks; not meant to be read)."""
        params = np.asarray(params, float)
        if params.shape != (self.n_params,):
            raise ValueError(f"expected {self.n_params} parameters, got shape {params.shape}")
        ext = np.concatenate([params, MLP_FIXED])
        return Rule((tuple(self._expr(lambda k: ("const", float(ext[k])))),), self.grammar)

    def initial(self, rng: np.random.Generator) -> np.ndarray:
        """Hidden weights ~ N(0, 1/fan_in), biases and output layer 0 (so the initial rule is dw = 0)."""
        out = []
        last = len(self.layers) - 1
        for layer, (n_out, n_in) in enumerate(self.layers):
            scale = 0.0 if layer == last else 1.0 / np.sqrt(n_in)
            out += [rng.normal(0.0, scale, n_out * n_in) if scale else np.zeros(n_out * n_in), np.zeros(n_out)]
        return np.concatenate(out)

    def spec(self) -> dict:
        return {"family": "mlp", "variables": list(self.variables), "hidden": list(self.hidden),
                "activation": self.activation, "names": self.names}


@dataclass(frozen=True, eq=False)
class PathwayFamilies:
    """One family per plastic pathway of ``space``; parameters concatenated in pathway order."""

    families: tuple
    space: RuleSpace

    @property
    def kind(self) -> str:
        return self.families[0].kind

    @property
    def names(self) -> list[str]:
        return [f"{p}.{n}" for p, f in zip(self.space.names, self.families) for n in f.names]

    @property
    def n_params(self) -> int:
        return sum(f.n_params for f in self.families)

    def _slices(self, params: np.ndarray):
        k = 0
        for f in self.families:
            yield f, params[..., k:k + f.n_params]
            k += f.n_params

    def pack(self, params: np.ndarray) -> PackedPrograms:
        params = np.atleast_2d(np.asarray(params, float))
        if params.shape[1] != self.n_params:
            raise ValueError(f"expected {self.n_params} parameters per candidate, got {params.shape[1]}")
        return interleave([f.pack(p) for f, p in self._slices(params)])

    def rule(self, params: Sequence[float], threshold: float = 0.0) -> Rule:
        params = np.asarray(params, float)
        return Rule(tuple(f.rule(p, threshold).exprs[0] for f, p in self._slices(params)), self.space)

    def text(self, params: Sequence[float], threshold: float = 0.0) -> str:
        """``ff: ...; lat: ...``, each pathway's rule in its family's variables (Taylor)."""
        return "; ".join(f"{n}: {f.text(p, threshold)}"
                         for n, (f, p) in zip(self.space.names, self._slices(np.asarray(params, float))))

    def latex_parts(self, params: Sequence[float], threshold: float = 0.0) -> list[str]:
        """Each pathway's right-hand side in LaTeX, in its family's variables (Taylor)."""
        return [f.latex(p, threshold, pathway.symbols())
                for pathway, (f, p) in zip(self.space.pathways, self._slices(np.asarray(params, float)))]

    def initial(self, rng: np.random.Generator) -> np.ndarray:
        return np.concatenate([f.initial(rng) for f in self.families])

    def coefficient_rows(self, params: Sequence[float]) -> list[dict]:
        rows = []
        for name, (f, p) in zip(self.space.names, self._slices(np.asarray(params, float))):
            rows += [{**r, "term": f"{name}.{r['term']}", "pathway": name} for r in f.coefficient_rows(p)]
        return rows

    def spec(self) -> dict:
        return {"family": self.kind, "pathways": {n: f.spec() for n, f in zip(self.space.names, self.families)},
                "names": self.names}


@dataclass(frozen=True, eq=False)
class DoubletFamily:
    """The published spike-pair (doublet) rule of Confavreux et al. (2023), per plastic pathway of
    a spiking network:

        pre:  dw/eta = alpha + kappa * x_post     (at each presynaptic spike)
        post: dw/eta = beta + gamma * x_pre       (at each postsynaptic spike)

    with the trace time constants tau_pre and tau_post fitted too (six parameters per pathway).
    The time constants are searched as log(tau / TAU_REFERENCE_MS), so that CMA-ES steps in them are
    relative and of the coefficients' scale; ``coefficient_rows`` reports them in ms.
    ``space``: the task's rule space, whose parts come in (pre, post) pairs per pathway.
    """

    space: RuleSpace
    TAU_REFERENCE_MS = 20.0
    kind = "doublet"
    PER_PATHWAY = ("log_tau_pre", "log_tau_post", "alpha", "beta", "gamma", "kappa")

    def __post_init__(self):
        names = self.space.names
        if len(names) % 2 or any(not a.endswith("pre") or not b.endswith("post")
                                 for a, b in zip(names[::2], names[1::2])):
            raise ValueError(f"family 'doublet' needs pre and post parts per pathway (event-driven rules of a "
                             f"spiking network); this task's rules have parts {', '.join(names)}")
        for p in self.space.pathways:
            missing = [v for v in ("x_pre", "x_post") if v not in p.grammar.names]
            if missing:
                raise ValueError(f"family 'doublet' reads {', '.join(missing)}, which grammar "
                                 f"'{p.grammar.name}' of part '{p.name}' does not have")
        pathways = [n[:-len("pre")].rstrip(".") for n in names[::2]]
        object.__setattr__(self, "pathways", pathways)
        pre = _Template([ADD, ("const", 0), MUL, ("const", 1), ("var", "x_post")], 2, ())
        post = _Template([ADD, ("const", 0), MUL, ("const", 1), ("var", "x_pre")], 2, ())
        object.__setattr__(self, "_templates", (pre, post))

    @property
    def names(self) -> list[str]:
        return [f"{p}.{n}" if p else n for p in self.pathways for n in self.PER_PATHWAY]

    @property
    def n_params(self) -> int:
        return 6 * len(self.pathways)

    def pack(self, params: np.ndarray) -> PackedPrograms:
        params = np.atleast_2d(np.asarray(params, float))
        if params.shape[1] != self.n_params:
            raise ValueError(f"expected {self.n_params} parameters per candidate, got {params.shape[1]}")
        per = params.reshape(len(params), len(self.pathways), 6)
        packed = interleave([q for k in range(len(self.pathways)) for q in self.pathway_packs(per[:, k])])
        taus = self.TAU_REFERENCE_MS * np.exp(np.clip(per[:, :, :2], -5.0, 5.0))  # (n, pathways, 2) in ms
        return replace(packed, extras=np.ascontiguousarray(taus.reshape(len(params), -1)))

    def pathway_packs(self, per: np.ndarray) -> tuple[PackedPrograms, PackedPrograms]:
        """One pathway's pre and post programs for n candidates, from their parameters (n, 6) in
        ``PER_PATHWAY`` order (the taus are not part of the programs)."""
        pre, post = self._templates
        return pre.pack(per[:, [2, 5]]), post.pack(per[:, [3, 4]])  # (alpha, kappa), (beta, gamma)

    def taus_ms(self, params: Sequence[float]) -> np.ndarray:
        """(pathways, 2): tau_pre and tau_post in ms."""
        return self.pack(np.asarray(params, float)[None]).extras.reshape(-1, 2)

    def rule(self, params: Sequence[float], threshold: float = 0.0) -> Rule:
        per = np.asarray(params, float).reshape(len(self.pathways), 6)
        parts = []
        for k, p in enumerate(self.pathways):
            alpha, beta, gamma, kappa = (float(v) for v in per[k, 2:])
            parts += [f"{alpha!r} + {kappa!r}*x_post", f"{beta!r} + {gamma!r}*x_pre"]
        return Rule(tuple(parse_rule(t, self.space.grammar(i)).exprs[0] for i, t in enumerate(parts)), self.space)

    def describe(self, params: Sequence[float]) -> str:
        """The rule with its time constants, for people."""
        taus = self.taus_ms(params)
        text = self.rule(params).canonical().text()
        return text + "; " + ", ".join(f"{p + '.' if p else ''}tau_pre {a:.1f} ms, {p + '.' if p else ''}tau_post "
                                       f"{b:.1f} ms" for p, (a, b) in zip(self.pathways, taus))

    def initial(self, rng: np.random.Generator) -> np.ndarray:
        return np.zeros(self.n_params)  # tau = 20 ms, no plasticity; CMA-ES spreads from there

    def coefficient_rows(self, params: Sequence[float]) -> list[dict]:
        per = np.asarray(params, float).reshape(len(self.pathways), 6)
        taus = self.taus_ms(params)
        rows = []
        for k, p in enumerate(self.pathways):
            prefix = f"{p}." if p else ""
            rows += [{"term": prefix + "tau_pre_ms", "monomial": "tau_pre (ms)", "value": float(taus[k, 0])},
                     {"term": prefix + "tau_post_ms", "monomial": "tau_post (ms)", "value": float(taus[k, 1])},
                     {"term": prefix + "alpha", "monomial": "pre: 1", "value": float(per[k, 2])},
                     {"term": prefix + "kappa", "monomial": "pre: x_post", "value": float(per[k, 5])},
                     {"term": prefix + "beta", "monomial": "post: 1", "value": float(per[k, 3])},
                     {"term": prefix + "gamma", "monomial": "post: x_pre", "value": float(per[k, 4])}]
        return rows

    def spec(self) -> dict:
        return {"family": "doublet", "names": self.names}


FAMILIES = ("taylor", "mlp", "doublet")


def family_from_spec(spec: dict, space: Grammar | RuleSpace):
    """Rebuild a family from ``spec()`` (as stored in a fit folder) over a grammar or, for fits of
    several pathways, the task's rule space."""
    if spec.get("family") == "doublet":
        if not isinstance(space, RuleSpace):
            raise ValueError("a doublet fit needs its task's rule space")
        return DoubletFamily(space)
    if "pathways" in spec:
        if not isinstance(space, RuleSpace) or list(spec["pathways"]) != list(space.names):
            raise ValueError(f"the fit's pathways {list(spec['pathways'])} are not the task's")
        return PathwayFamilies(tuple(family_from_spec(spec["pathways"][n], p.grammar)
                                     for n, p in zip(space.names, space.pathways)), space)
    grammar = space.grammar(0) if isinstance(space, RuleSpace) else space
    if spec.get("family") == "taylor":
        power = spec["max_power"]
        power = int(power) if isinstance(power, (int, float)) else tuple(int(p) for p in power)
        return TaylorFamily(grammar, tuple(spec["variables"]), power, tuple(spec.get("exclude", ())))
    if spec.get("family") == "mlp":
        return MLPFamily(grammar, tuple(spec["variables"]), tuple(int(h) for h in spec["hidden"]),
                         spec["activation"])
    raise ValueError(f"unknown family {spec.get('family')!r}: expected one of {', '.join(FAMILIES)}")
