"""`rulesearch evolve` over settings (issue 15, done-when 4, the evolve half). Resumable: one JSON
file per case in --out; a case already there is skipped, so the sweep can run in short chunks.

    python benchmarks/evolve_sweep.py fly [--out results/evolve_sweep] [--budget-s 270] [--only ID ...] [--record-inputs]
                                          [--judge-particles N]
    python benchmarks/evolve_sweep.py activity [...]
    python benchmarks/evolve_sweep.py summary [--out results/evolve_sweep]

fly: 18 synthetic flies per case written by the project's simulator (`rulesearch simulate` on
  tasks/fly-choice.toml) from `x*(r - rbar) - c*w`, over the learning rate (network.eta 0.05-1.0),
  the readout gain (protocol.readout 0.5-2) and forgetting c (0-0.1): 12 combinations x seeds 1, 2;
  `evolve` with the same settings. Recovered: the selected rule has exactly the generating rule's
  monomials, each coefficient within 25 %.
activity: noise-free data from benchmarks/activity_cases.py's NumPy generator (20 inputs, 5
  outputs, 8 trials x 200 steps) over three rules x linear/sigmoid/tanh outputs x eta 0.01, 0.1 x
  inputs uniform in [0, 1] or [-1, 1]; `evolve tasks/fit-activity.toml`. Recovered: exactly the
  generating monomials, each coefficient within 1 %.
Each case also records the generating rule's loss on the fitted trials (with its own constants:
a lower loss than the selected rule's means the search missed it), the front, where the
generating terms appear on it, and the held-out indistinguishability report.
"""
from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sympy

sys.path.insert(0, str(Path(__file__).parent))
from activity_cases import generate_rule  # noqa: E402

from rulesearch.fit import split_trials  # noqa: E402
from rulesearch.results import read_json, write_json  # noqa: E402
from rulesearch.runs import RunSpec, evolve_run  # noqa: E402
from rulesearch.tasks import load_task  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FLY_TASK = str(ROOT / "tasks" / "fly-choice.toml")
ACT_TASK = str(ROOT / "tasks" / "fit-activity.toml")
# (eta, readout, forgetting): corners of the box, then cases inside it (the first sweep's misses first)
FLY_SETTINGS = [(1.0, 0.5, 0.1), (0.05, 2.0, 0.1), (0.05, 0.5, 0.0), (1.0, 2.0, 0.0),
                (0.05, 0.5, 0.1), (1.0, 2.0, 0.1), (0.3, 1.0, 0.05), (0.1, 1.0, 0.0),
                (0.5, 0.5, 0.05), (0.2, 2.0, 0.05), (0.5, 1.5, 0.1), (0.1, 1.5, 0.02)]
FLY_SEEDS = (1, 2)
ACT_RULES = {"x*y - y**2*w": lambda x, y, w: x * y - y * y * w,
             "-x*y - 0.1*w": lambda x, y, w: -x * y - 0.1 * w,
             "(x - 0.5)*(y - 0.5)": lambda x, y, w: (x - 0.5) * (y - 0.5)}
ACT_NAMES = {"x*y - y**2*w": "oja", "-x*y - 0.1*w": "antihebb-decay", "(x - 0.5)*(y - 0.5)": "hebb-centred"}
ACT_SETTINGS = list(itertools.product(ACT_RULES, ("linear", "sigmoid", "tanh"), (0.01, 0.1),
                                      ((0.0, 1.0), (-1.0, 1.0))))
TOLERANCE = {"fly": 0.25, "activity": 0.01}


def fly_rule(c: float) -> str:
    return "x*(r - rbar)" if c == 0 else f"x*(r - rbar) - {c:g}*w"


def cases(part: str) -> list[dict]:
    """Every case of a part: an id and what generates and fits it."""
    if part == "fly":
        return [{"id": f"eta{eta:g}-readout{ro:g}-forget{c:g}-seed{seed}", "rule": fly_rule(c), "seed": seed,
                 "sets": [f"network.eta={eta:g}", f"protocol.readout={ro:g}"]}
                for (eta, ro, c), seed in itertools.product(FLY_SETTINGS, FLY_SEEDS)]
    out = []
    for k, (text, act, eta, lo_hi) in enumerate(ACT_SETTINGS):
        inputs = "x01" if lo_hi[0] == 0 else "xpm1"
        out.append({"id": f"{ACT_NAMES[text]}-{act}-eta{eta:g}-{inputs}", "rule": text, "seed": k % 2,
                    "activation": act, "eta": eta, "inputs": list(lo_hi),
                    "sets": [f"network.activation={act}", f"network.eta={eta:g}", "network.n_in=20",
                             "network.n_out=5"]})
    return out


