"""The project's exception types.

Every error about bad user input is a :class:`CervkitInputError`, a
``ValueError`` subclass whose message names the offending file (when there is
one) and the problem, so a batch job can report it and go on.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path


class CervkitInputError(ValueError):
    """Bad input: unreadable, corrupt, wrong shape, empty or inconsistent.

    Parameters
    ----------
    problem : str
        What is wrong, in words a user can act on.
    path : str or PathLike, optional
        The file (or folder) the problem was found in.
    """

    def __init__(self, problem: str, path: str | PathLike[str] | None = None) -> None:
        self.problem = problem
        self.path = Path(path) if path is not None else None
        message = f"{self.path}: {problem}" if self.path is not None else problem
        super().__init__(message)


class ManifestError(CervkitInputError):
    """A manifest failed validation; ``problems`` lists every problem found.

    Parameters
    ----------
    problems : list of str
        One line per problem (all of them, not only the first).
    path : str or PathLike, optional
        The manifest file.
    """

    def __init__(self, problems: list[str], path: str | PathLike[str] | None = None) -> None:
        self.problems = list(problems)
        listing = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in manifest:\n{listing}", path)
