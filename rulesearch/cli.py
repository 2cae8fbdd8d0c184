"""Command line: parse arguments, call the API, print. Bad input -> one line, exit code 2."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .errors import DataError, GrammarError, TaskError

EXIT_BAD_INPUT, EXIT_INTERRUPTED = 2, 130


def _console():
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:  # rich would exit with 1 itself: main decides instead
            self.quiet = True
            raise BrokenPipeError

    return _Console(highlight=False)


READ_ONLY_COMMANDS = ("show", "latex")  # a reader that stops early (| head) cuts nothing short


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that its remaining buffer does not fail again at exit
    (the recipe of Python's documentation on SIGPIPE)."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (captured output)
        pass


def _print_front(rows, title: str) -> None:
    from rich.table import Table
    table = Table(title=title)
    for col, justify in (("", "left"), ("complexity", "right"), ("loss", "right"), ("rule", "left")):
        table.add_column(col, justify=justify)
    for r in rows:
        table.add_row("*" if str(r["selected"]) == "1" else "", str(r["complexity"]),
                      f"{float(r['loss']):.4g}", r["expression"])
    _console().print(table)


def cmd_evolve(args) -> int:
    from .results import RUN_FILE, read_json
    from .runs import RunSpec, evolve_run, front_rows
    if args.resume and args.out and Path(args.out) != Path(args.resume):
        raise ValueError("--out and --resume name different folders: a resumed run writes into its own folder")
    spec = RunSpec(args.task, tuple(args.set), args.data, args.seed, args.population,
                   args.generations, args.workers, args.evaluator, args.scheduler)
    bar, progress, chunks, stage = _progress_bar("evolve")
    with bar:
        result, out = evolve_run(spec, args.resume or args.out, bool(args.resume), progress, sys.argv, chunks,
                                 args.force, stage)
    _print_front(front_rows(result), f"Pareto front ({result.generations} generations, {result.evaluations} evaluations, "
                 f"{result.elapsed:.1f} s)")
    sel = result.selected
    print(f"selected: {sel.expression}   (loss {sel.loss:.4g}, complexity {sel.complexity})")
    if result.selection and result.selection.get("method") in ("noise", "heldout"):
        _explain_selection(front_rows(result), result.selection)
    info = read_json(out / RUN_FILE)
    _print_fit_check(info.get("fit_seed"))
    _print_indistinguishable(info.get("indistinguishable"))
    if info.get("heldout"):
        _print_heldout(info["heldout"])
    print(f"written: {out}")
    if result.stopped == "interrupted":
        print(f"interrupted: the checkpoint is saved; continue with --resume {out}")
        return EXIT_INTERRUPTED
    return 0


def _progress_bar(name: str):
    """A rich progress bar, the ``progress(generation, total, best, evaluations)`` callback, the
    ``chunks(done, total)`` callback of a distributed evaluator and the ``stage(text)`` callback that
    names a long step outside the generations (a seed fit, judging the front)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("best loss {task.fields[best]}"), TextColumn("{task.fields[evals]} evals"),
               TextColumn("{task.fields[chunks]}"), TimeElapsedColumn())
    terminal = sys.stderr.isatty() or sys.stdout.isatty()
    bar = Progress(*columns, console=_console(), transient=False, disable=not terminal)
    # Numba compiles the kernels on the first evaluation (about 20 s, cached afterwards).
    job = bar.add_task("first run compiles kernels", total=None, best="-", evals=0, chunks="")
    lines = progress_lines(name, stream=sys.stdout)  # logs and CI: plain lines instead of a bar

    def progress(gen, total, best, evals):
        bar.update(job, description=name, completed=gen, total=total, best=f"{best:.4g}", evals=evals)
        if not terminal:
            lines(gen, total, best, evals)

    def chunks(done, total):
        bar.update(job, chunks=f"chunks {done}/{total}")

    def stage(text):
        bar.update(job, description=text)
        if not terminal:
            print(f"{name}: {text}", file=sys.stdout, flush=True)
    return bar, progress, chunks, stage


def progress_lines(name: str, every_s: float = 10.0, stream=None):
    """A ``progress(generation, total, best, evaluations)`` callback printing one plain line at the
    first and last generation and at most every ``every_s`` seconds between (for logs and CI)."""
    import time
    start, last = time.monotonic(), [-float("inf")]

    def progress(gen, total, best, evals):
        now = time.monotonic()
        if gen in (0, 1, total) or now - last[0] >= every_s:
            last[0] = now
            step = f"generation {gen}/{total}" if total is not None else f"iteration {gen}"  # None: open-ended
            print(f"{name}: {step}, best loss {best:.4g}, {evals} evaluations, "
                  f"{now - start:.0f} s", file=stream or sys.stderr, flush=True)
    return progress


