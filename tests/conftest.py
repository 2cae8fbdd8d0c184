from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
GRAMMARS = sorted((ROOT / "grammars").glob("*.toml"))
TASKS = sorted((ROOT / "tasks").glob("*.toml"))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture
def hebbian():
    from rulesearch.grammar import load_grammar
    return load_grammar(ROOT / "grammars" / "hebbian.toml")


@pytest.fixture
def full():
    """The grammar with every operator (div, neg, tanh, ...)."""
    from rulesearch.grammar import load_grammar
    return load_grammar(ROOT / "grammars" / "hebbian-full.toml")
