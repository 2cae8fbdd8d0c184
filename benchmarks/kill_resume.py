"""Kill -9 at random moments, then --resume: the result must equal the uninterrupted run (issue 17).

    python benchmarks/kill_resume.py [--runs 100] [--out results/kill-resume] [--seed 0]

For each of `evolve` (tasks/oja.toml, small) and `fit` (tasks/fit-activity.toml on simulated data):
one uninterrupted reference run, then --runs runs killed with SIGKILL after a random delay
(uniform over the run's duration, start-up included) and resumed with --resume. A run killed before
its first checkpoint cannot be resumed: it is started again with --force (counted as "restarted").
Checks every JSON file of the folder parses and the final pareto.csv (evolve) or coefficients.csv
and params.json (fit) are byte-identical to the reference. Prints counts and writes kill.csv.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "rulesearch.cli"]
SMALL = ["--set", "inputs.steps=300", "--set", "inputs.trials=2"]


def commands(data: Path):
    evolve = CLI + ["evolve", str(ROOT / "tasks" / "oja.toml"), "--seed", "3", "--population", "80",
                    "--generations", "12"] + SMALL
    fit = CLI + ["fit", str(ROOT / "tasks" / "fit-activity.toml"), "--data", str(data), "--seed", "3",
                 "--generations", "400", "--set", "inputs.steps=150", "--set", "inputs.trials=4",
                 "--set", "fit.optimizer=cmaes"]  # the CMA-ES replay is what resume must reproduce
    return {"evolve": (evolve, ("pareto.csv",)), "fit": (fit, ("coefficients.csv", "params.json"))}


def run(cmd, out: Path, extra=()):
    return subprocess.run(cmd + ["--out", str(out)] + list(extra), capture_output=True, text=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--out", default="results/kill-resume")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    data = out / "d.npz"
    if not data.exists():
        subprocess.run(CLI + ["simulate", str(ROOT / "tasks" / "fit-activity.toml"), "--rule", "x*y - 0.5*y**2*w",
                              "--out", str(data), "--set", "inputs.steps=150", "--set", "inputs.trials=4"], check=True)
    rows = []
    for kind, (cmd, files) in commands(data).items():
        ref = out / f"{kind}-reference"
        t0 = time.monotonic()
        if not (ref / files[0]).exists():
            assert run(cmd, ref, ["--force"]).returncode == 0
        duration = max(time.monotonic() - t0, 3.0)
        counts = {"identical": 0, "different": 0, "corrupt": 0, "restarted": 0}
        for k in range(args.runs):
            folder = out / f"{kind}-{k}"
            delay = rng.uniform(0.3, duration)
            proc = subprocess.Popen(cmd + ["--out", str(folder), "--force"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(delay)
            proc.kill()
            proc.wait()
            corrupt = False
            for f in folder.glob("*.json"):
                try:
                    json.loads(f.read_text())
                except ValueError:
                    corrupt = True
            if corrupt:
                counts["corrupt"] += 1
            if (folder / "checkpoint.json").exists() and (folder / "run.json").exists():
                result = subprocess.run(CLI + [kind, cmd[4], "--resume", str(folder)], capture_output=True, text=True)
            else:
                counts["restarted"] += 1
                result = run(cmd, folder, ["--force"])
            same = result.returncode == 0 and all((folder / f).read_bytes() == (ref / f).read_bytes() for f in files)
            counts["identical" if same else "different"] += 1
            rows.append([kind, k, round(delay, 2), int(same), int(corrupt)])
            print(f"{kind} {k:3d} killed after {delay:4.1f} s: {'identical' if same else 'DIFFERENT'}"
                  f"{' (corrupt file)' if corrupt else ''}", flush=True)
        print(f"{kind}: {counts}", flush=True)
    with open(out / "kill.csv", "w") as fh:
        fh.write("command,run,killed_after_s,identical,corrupt_json\n")
        fh.writelines(",".join(map(str, r)) + "\n" for r in rows)


if __name__ == "__main__":
    main()
