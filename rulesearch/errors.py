"""Error types for bad files. The command line prints them as one line and exits with 2."""


class GrammarError(ValueError):
    """A grammar file, or a rule written against a grammar, is invalid."""


class TaskError(ValueError):
    """A task file or a ``--set`` override is invalid."""


class DataError(ValueError):
    """A data file does not follow its documented schema."""
