"""LaTeX output: a rule as an equation, a Pareto front as a table."""
from __future__ import annotations

from typing import Sequence


def _float(value: float) -> str:
    return f"{value:.3g}".replace("e-0", "e-").replace("e+0", "e")


def latex_equation(latex_rhs: str) -> str:
    """``\\Delta w_{ij} = <rhs>`` (pass the right-hand side only)."""
    return rf"\Delta w_{{ij}} = {latex_rhs}"


def latex_table(rows: Sequence[dict], pathways: dict | None = None) -> str:
    """A LaTeX tabular of a front: complexity, loss and the rule (one column per pathway when
    ``pathways`` maps names to {"symbol": ...}), the selected row marked."""
    names = list(pathways or {})
    heads = [f"${pathways[n]['symbol']}$" for n in names] if names else [r"$\Delta w_{ij}$"]
    lines = [r"\begin{tabular}{rr" + "l" * len(heads) + "}", r"\hline",
             "complexity & loss & " + " & ".join(heads) + r" \\", r"\hline"]
    for row in rows:
        mark = r" $\star$" if str(row["selected"]) == "1" else ""
        cells = [f"${row['latex_' + n]}$" for n in names] if names else [f"${row['latex']}$"]
        lines.append(rf"{row['complexity']} & {_float(float(row['loss']))} & " + " & ".join(cells) + rf"{mark} \\")
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines)


def latex_coefficient_table(rows: Sequence[dict]) -> str:
    """A LaTeX tabular of Taylor coefficients: term name, monomial (LaTeX) and value."""
    lines = [r"\begin{tabular}{llr}", r"\hline", r"term & monomial & $\theta$ \\", r"\hline"]
    for row in rows:
        name = row["term"].replace("_", r"\_")
        lines.append(rf"\texttt{{{name}}} & ${row['latex']}$ & {_float(float(row['value']))} \\")
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines)
