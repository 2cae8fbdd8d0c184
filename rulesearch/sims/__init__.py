"""Simulator plug-ins: ``SIMULATORS`` maps ``network.simulator`` to one.

Adding a simulator is one folder (or module) here:

1. Subclass ``base.Simulator`` (read its docstrings): ``configure`` reads and validates the
   task's [network] and the sections the simulator names in ``sections`` (unknown fields are
   refused); ``pathways`` declares the plastic pathways and, per pathway, the variables a rule
   may read (catalogue names from ``primitives.VARIABLES``; add a row there for a new one);
   ``generate`` makes the inputs every candidate shares from a seed; ``load_data``/``attach``/
   ``split`` bring recorded data in; ``simulate(task, packed)`` runs a whole population (packed
   individual-major, pathway-minor) in a Numba kernel and returns a result with ``blown``;
   ``visited_states`` feeds ``distill``; ``heldout_scores`` and ``synthesize`` serve ``fit`` and
   ``simulate``. Objectives are ``base.Objective`` rows in the simulator's ``objectives``.
2. Register the instance below.
3. Add its plain-NumPy twin to ``tests/naive.py`` and a case to ``NAIVE_CASES`` in
   ``tests/test_simulators.py``; the registry-parametrised test compares the two.

The rest of rulesearch never compares simulator names: it asks the plug-in.
"""
from __future__ import annotations

from .base import Objective, PathwaySpec, Simulator
from .choice import SIMULATOR as CHOICE
from .lif import SIMULATOR as LIF
from .lif_network import SIMULATOR as LIF_NETWORK
from .noise_prune import SIMULATOR as NOISE_PRUNE
from .rate import SIMULATOR as RATE

SIMULATORS: dict[str, Simulator] = {s.name: s for s in (RATE, CHOICE, LIF, LIF_NETWORK, NOISE_PRUNE)}


def objectives() -> dict[str, list[str]]:
    """Objective name -> the simulators that accept it."""
    out: dict[str, list[str]] = {}
    for sim in SIMULATORS.values():
        for name in sim.objectives:
            out.setdefault(name, []).append(sim.name)
    return out


__all__ = ["Objective", "PathwaySpec", "SIMULATORS", "Simulator", "objectives"]
