"""dbha's own exceptions.

Every library exception (psycopg, PyMySQL, pyroute2, OSError, subprocess) is
translated into one of these at the boundary of the module that called the
library, so the rest of dbha triages failures in one vocabulary.
"""

from __future__ import annotations


class DbhaError(Exception):
    """Base of every error dbha raises on purpose."""


class ConfigError(DbhaError):
    """A configuration file is missing, unreadable or invalid.

    ``problems`` holds one human-readable line per problem, each naming the key.
    """

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = list(problems)
        n = len(self.problems)
        head = f"{path}: {n} problem{'s' if n != 1 else ''}"
        super().__init__(head + "".join(f"\n  {p}" for p in self.problems))


class LabError(DbhaError):
    """The lab could not be built, inspected, faulted or torn down."""


class Refused(DbhaError):
    """An action was refused as unsafe or vetoed before it changed anything (a
    database verb that would lose data, a promotion a pre_promote hook vetoed)."""


class CommandTimeout(DbhaError):
    """An external command did not finish within its bound (``output``: what it
    wrote until then, where the caller kept it)."""

    output: str = ""


class CommandFailed(DbhaError):
    """An external command exited non-zero."""