def _print_heldout(h: dict | None) -> None:
    if not h:
        print("held-out trials: none (generated inputs, or fit.holdout = 0)")
        return
    if "rate_hz" in h:  # spiking tasks: the set point on drives the search never saw
        per = ", ".join(f"{d:g}: {r:.2f} Hz / {c:.2f}" for d, r, c in zip(h["drives"], h["rate_hz"], h["balance"]))
        print(f"held-out drives (output rate / inhibitory-excitatory tuning correlation): {per}; "
              f"target {h['target_rate_hz']:g} Hz, loss {h['loss']:.4g}" + ("; weights blew up" if h["blown"] else ""))
        return
    if h.get("blown"):
        where = (f"{h['trials']}, {h['decisions']} decisions" if "decisions" in h else
                 f"{h['trials']}, {h['encounters']} recorded encounters" if "encounters" in h else f"{h['trials']} trials")
        print(f"held-out ({where}): the rule's weights blew up (left the weight bound or became NaN): "
              "no held-out loss or R^2")
        return
    if "encounters" in h:  # the choice model's output against recorded activity
        line = (f"held-out ({h['trials']}, {h['encounters']} recorded encounters): loss {h['loss']:.4g}, "
                f"output R^2 vs data {h['activity_r2_data']:.4f}")
        if "weight_r2" in h:
            line += (f"; vs true rule {h['true_rule']} (loss {h['true_rule_loss']:.4g}): weight R^2 "
                     f"{h['weight_r2']:.4f}, output R^2 {h['activity_r2']:.4f}")
        print(line)
        return
    if "deviance_explained" in h:  # choice tasks
        line = (f"held-out ({h['trials']}, {h['decisions']} decisions): cross-entropy {h['loss']:.4g}, "
                f"deviance explained {100 * h['deviance_explained']:.1f} %")
        if "weight_r2" in h:
            line += (f"; vs true rule {h['true_rule']} (cross-entropy {h['true_rule_loss']:.4g}): "
                     f"weight R^2 {h['weight_r2']:.4f}")
        print(line)
        return
    line = (f"held-out ({h['trials']} trials): loss {h['loss']:.4g}, activity R^2 vs data "
            f"{h['activity_r2_data']:.4f}")
    if "weight_r2" in h:
        line += (f"; vs true rule {h['true_rule']}: weight R^2 {h['weight_r2']:.4f}, "
                 f"activity R^2 {h['activity_r2']:.4f}")
    print(line)


def cmd_fit(args) -> int:
    from rich.table import Table

    from .runs import RunSpec, fit_run, largest_terms
    if args.resume and args.out and Path(args.out) != Path(args.resume):
        raise ValueError("--out and --resume name different folders: a resumed run writes into its own folder")
    overrides = tuple(args.set) + ((f'fit.family="{args.family}"',) if args.family else ())
    spec = RunSpec(args.task, overrides, args.data, args.seed, None, args.generations, args.workers,
                   args.evaluator, args.scheduler)
    bar, progress, chunks, _ = _progress_bar("fit")
    with bar:
        result, info, out = fit_run(spec, args.resume or args.out, bool(args.resume), progress, sys.argv, chunks,
                                    args.force)
    family = info["family"]
    steps = "Levenberg-Marquardt iterations" if info.get("optimizer") == "lm" else "generations"
    print(f"{family['family']} fit: loss {result.loss:.4g} (penalised {result.objective:.4g}) after "
          f"{result.generations} {steps}, {result.evaluations} evaluations, {result.elapsed:.1f} s "
          f"({result.stopped})")
    if family["family"] == "taylor" and info.get("optimizer") == "lm":
        _print_lm_fit(out, info)
    elif family["family"] == "taylor":
        from .results import COEFFICIENTS_FILE, read_csv
        table = Table(title="largest terms (dw = eta * sum of terms)")
        for col in ("term", "monomial", "value"):
            table.add_column(col, justify="right" if col == "value" else "left")
        for r in largest_terms(read_csv(out / COEFFICIENTS_FILE)):
            table.add_row(r["term"], r["monomial"], f"{float(r['value']):+.4g}")
        _console().print(table)
        print(f"rule (terms above 5% of the largest): {info['rule']}")
    elif info.get("rule"):
        print(f"rule: {info['rule']}")
    _print_heldout(info["heldout"])
    print(f"written: {out}")
    if result.stopped == "interrupted":
        print(f"interrupted: the checkpoint is saved; continue with --resume {out}")
        return EXIT_INTERRUPTED
    return 0


