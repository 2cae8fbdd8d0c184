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
    """A LaTeX tabular of Taylor coefficients: term name, monomial (LaTeX) and value; a 95 % interval
    column (value +- 1.96 std_error) when the rows have a ``std_error``."""
    ci = any(row.get("std_error") is not None for row in rows)
    lines = [r"\begin{tabular}{llr" + ("l" if ci else "") + "}", r"\hline",
             r"term & monomial & $\theta$" + (r" & 95 \% interval" if ci else "") + r" \\", r"\hline"]
    for row in rows:
        name = row["term"].replace("_", r"\_")
        extra = ""
        if ci:
            e = row.get("std_error")
            extra = " & " + ("" if e is None else rf"$\pm$ {_float(1.959963984540054 * e)}")
        value = f"{float(row['value']):.6g}" if ci else _float(float(row["value"]))
        lines.append(rf"\texttt{{{name}}} & ${row['latex']}$ & {value}{extra} \\")
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines)
