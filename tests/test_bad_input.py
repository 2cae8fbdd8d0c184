"""Bad input, table-driven: one line naming the culprit, exit code 2, and every file that was
there before byte-identical afterwards."""
import json
import shutil
import time

import pytest

from conftest import ROOT
from rulesearch.cli import main

OJA = str(ROOT / "tasks" / "oja.toml")
FIT = str(ROOT / "tasks" / "fit-activity.toml")
FAST = ["--set", "inputs.steps=200", "--set", "network.eta=0.01", "--set", "inputs.trials=2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished evolve run and a finished fit run, made once."""
    base = tmp_path_factory.mktemp("runs")
    assert main(["evolve", OJA, "--population", "20", "--generations", "1", "--out", str(base / "evolve")] + FAST) == 0
    assert main(["simulate", FIT, "--rule", "x*y - y**2*w", "--out", str(base / "d.npz"),
                 "--set", "inputs.steps=100", "--set", "inputs.trials=4"]) == 0
    assert main(["fit", FIT, "--data", str(base / "d.npz"), "--generations", "3", "--out", str(base / "fit"),
                 "--set", "inputs.steps=100", "--set", "inputs.trials=4"]) == 0
    return base


def _snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _copy(runs, tmp_path, name):
    shutil.copytree(runs / name, tmp_path / name)
    return tmp_path / name


def _damage(path, text):
    path.write_text(text)


CASES = {
    # results a user already has must survive a failed command
    "resume with an empty checkpoint": (
        lambda r, t: (_damage(_copy(r, t, "evolve") / "checkpoint.json", "{}"),
                      ["evolve", OJA, "--resume", str(t / "evolve")])[1], "checkpoint.json"),
    "resume with a truncated checkpoint": (
        lambda r, t: (_damage(_copy(r, t, "evolve") / "checkpoint.json",
                              (r / "evolve" / "checkpoint.json").read_text()[:100]),
                      ["evolve", OJA, "--resume", str(t / "evolve")])[1], "checkpoint.json"),
    "fit resume with a damaged checkpoint": (
        lambda r, t: (_damage(_copy(r, t, "fit") / "checkpoint.json", '{"generation": "x"}'),
                      ["fit", FIT, "--resume", str(t / "fit")])[1], "checkpoint.json"),
    "resume where run.json is a list": (
        lambda r, t: (_damage(_copy(r, t, "evolve") / "run.json", "[1]"),
                      ["evolve", OJA, "--resume", str(t / "evolve")])[1], "run.json"),
    "evolve --out into a fit folder": (
        lambda r, t: ["evolve", OJA, "--out", str(_copy(r, t, "fit"))] + FAST, "already holds a 'fit' run of task"),
    "evolve --out into a folder of other files": (
        lambda r, t: (_damage(t / "mine" / "notes.txt", "mine") if (t / "mine").mkdir() is None else None,
                      ["evolve", OJA, "--out", str(t / "mine")] + FAST)[1], "is not empty"),
    "evolve --out onto a file": (
        lambda r, t: (_damage(t / "notes.txt", "mine"), ["evolve", OJA, "--out", str(t / "notes.txt")] + FAST)[1],
        "a file already exists"),
    "simulate --out onto a file": (
        lambda r, t: (_damage(t / "notes.txt", "mine"),
                      ["simulate", FIT, "--rule", "x*y", "--out", str(t / "notes.txt")])[1], "notes.txt"),
    "compare --out onto a file": (
        lambda r, t: (_damage(t / "notes.txt", "mine"), ["compare", str(_copy(r, t, "evolve")), "--out",
                                                         str(t / "notes.txt")])[1], "notes.txt"),
    "distill --out into a run folder": (
        lambda r, t: ["distill", str(_copy(r, t, "fit")), "--out", str(_copy(r, t, "evolve"))], "is not empty"),
    "show a pareto.csv without a selected row": (
        lambda r, t: (_damage(_copy(r, t, "evolve") / "pareto.csv",
                              (r / "evolve" / "pareto.csv").read_text().replace(",1\n", ",0\n")),
                      ["show", str(t / "evolve")])[1], "exactly one selected row"),
    "latex of a truncated pareto.csv": (
        lambda r, t: (_damage(_copy(r, t, "evolve") / "pareto.csv",
                              (r / "evolve" / "pareto.csv").read_text()[:60]), ["latex", str(t / "evolve")])[1],
        "pareto.csv"),
    "show a truncated run.json": (
        lambda r, t: (_damage(_copy(r, t, "evolve") / "run.json", '{"task": '), ["show", str(t / "evolve")])[1],
        "run.json"),
    # numbers on the command line
    "negative population": (lambda r, t: ["evolve", OJA, "--population", "-5"], "--population"),
    "negative generations": (lambda r, t: ["evolve", OJA, "--generations", "-3"], "--generations"),
    "negative seed": (lambda r, t: ["fit", FIT, "--seed", "-1"], "--seed"),
    "zero animals": (lambda r, t: ["simulate", FIT, "--rule", "x", "--out", str(t / "a"), "--animals", "0"],
                     "--animals"),
    "zero samples": (lambda r, t: ["distill", str(r / "fit"), "--samples", "0"], "--samples"),
    "zero max-size": (lambda r, t: ["distill", str(r / "fit"), "--max-size", "0"], "--max-size"),
    # names and files
    "a task name that leaves results/": (
        lambda r, t: (_damage(t / "t.toml", open(OJA).read().replace('name = "oja"', 'name = "../../x"')),
                      ["evolve", str(t / "t.toml")])[1], "field 'name' is '../../x'"),
    "a task file that is not UTF-8": (
        lambda r, t: ((t / "t.toml").write_bytes(b"name = '\\xff\\xfe'\n\xff\xfe"), ["evolve", str(t / "t.toml")])[1],
        "not UTF-8"),
    # rules that would exhaust time or memory
    "a 23-character rule of huge powers": (lambda r, t: ["latex", "--rule", "(((x**64)**64)**64)**64"], "depth"),
    "an overflowing exponent": (lambda r, t: ["latex", "--rule", "x**1e400"], "exponent"),
    "a rule of 100,000 characters": (lambda r, t: ["latex", "--rule", "x+" * 50_000 + "x"], "characters"),
    "deeply nested parentheses": (lambda r, t: ["latex", "--rule", "(" * 5000 + "x" + ")" * 5000], "rule"),
    "a simulated rule beyond the grammar's limits": (
        lambda r, t: ["simulate", FIT, "--rule", "+".join(["x*y"] * 20), "--out", str(t / "d.npz")], "nodes"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_loses_nothing(case, runs, tmp_path, capsys):
    make, culprit = CASES[case]
    args = make(runs, tmp_path)
    before, before_runs = _snapshot(tmp_path), _snapshot(runs)
    capsys.readouterr()
    start = time.perf_counter()
    code = main(args)
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert culprit in err, err
    assert elapsed < 20
    assert _snapshot(tmp_path) == before and _snapshot(runs) == before_runs


def test_resume_still_works_after_a_refused_resume(runs, tmp_path):
    run = _copy(runs, tmp_path, "evolve")
    info = json.loads((run / "run.json").read_text())
    assert main(["evolve", OJA, "--resume", str(run), "--generations", "2"]) == 0
    assert json.loads((run / "run.json").read_text())["generations_run"] == info["generations_run"] + 1


def test_fuzzed_rule_strings_never_crash(full):
    """A seeded sample of benchmarks/fuzz_rules.py: random and hostile strings through the parser
    (with the grammar's limits), the VM and LaTeX either run or are refused with one line."""
    from rulesearch.fuzz import fuzz
    outcomes = [(text, outcome, s) for text, outcome, s in fuzz(1500, full, seed=11)]
    crashes = [(t[:60], o) for t, o, _ in outcomes if o.startswith("crash")]
    assert not crashes, crashes[:3]
    assert sum(o == "ok" for _, o, _ in outcomes) > 50  # not everything is refused
    assert max(s for _, _, s in outcomes) < 5  # resource exhaustion, not speed (the benchmark times it)
