"""Run several optimisations side by side so that their loss evaluations share population calls.

Constant optimisation tunes a few rules at a time, each asking for the losses of a handful of
variants per step (central differences, compass points, snapping candidates). One population call
costs about as much for three rules as for three hundred (threads, set-up), so asking one rule at a
time wastes most of each call. Here every optimisation runs unchanged in its own thread; whenever
all of them are waiting for losses (or finished), their requests are joined into one evaluation on
the calling thread. Losses do not depend on which other rules share the call, so each optimisation
sees exactly the numbers it would alone: the results are those of running them one after another.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

import numpy as np


class _Aborted(Exception):
    """The coordinating thread failed; waiting optimisations stop."""


def run_lockstep(jobs: Sequence[Callable[[Callable[[list], np.ndarray]], Any]],
                 evaluate: Callable[[list], np.ndarray]) -> list:
    """Call every ``job(loss)`` concurrently, where ``loss(rules)`` returns the losses of a list of
    rules; requests pending at the same time go to ``evaluate`` as one list (in job order). Returns
    the jobs' results in order; an exception in a job or in ``evaluate`` is raised here."""
    n = len(jobs)
    if n == 0:
        return []
    cond = threading.Condition()
    pending: dict[int, list] = {}
    answers: dict[int, np.ndarray] = {}
    done: set[int] = set()
    outputs: list = [None] * n
    errors: list = [None] * n
    aborted = False

    def loss_for(i):
        def loss(rules):
            with cond:
                pending[i] = list(rules)
                cond.notify_all()
                while i not in answers and not aborted:
                    cond.wait()
                if aborted:
                    raise _Aborted
                return answers.pop(i)
        return loss

    def run(i):
        try:
            outputs[i] = jobs[i](loss_for(i))
        except BaseException as exc:  # re-raised by the coordinator
            errors[i] = exc
        finally:
            with cond:
                done.add(i)
                cond.notify_all()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    try:
        while True:
            with cond:
                while len(pending) + len(done) < n:
                    cond.wait()
                if len(done) == n:
                    break
                batch = sorted(pending.items())
                pending.clear()
            losses = np.asarray(evaluate([r for _, rules in batch for r in rules]))
            with cond:
                k = 0
                for i, rules in batch:
                    answers[i] = losses[k:k + len(rules)]
                    k += len(rules)
                cond.notify_all()
    except BaseException:
        with cond:
            aborted = True
            cond.notify_all()
        raise
    finally:
        for t in threads:
            t.join()
    for exc in errors:
        if exc is not None and not isinstance(exc, _Aborted):
            raise exc
    return outputs