def _print_lm_fit(run: Path, info: dict, flat_shown: int = 8) -> None:
    """The selected terms with their 95 % intervals, what selection removed, and the directions of
    coefficient space the data do not determine (an LM fit's report)."""
    from rich.table import Table

    from .results import COEFFICIENTS_FILE, read_csv
    rows = read_csv(run / COEFFICIENTS_FILE)
    kept = [r for r in rows if str(r.get("selected")) == "1"]
    sel = info.get("term_selection", {})
    table = Table(title=f"selected terms (dw = eta * sum of terms), 95 % intervals; {len(rows) - len(kept)} "
                        f"other terms exactly 0")
    for col in ("term", "monomial", "value", "95 % interval", "std error"):
        table.add_column(col, justify="left" if col in ("term", "monomial") else "right")
    for r in sorted(kept, key=lambda r: -abs(float(r["value"]))):
        table.add_row(r["term"], r["monomial"], f"{float(r['value']):+.6g}",
                      f"[{float(r['ci95_low']):+.6g}, {float(r['ci95_high']):+.6g}]", f"{float(r['std_error']):.2g}")
    _console().print(table)
    print(f"rule: {info['rule']}")
    if sel:
        route = sel.get("route", "?")
        how = (f"the likelihood-ratio tests at alpha {sel['alpha']:g} rejected every sparse model against the full "
               f"fit, so Bayes' information criterion chose among the refitted models; full fit"
               if route.startswith("BIC") else
               f"likelihood-ratio tests at alpha {sel['alpha']:g} against the full fit")
        print(f"term selection ({route.split(':')[0]}): {how} (every term, "
              f"{COEFFICIENTS_FILE.replace('.csv', '_full.csv')}) loss {info.get('loss_full', float('nan')):.4g}, "
              f"selected {info.get('loss', float('nan')):.4g}")
    ident = info.get("identifiability")
    if ident:
        flat = ident["not_determined"]
        print(f"identifiability: {ident['determined_directions']} of {ident['terms']} directions of coefficient "
              f"space determined; {len(flat)} not (a unit change moves the "
              f"{'activity' if info.get('likelihood', 'gaussian') == 'gaussian' else 'logit'} by < "
              f"{ident['flat_effect']:g}{' of its std' if info.get('likelihood', 'gaussian') == 'gaussian' else ''} "
              f"RMS, or the 95 % interval is wider than {ident['flat_interval']:g})")
        for f in flat[:flat_shown]:
            print(f"  not determined: {f['direction']}  (effect {f['effect']:.2g}; {f['reason']})")
        if len(flat) > flat_shown:
            print(f"  ... and {len(flat) - flat_shown} more in run.json (identifiability)")


def cmd_distill(args) -> int:
    from .runs import distill_run, front_rows
    with _console().status(f"distilling with {args.backend} (sampling, regression, re-simulating)"):
        result, info, out = distill_run(args.run, args.backend, args.max_size, args.out, args.samples,
                                        args.seed, sys.argv, args.force, not args.no_refit)
    from rich.table import Table
    table = Table(title=f"distilled formulas ({args.backend}, {result.n_samples} samples); "
                        f"the fitted rule's task loss: {result.blackbox_loss:.4g}")
    for col, justify in (("", "left"), ("complexity", "right"), ("task loss", "right"),
                         ("vs fitted", "right"), ("regression MSE", "right"), ("formula", "left")):
        table.add_column(col, justify=justify)
    for r in front_rows(result):
        ratio = r["loss"] / result.blackbox_loss if result.blackbox_loss > 0 else float("nan")
        table.add_row("*" if r["selected"] else "", str(r["complexity"]), f"{r['loss']:.4g}", f"{ratio:.3g}x",
                      f"{result.regression_mse[r['expression']]:.3g}", r["expression"])
    _console().print(table)
    sel = result.selected
    print(f"selected: {sel.expression}   (task loss {sel.loss:.4g}, "
          f"{info['loss_ratio']:.3g}x the fitted rule's)" if info["loss_ratio"] is not None else
          f"selected: {sel.expression}   (task loss {sel.loss:.4g})")
    print(f"written: {out}")
    return 0