def terms(text: str, task) -> dict:
    """Expanded monomials of a rule -> coefficients."""
    expr = sympy.expand(task.parse(text).to_sympy()[0])
    return {str(m): float(c) for m, c in expr.as_coefficients_dict().items() if c != 0}


def compare_terms(selected: str, truth: str, task, tol: float) -> tuple[bool, float | None]:
    """(recovered, largest relative coefficient error; None when the monomials differ)."""
    s, t = terms(selected, task), terms(truth, task)
    if set(s) != set(t):
        return False, None
    err = max(abs(s[m] - v) / abs(v) for m, v in t.items())
    return err <= tol, err


def write_data(case: dict, part: str, folder: Path) -> str:
    if part == "fly":
        task = load_task(FLY_TASK, case["sets"], seed=case["seed"], require_data=False)
        task.sim.synthesize(task, task.parse(case["rule"]), folder / "flies", 0.0, 1.0, None)
        return str(folder / "flies")
    arrays = generate_rule(case["rule"], ACT_RULES[case["rule"]], case["activation"], case["eta"],
                           tuple(case["inputs"]), 0.0, case["seed"])
    np.savez(folder / "data.npz", **arrays)
    return str(folder / "data.npz")


def run_case(case: dict, part: str, tmp: Path) -> dict:
    task_file = FLY_TASK if part == "fly" else ACT_TASK
    try:
        data = write_data(case, part, tmp)
    except FloatingPointError as exc:
        return {**case, "skipped": str(exc)}
    commit = _commit()  # the code this case runs (modules are loaded at the start of the process)
    t0 = time.time()
    result, out = evolve_run(RunSpec(task_file, tuple(case["sets"]), data, case["seed"]), tmp / "run", force=True)
    seconds = time.time() - t0
    info = read_json(out / "run.json")
    task = load_task(task_file, case["sets"], data, case["seed"])
    train, _ = split_trials(task, task.fit.holdout)
    truth_loss = float(train.evaluate([task.parse(case["rule"])])[0])
    selected = result.selected
    ok, err = compare_terms(selected.expression, case["rule"], task, TOLERANCE[part])
    truth_terms = set(terms(case["rule"], task))
    front = [{"expression": e.expression, "loss": e.loss, "complexity": e.complexity,
              "generating_terms": set(terms(e.expression, task)) == truth_terms} for e in result.front]
    return {**case, "recovered": ok, "largest_error": err, "selected": selected.expression,
            "selected_loss": selected.loss, "truth_loss": truth_loss,
            "truth_terms_on_front": any(f["generating_terms"] for f in front),
            "best_front_loss": min(e.loss for e in result.front), "front": front,
            "selection": info.get("selection"), "indistinguishable": info.get("indistinguishable"),
            "fit_seed": info.get("fit_seed"),
            "heldout": info.get("heldout"), "seconds": round(seconds, 1),
            "search_seconds": info.get("elapsed_seconds"), "evaluations": info.get("evaluations"),
            "generations_run": info.get("generations_run"), "status": info.get("status"),
            "threads": os.environ.get("NUMBA_NUM_THREADS"), "load_before": os.getloadavg()[0],
            "commit": commit}


