"""``python -m dbha`` is the ``dbha`` command."""

from dbha.cli import run

run()