def cmd_compare(args) -> int:
    from rich.table import Table

    from .compare import acceptance_curves, compare_runs
    from .plots import plot_acceptance
    from .results import check_output, write_csv
    from .runs import default_out
    out = check_output(Path(args.out) if args.out else default_out("compare"), args.force)
    with _console().status(f"scoring {len(args.runs)} run(s) on the held-out trials"):
        c = compare_runs(args.runs)
    summary = c.summary()
    rules = Table(title="models")  # rules in their own table: a long rule does not squeeze the numbers
    rules.add_column("model")
    rules.add_column("rule")
    for r in summary:
        rules.add_row(r["model"], r["rule"])
    _console().print(rules)
    table = Table(title=f"held-out choices ({summary[0]['decisions']} decisions; null model: no plasticity)")
    for col in ("model", "k", "NLL", "deviance expl.", "AIC", "BIC", "dAIC", "dNLL ± SE"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in summary:
        table.add_row(r["model"], str(r["parameters"]), f"{r['nll']:.2f}",
                      f"{100 * r['deviance_explained']:.1f} %", f"{r['aic']:.2f}", f"{r['bic']:.2f}",
                      f"{r['delta_aic']:.2f}", f"{r['delta_nll']:.1f} ± {r['delta_nll_se']:.1f}")
    _console().print(table)
    per = Table(title="per animal: held-out NLL (deviance explained)")
    per.add_column("animal")
    per.add_column("decisions", justify="right")
    for m in c.models:
        per.add_column(m.name, justify="right")
    rows = []
    for a, name in enumerate(c.animals):
        cells = [f"{c.nll[k, a]:.2f} ({100 * (1 - c.nll[k, a] / c.null_nll[a]):.0f} %)" for k in range(len(c.models))]
        per.add_row(name, str(int(c.decisions[a])), *cells)
        rows.append([name, int(c.decisions[a]), float(c.null_nll[a])] + [float(v) for v in c.nll[:, a]])
    rows.append(["total", int(c.decisions.sum()), float(c.null_nll.sum())] + [float(v) for v in c.nll.sum(axis=1)])
    _console().print(per)
    best = min(summary, key=lambda r: r["aic"])
    print(f"best by AIC: {best['model']} ({best['rule']}); by held-out NLL: "
          f"{min(summary, key=lambda r: r['nll'])['model']}")
    close = [r["model"] for r in summary if r is not best and r["delta_nll"] < 2 * r["delta_nll_se"]]
    if close:
        print(f"within 2 standard errors of it in held-out NLL (paired over animals): {', '.join(close)}")
    write_csv(out / "comparison.csv", ["animal", "decisions", "null_nll"] + [f"nll_{m.name}" for m in c.models], rows)
    write_csv(out / "summary.csv", list(summary[0]), [list(r.values()) for r in summary])
    if not 0 <= args.animal < len(c.animals):
        raise ValueError(f"--animal {args.animal}: expected 0..{len(c.animals) - 1}")
    plot_acceptance(out / "acceptance.png", acceptance_curves(c, args.animal),
                    [f"{m.name}: {m.description}" for m in c.models], c.task.config.protocol.trials_per_block,
                    f"{c.animals[args.animal]}: model P(accept) and the animal's choices")
    print(f"written: {out}")
    return 0


def cmd_simulate(args) -> int:
    from .tasks import load_task
    from .results import check_output
    out = check_output(args.out, args.force)
    task = load_task(args.task, args.set, data=args.data, seed=args.seed, require_data=False)
    rule = task.parse(args.rule, limits=True)
    with _console().status(f"simulating {task.name} under {rule.text()}"):
        line = task.sim.synthesize(task, rule, out, args.noise, args.observed, args.animals)
    print(line)
    return 0


def cmd_latex(args) -> int:
    from .export import latex_equation, latex_table
    if args.rule is not None:
        from .grammar import find_grammar, load_grammar
        from .rules import parse_rule
        path = find_grammar(args.grammar)
        if path is None:
            raise ValueError(f"--grammar {args.grammar!r}: no such grammar file (looked in ./grammars)")
        rule = parse_rule(args.rule, load_grammar(path), limits=True)
        print(rule.canonical().latex() if args.simplify else rule.latex())
        return 0
    if args.run is None:
        raise ValueError("give a run folder or --rule EXPR")
    from .results import PARAMS_FILE
    if (Path(args.run) / PARAMS_FILE).is_file():
        return _latex_fit(args)
    from .results import RUN_FILE, read_json
    from .runs import read_front
    rows = read_front(args.run)
    info = read_json(Path(args.run) / RUN_FILE) if (Path(args.run) / RUN_FILE).is_file() else {}
    pathways = info.get("pathways")
    if args.table:
        print(latex_table(rows, pathways))
    else:
        selected = next(r for r in rows if str(r["selected"]) == "1")
        if pathways:  # one line per pathway: \Delta W_{ij} = ...
            for name, p in pathways.items():
                print(f"{p['symbol']} = {selected['latex_' + name]}")
        else:
            print(latex_equation(selected["latex"]))
    return 0


def _std_errors(run) -> dict:
    """term -> standard error from an LM fit's coefficients.csv (empty for other fits)."""
    from .results import COEFFICIENTS_FILE, read_csv
    path = Path(run) / COEFFICIENTS_FILE
    if not path.is_file():
        return {}
    return {r["term"]: float(r["std_error"]) for r in read_csv(path) if r.get("std_error") not in (None, "")}


def _latex_fit(args) -> int:
    from .export import latex_coefficient_table, latex_equation
    from .rules import parse_rule
    from .runs import read_fit
    info, family, params = read_fit(args.run)
    if args.threshold is None:  # LM fits: the selected terms, every other term is exactly 0
        args.threshold = 0.0 if info.get("optimizer") == "lm" else 0.05
    if family.kind == "doublet":
        rule = family.rule(params).canonical()
        print("\n".join(f"{p.symbol} = {t}" for p, t in zip(rule.space.pathways, rule.latex_parts())))
        return 0
    if family.kind != "taylor":
        raise ValueError(f"{args.run}: an MLP fit has no readable equation; distill it first: "
                         f"rulesearch distill {args.run}")
    if args.table:
        cut = args.threshold * abs(params).max()
        # each monomial as the rule line prints it: products of the family's variables, x_j (r - \bar{r})
        se = _std_errors(args.run)
        rows = [{"term": r["term"], "value": r["value"], "std_error": se.get(r["term"]),
                 "latex": parse_rule(r["monomial"], r["family"].grammar).latex(lhs=False)}
                for r in family.coefficient_rows(params) if abs(r["value"]) > cut]
        print(latex_coefficient_table(sorted(rows, key=lambda r: -abs(r["value"]))))
    else:
        # in the family's variables, as fitted (x_j (r - \bar{r}), not its expansion)
        if hasattr(family, "latex_parts"):  # one family per pathway
            parts = family.latex_parts(params, args.threshold)
            print("\n".join(f"{p.symbol} = {t}" for p, t in zip(family.space.pathways, parts)))
        else:
            print(latex_equation(family.latex(params, args.threshold)))
    return 0


def cmd_families(args) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .family_filter import FamilySpec, families_run
    if args.resume and args.out and Path(args.out) != Path(args.resume):
        raise ValueError("--out and --resume name different folders: a resumed run writes into its own folder")
    spec = FamilySpec(args.task, tuple(args.set), args.seed, args.rounds, args.simulations, args.workers,
                      args.evaluator, args.scheduler)
    terminal = sys.stderr.isatty() or sys.stdout.isatty()
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("pass {task.fields[frac]}"), TimeElapsedColumn(), console=_console(), disable=not terminal)
    jobs: dict[int, object] = {}

    def progress(r, rounds, done, total, frac):
        if r not in jobs:
            jobs[r] = bar.add_task(f"round {r} ({r + 1} of {rounds})", total=total, frac="-")
        bar.update(jobs[r], completed=done, frac=f"{frac:.1%}")
        if not terminal and done == total:
            print(f"families: round {r} ({r + 1} of {rounds}): {total} simulations, pass fraction {frac:.1%} "
                  "(the round's constraints)", flush=True)
    try:
        with bar:
            info, out = families_run(spec, args.resume or args.out, bool(args.resume), progress, sys.argv, args.force)
    except KeyboardInterrupt:
        print("interrupted: simulations.csv and the checkpoint are saved; continue with --resume DIR", file=sys.stderr)
        return EXIT_INTERRUPTED
    _print_family(info, out)
    return 0