def _commit() -> str:
    """The code's git commit (and whether the worktree had changes), recorded with each case."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "rulesearch"], cwd=ROOT, capture_output=True,
                           text=True).stdout
    return head.strip() + ("+changes" if dirty.strip() else "")


def summary(out: Path) -> int:
    for part in sorted(p.name for p in out.iterdir() if p.is_dir()):  # fly, activity and earlier code's runs
        rows = [read_json(p) for p in sorted((out / part).glob("*.json"))]
        if not rows:
            continue
        done = [r for r in rows if "skipped" not in r]
        good = sum(r["recovered"] for r in done)
        print(f"{part}: recovered {good}/{len(done)} ({100 * good / max(len(done), 1):.0f} %), "
              f"{len(rows) - len(done)} skipped, of {len(cases(part.split('-')[0]))} cases "
              f"(commits {', '.join(sorted({str(r.get('commit')) for r in rows}))}); "
              f"evolve {min(r.get('seconds', 0) for r in done):.0f}-{max(r.get('seconds', 0) for r in done):.0f} s")
        for r in rows:
            if "skipped" in r:
                print(f"  {r['id']}: skipped ({r['skipped']})")
            elif "error" in r:
                print(f"  ERROR {r['id']}: {r['error']}")
            elif not r["recovered"]:
                err = "other terms" if r["largest_error"] is None else f"error {100 * r['largest_error']:.1f} %"
                print(f"  MISSED {r['id']}: {r['selected']} ({err}; loss {r['selected_loss']:.6g}, "
                      f"generating rule {r['truth_loss']:.6g}; generating terms on the front: "
                      f"{r['truth_terms_on_front']})")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=("fly", "activity", "summary"))
    p.add_argument("--out", default="results/evolve_sweep")
    p.add_argument("--budget-s", type=float, default=270.0, help="start no new case after this many seconds")
    p.add_argument("--only", nargs="*", help="case ids to run (default: all not yet done)")
    p.add_argument("--redo", action="store_true", help="run the chosen cases even if done")
    p.add_argument("--max-cases", type=int, default=0, help="stop after this many cases (0: no limit)")
    p.add_argument("--no-seed", action="store_true",
                   help="evolve without the Taylor fit's seed (search.seed_with_fit = false); results in PART-noseed/")
    p.add_argument("--record-inputs", action="store_true",
                   help="fly: the flies also record each encounter's input and their initial weights, so the fit "
                        "uses the exact likelihood instead of the weight filter; results in PART-recorded/")
    p.add_argument("--judge-particles", type=int, default=0,
                   help="fly: judge the front (selection, fit check, held-out report) by the particle filter's "
                        "likelihood with this many particles (protocol.judge_particles); results in PART-particlesN/")
    p.add_argument("--shard", default="0/1", help="K/N: only cases whose index is K modulo N (parallel processes)")
    a = p.parse_args()
    out = Path(a.out)
    if a.part == "summary":
        return summary(out)
    if a.record_inputs and a.part != "fly":
        p.error("--record-inputs is for the fly part (activity data always hold their inputs)")
    if a.judge_particles and a.part != "fly":
        p.error("--judge-particles is for the fly part")
    folder = out / (a.part + ("-noseed" if a.no_seed else "") + ("-recorded" if a.record_inputs else "")
                    + (f"-particles{a.judge_particles}" if a.judge_particles else ""))
    folder.mkdir(parents=True, exist_ok=True)
    start = time.time()
    k, n = (int(v) for v in a.shard.split("/"))
    todo = [c for i, c in enumerate(cases(a.part)) if i % n == k and (not a.only or c["id"] in a.only)
            and (a.redo or not (folder / f"{c['id']}.json").exists())]
    if a.no_seed:
        todo = [{**c, "sets": c["sets"] + ["search.seed_with_fit=false"]} for c in todo]
    if a.record_inputs:
        todo = [{**c, "sets": c["sets"] + ["protocol.record_inputs=true"]} for c in todo]
    if a.judge_particles:
        todo = [{**c, "sets": c["sets"] + [f"protocol.judge_particles={a.judge_particles}"]} for c in todo]
    for done, case in enumerate(todo):
        if time.time() - start > a.budget_s or (a.max_cases and done >= a.max_cases):
            print(f"chunk done (--budget-s {a.budget_s:g}, --max-cases {a.max_cases}); {len(todo) - done} cases "
                  "left in this shard (run again)")
            return 0
        with tempfile.TemporaryDirectory() as tmp:
            try:
                row = run_case(case, a.part, Path(tmp))
            except Exception as exc:  # recorded, so that a resumed sweep moves on (and the summary shows it)
                row = {**case, "recovered": False, "error": f"{type(exc).__name__}: {exc}"}
        write_json(folder / f"{case['id']}.json", row)
        print(f"{case['id']}: {'skipped' if 'skipped' in row else 'recovered' if row['recovered'] else 'MISSED'} "
              f"{row.get('selected', '')} ({row.get('seconds', 0)} s)", flush=True)
    print("all cases done" if todo else "nothing to do")
    return 0


if __name__ == "__main__":
    sys.exit(main())