def _print_family(info: dict, out) -> None:
    from rich.table import Table
    table = Table(title=f"{info['task_name']}: rounds (seed {info['seed']})")
    for col in ("round", "simulations", "pass fraction (round's constraints)", "passed all", "exploded"):
        table.add_column(col, justify="right")
    for t in info["rounds_table"]:
        table.add_row(str(t["round"]), str(t["simulations"]), f"{t['pass_fraction']:.1%}",
                      f"{t['passed_all']} ({t['pass_fraction_all']:.1%})", f"{t['exploded_fraction']:.1%}")
    _console().print(table)
    line = f"family: {info['family_size']} plausible rule combinations"
    if info.get("confirm"):
        line += f" (each passed {info['confirm']} confirmation simulation{'s' if info['confirm'] > 1 else ''})"
    if info.get("recheck_pass_fraction") is not None:
        line += f"; {info['recheck_pass_fraction']:.1%} pass again with new input seeds"
    print(line + f" ({info.get('evaluations', '?')} simulations, {info.get('elapsed_seconds', 0):.0f} s)")
    if info.get("stopped_by_budget"):
        print(f"stopped by families.budget ({info['budget']} simulations in all) before the last round was full")
    print(f"written: {out}")


def _show_family(run: Path) -> int:
    from .family_filter import summarise
    s = summarise(run)
    info = s["info"]
    print(f"{info.get('task_name', run)}: family of {s['size']} plausible rule combinations "
          f"({info.get('evaluations', '?')} simulations, {info.get('rounds')} rounds, seed {info.get('seed')})")
    if "rounds_table" in info:
        print("pass fraction per round, the round's constraints / all: " + ", ".join(
            f"{t['pass_fraction']:.1%} / {t['pass_fraction_all']:.1%}" for t in info["rounds_table"]))
    if info.get("recheck_pass_fraction") is not None:
        print(f"re-simulated with new input seeds: {info['recheck_pass_fraction']:.1%} pass again")
    for p, (pre, post) in info.get("pinned", {}).items():
        print(f"pinned (not sampled): {p}.pre: {pre}; {p}.post: {post}")
    from rich.table import Table
    table = Table(title="plausible range (5-95 % of the family) against the prior")
    for col in ("parameter", "family", "prior", "width", ""):
        table.add_column(col, justify="left" if col in ("parameter", "") else "right")
    for p in s["parameters"]:
        table.add_row(p["name"], f"{p['low']:.3g} .. {p['high']:.3g}", f"{p['prior'][0]:g} .. {p['prior'][1]:g}",
                      f"{p['width']:.0%}", "pinned down" if p["pinned"] else "free")
    _console().print(table)
    if s["correlations"]:
        print("most correlated parameters across pathways: " + "; ".join(
            f"{c['a']} ~ {c['b']} (r = {c['r']:+.2f})" for c in s["correlations"]))
    return 0


def cmd_show(args) -> int:
    from .results import PARAMS_FILE, RUN_FILE, read_json
    from .runs import read_front
    run = Path(args.run)
    if (run / RUN_FILE).is_file() and read_json(run / RUN_FILE).get("kind") == "families":
        return _show_family(run)
    fit = (run / PARAMS_FILE).is_file()
    rows = None if fit else read_front(run)
    info = read_json(run / RUN_FILE) if (run / RUN_FILE).is_file() else {}
    if fit:
        print(f"{info.get('task_name', run)}: {info.get('family', {}).get('family', '?')} fit")
        keys = ("task", "overrides", "data", "seed", "generations_run", "evaluations", "elapsed_seconds",
                "status", "loss", "l1", "rule")
    else:
        _print_front(rows, f"{info.get('task_name', run)}: Pareto front")
        keys = ("task", "overrides", "data", "seed", "population", "generations_run", "evaluations",
                "elapsed_seconds", "status", "selected", "selected_loss")
    for key in keys:
        if key == "rule" and info.get(key) is None and info.get("family", {}).get("family") == "mlp":
            print(f"{key:16s} none: a black-box family (rulesearch distill {run} turns it into formulas)")
        elif key in info:
            print(f"{key:16s} {info[key]}")
    if rows is not None:
        _explain_selection(rows, info.get("selection"))
        _print_fit_check(info.get("fit_seed"))
        _print_indistinguishable(info.get("indistinguishable"))
    if fit and info.get("optimizer") == "lm" and info.get("family", {}).get("family") == "taylor":
        _print_lm_fit(run, info)
    if fit or info.get("heldout"):
        _print_heldout(info.get("heldout"))
    if "versions" in info:
        print(f"{'versions':16s} " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()
                                               if k != "platform"))
    return 0


def _print_fit_check(record: dict | None) -> None:
    """The Taylor fit that seeded the search, and whether it overruled the selection (run.json fit_seed)."""
    if not record:
        return
    if not record.get("used"):
        print(f"{'Taylor seed':16s} {record['rule']} not used: {record.get('reason', '')}")
        return
    print(f"{'Taylor seed':16s} {record['rule']} (fit of the fitted trials, {record['seconds']:.1f} s; seeded the search)")
    if "reselected" in record:
        r = record["reselected"]
        print(f"{'fit check':16s} the Taylor fit's rule beats {r['previous']} ({record['test']}): selected "
              f"{r['selected']}, the simplest front rule it does not beat")
    elif record.get("beats_selected"):
        by = (f" (the selected rule's loss minus the fit's: {record['selected_minus_fit']:.4g} +- {record['se']:.2g})"
              if record.get("se") is not None else "")
        print(f"{'fit check':16s} the Taylor fit's rule beats every front rule{by} ({record['test']}), and the "
              "search kept no rule as good: the selection stands, but the fit's rule deserves a look "
              "(rulesearch fit --family taylor on the same data reports it with intervals)")


LOW_POWER_UNITS = 5  # fewer held-out units than this: the paired test can tell little apart (t > 2.7)


def _print_indistinguishable(report: dict | None) -> None:
    """The front rules the held-out data cannot tell apart from the selected one (run.json
    ``indistinguishable``), and any the held-out data prefer."""
    if not report:
        return
    n, units = report["n_units"], report["units"]
    if report.get("critical_t") is None:
        print(f"indistinguishable: unknown ({n} held-out {units} give no estimate of the sampling noise)")
        return
    test = (f"|held-out loss difference| <= {report['critical_t']:.3g} x its standard error, paired over {n} "
            f"held-out {units} (two-sided {100 * report['level']:g} %)")
    if report.get("likelihood"):
        test += f"; judged by the {report['likelihood']}"
    if n < LOW_POWER_UNITS:
        test += f"; {n} held-out {units} give the test little power: hold out more to tell more apart"
    rows = [(i, v) for i, v in enumerate(report["verdict"]) if v in ("indistinguishable", "better")]
    if not rows:
        print(f"indistinguishable: none; every other front rule is worse on the held-out data ({test})")
        return
    names = report["expressions"]
    print(f"indistinguishable: front rules the held-out data cannot tell apart from the selected one ({test}); "
          "held-out loss minus the selected rule's:")
    for i, v in rows:
        flag = "" if v == "indistinguishable" else "   <- better on the held-out data"
        print(f"  {names[i]}: {report['difference'][i]:+.4g} +- {report['se'][i]:.3g}{flag}")


def _explain_selection(rows, selection: dict | None) -> None:
    """Why rules with a lower loss than the selected one were not selected."""
    selected = next(r for r in rows if str(r["selected"]) == "1")
    better = [r for r in rows if float(r["loss"]) < float(selected["loss"])]
    if not better:
        return
    best = min(float(r["loss"]) for r in rows)
    if selection and selection.get("method") in ("noise", "heldout") and "excess" in selection:
        k = rows.index(selected)
        which = "held-out " if selection.get("losses") == "held-out" else ""
        print(f"{'why selected':16s} the simplest rule whose {which}loss exceeds the best's ({selection['best']}) by at "
              f"most {selection['se_multiple']:g} standard error(s) of the difference, paired over "
              f"{selection['n_units']} {selection['units']}: here {selection['excess'][k]:.4g} <= "
              f"{selection['se_multiple']:g} x {selection['se'][k]:.4g}"
              + (f" (judged by the {selection['likelihood']})" if selection.get("likelihood") else "")
              + (f"; selection 'auto' chose the {which or 'fitted '}losses: {selection['auto']}"
                 if selection.get("auto") else ""))
        return
    rule = "the simplest rule with loss <= best * (1 + rel_tol) + abs_tol"
    if selection and "rel_tol" in selection:
        limit = best * (1 + selection["rel_tol"]) + selection["abs_tol"]
        rule += f" = {best:.4g} * (1 + {selection['rel_tol']:g}) + {selection['abs_tol']:g} = {limit:.4g}"
    print(f"{'why selected':16s} {rule}; the {len(better)} rule(s) below it on the front have a lower loss "
          "but more nodes (a scaled copy of a rule can fit slightly better and still not be worth its size)")


class _StderrHandler(logging.StreamHandler):
    """Warnings to whatever ``sys.stderr`` is when they are written (not when rulesearch first ran)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


class _Parser(argparse.ArgumentParser):
    """argparse with bad options reported as one line (exit code 2), like every other bad input."""

    def error(self, message):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def _at_least(low, kind=int):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}")
        if not value >= low or value != value:
            raise argparse.ArgumentTypeError(f"{text} is below {low}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version
    try:
        installed = version("rulesearch")
    except PackageNotFoundError:
        installed = "unknown (not installed)"
    parser = _Parser(prog="rulesearch", description="Discover synaptic plasticity rules.")
    parser.add_argument("--version", action="version", version=f"rulesearch {installed}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, seed=True):
        p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                       help="override a task field, e.g. --set network.eta=0.01 (repeatable)")
        if seed:
            p.add_argument("--seed", type=_at_least(0), default=None, help="random seed (default: the task's)")

    def run_options(p, example: str, generations: str, out: str):
        """Options shared by the commands that write a resumable run folder (evolve, fit)."""
        p.add_argument("task", help=f"task file, e.g. {example}")
        p.add_argument("--data", help="data for data-fitting objectives: activity .npz, or choice data "
                                      "(.npz, a per-fly .mat file or a folder of them)")
        common(p)
        p.add_argument("--generations", type=_at_least(0), help=generations)
        p.add_argument("--workers", type=_at_least(1), help="local: threads (default: all cores); dask without "
                                                   "--scheduler: worker processes of a LocalCluster (default: cores)")
        from .evaluators import EVALUATORS
        p.add_argument("--evaluator", choices=EVALUATORS, default="local",
                       help="where populations are evaluated: this machine's threads (local, default) or a "
                            "Dask cluster (dask; pip install 'rulesearch[dask]')")
        p.add_argument("--scheduler", metavar="ADDRESS",
                       help="dask: a running scheduler, e.g. tcp://10.0.0.5:8786 (default: a LocalCluster)")
        p.add_argument("--out", help=f"run folder (default: {out})")
        p.add_argument("--force", action="store_true", help="write into an existing, non-empty --out")
        p.add_argument("--resume", metavar="DIR", help="continue the run saved in DIR")

    p = sub.add_parser("evolve", help="search rules by genetic programming",
                       description="Search for the rule that best serves a task's objective.",
                       epilog='example:\n  rulesearch evolve tasks/oja.toml --seed 1\n  rulesearch evolve tasks/pca-network.toml --evaluator dask --workers 2\n  rulesearch evolve tasks/fit-activity.toml --data d.npz',
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    run_options(p, "tasks/oja.toml", "number of generations (default: the task's)", "results/<task>-<time>")
    p.add_argument("--population", type=_at_least(4), help="population size (default: the task's)")
    p.set_defaults(func=cmd_evolve)

    p = sub.add_parser("fit", help="fit a parametric rule family (Taylor or MLP) by CMA-ES",
                       description='Fit a Taylor expansion or a small MLP rule (per pathway) by CMA-ES.',
                       epilog='example:\n  rulesearch fit tasks/fit-activity.toml --data d.npz --family taylor',
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    run_options(p, "tasks/fit-activity.toml", "CMA-ES generations (default: the task's fit.generations)",
                "results/<task>-fit-<time>")
    from .families import FAMILIES
    p.add_argument("--family", choices=FAMILIES, help="rule family (default: the task's fit.family)")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("families", help="filter families of co-active rules by constraints (spiking E/I network)",
                       description="Sample rule combinations (the doublet rule per pathway) in rounds, simulate each, "
                                   "and keep those whose network satisfies every constraint of the task.",
                       epilog='example:\n  rulesearch families tasks/ei-network.toml --rounds 3 --simulations 1000',
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", help="task file, e.g. tasks/ei-network.toml")
    common(p)
    p.add_argument("--rounds", type=_at_least(1), help="rounds (default: the task's families.rounds)")
    p.add_argument("--simulations", type=_at_least(2), help="simulations per round (default: families.simulations)")
    p.add_argument("--workers", type=_at_least(1), help="local: threads (default: all cores); dask: worker processes")
    from .evaluators import EVALUATORS as _EVALUATORS
    p.add_argument("--evaluator", choices=_EVALUATORS, default="local", help="local threads or a Dask cluster")
    p.add_argument("--scheduler", metavar="ADDRESS", help="dask: a running scheduler (default: a LocalCluster)")
    p.add_argument("--out", help="run folder (default: results/<task>-families-<time>)")
    p.add_argument("--force", action="store_true", help="write into an existing, non-empty --out")
    p.add_argument("--resume", metavar="DIR", help="continue the family run saved in DIR")
    p.set_defaults(func=cmd_families)

    p = sub.add_parser("distill", help="explain a fitted MLP (or Taylor) rule by formulas",
                       description="Explain a fit folder's rule by formulas (symbolic regression, then re-simulation).",
                       epilog='example:\n  rulesearch distill results/fit-activity-fit-20261201-120000',
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a fit folder (from 'rulesearch fit')")
    from .distill import BACKENDS
    p.add_argument("--backend", default="operon", choices=tuple(BACKENDS),
                   help="symbolic regression: operon (default, offline), gp (rulesearch's own), "
                        "pysr (needs Julia)")
    p.add_argument("--max-size", type=_at_least(1), default=25, help="largest formula, in nodes (default 25)")
    p.add_argument("--samples", type=_at_least(10), default=2000, help="visited states sampled (default 2000)")
    p.add_argument("--seed", type=_at_least(0), default=None, help="random seed (default: the fit's)")
    p.add_argument("--out", help="output folder (default: RUN/distill-BACKEND)")
    p.add_argument("--force", action="store_true", help="write into an existing, non-empty --out")
    p.add_argument("--no-refit", action="store_true",
                   help="keep each formula's constants as the regression found them (default: refit them on "
                        "the task loss before selecting)")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("compare", help="compare fitted rules on held-out choices (NLL, deviance, AIC, BIC)",
                       description='Score several runs fitted to the same choice data on its held-out trials.',
                       epilog='example:\n  rulesearch compare results/run-a results/run-b --out results/cmp',
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="evolve or fit folders fitted to the same choice data")
    p.add_argument("--animal", type=_at_least(0), default=0, help="animal drawn in acceptance.png (default 0)")
    p.add_argument("--out", help="output folder (default: results/compare-<time>)")
    p.add_argument("--force", action="store_true", help="write into an existing, non-empty --out")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("simulate", help="write data simulated under a rule, or prune a network",
                       description='Write data simulated under a rule: activity (NPZ), a folder of per-fly choices, '
                                   'spike trains and weight trajectories of a spiking task (NPZ and a figure), or, for '
                                   'noise-prune tasks, the network pruned under the rule (NPZ) and its spectra (PNG).',
                       epilog='examples:\n  rulesearch simulate tasks/fit-activity.toml --rule "x*y - 0.5*y**2*w" --out d.npz --noise 0.1'
                              '\n  rulesearch simulate tasks/istdp.toml --rule "pre: x_post - 0.2; post: x_pre" --out istdp.npz'
                              '\n  rulesearch simulate tasks/noise-prune.toml --rule "abs(w)*(c_pre + c_post - 2*sign(w)*c)" '
                              '--data net.npz --out pruned.npz',
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task")
    p.add_argument("--rule", required=True, help='rule text, e.g. "x*y - 0.5*y**2*w"')
    p.add_argument("--out", required=True, help="output .npz file (choice tasks: a folder)")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--noise", type=_at_least(0.0, float), default=0.0,
                   help="measurement noise, in units of the activity's std")
    p.add_argument("--observed", type=float, default=1.0, help="fraction of output neurons recorded")
    p.add_argument("--animals", type=_at_least(1), help="choice tasks: number of synthetic animals (default: the task's)")
    p.add_argument("--data", help="tasks whose objective takes data instead of generated inputs, e.g. a network "
                                  "to prune (.npz with array A)")
    common(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("latex", help="print LaTeX of a run's selected rule, its front, or a rule",
                       description="Print LaTeX: a run's selected rule (one line per pathway), its front, or a typed rule.",
                       epilog='example:\n  rulesearch latex results/oja-20261201-120000 --table\n  rulesearch latex --rule "y*(x - y*w)" --simplify',
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="?", help="run folder")
    p.add_argument("--rule", help="rule text instead of a run folder")
    p.add_argument("--grammar", default="hebbian", help="grammar for --rule (name or file)")
    p.add_argument("--simplify", action="store_true", help="print --rule in canonical form")
    p.add_argument("--table", action="store_true",
                   help="the whole front (or a Taylor fit's coefficients) as a LaTeX table")
    p.add_argument("--threshold", type=float, default=None,
                   help="Taylor fits: leave out terms below this fraction of the largest (default: 0 for fits "
                        "that selected their terms (fit.optimizer lm), else 0.05)")
    p.set_defaults(func=cmd_latex)

    p = sub.add_parser("show", help="print a run's front and facts",
                       description="Print a run folder's front (or a fit's terms) and its facts.",
                       epilog='example:\n  rulesearch show results/oja-20261201-120000',
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.set_defaults(func=cmd_show)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad option (one line, exit code 2)
        return int(exc.code or 0)
    log = logging.getLogger("rulesearch")
    if not log.handlers:  # warnings (e.g. a skipped data file) as one line on stderr
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("rulesearch: warning: %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    try:
        code = args.func(args)
        sys.stdout.flush()  # inside the try: a closed pipe is found here, not at exit
        return code
    except (GrammarError, TaskError, DataError, ValueError) as exc:
        print(f"rulesearch {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
        print(f"rulesearch {args.command}: error: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of stdout left (`rulesearch show DIR | head`)
        _silence_stdout()
        if args.command in READ_ONLY_COMMANDS:
            return 0
        print(f"rulesearch {args.command}: error: the output pipe closed before the command finished; "
              "what it wrote so far is kept (an evolve, fit or families folder can be resumed)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
