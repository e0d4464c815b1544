"""Fixtures for lab tests: one lab per test session, always torn down.

Lab tests need root and Linux network namespaces. They fail (not skip) when
they cannot run, so that a green run always means they ran; deselect them
with ``-m 'not lab'`` on a machine that cannot build a lab.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from dbha.lab.core import Lab


def _root_links() -> set[str]:
    out = subprocess.run(
        ["ip", "-j", "link", "show"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    return {d["ifname"] for d in json.loads(out)}


@pytest.fixture(scope="session")
def root_links_before() -> set[str]:
    return _root_links()


# The operator-built lab's prefix: the session's plus this (at most 10 characters).
OPERATOR_SUFFIX = "op"


def session_prefix() -> str:
    """The session lab's prefix; labs beside it add a suffix to it."""
    return f"t{os.getpid() % 100000}"


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (run them as root, or deselect with -m 'not lab')")


@pytest.fixture(scope="session")
def lab(root_links_before: set[str]) -> Iterator[Lab]:
    """A whole lab with its own prefix, for the session; torn down at the end."""
    _need_root()
    the_lab = Lab(session_prefix())
    try:
        the_lab.up(supervisors=False)  # the driver tests act on the pairs themselves
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture(scope="session")
def operator_lab(root_links_before: set[str]) -> Iterator[Lab]:
    """A lab beside the session's (its prefix plus OPERATOR_SUFFIX) whose pairs are
    built as an operator would build them (``--pairs operator``), without
    supervisors, for the session; torn down at the end."""
    _need_root()
    the_lab = Lab(session_prefix() + OPERATOR_SUFFIX)
    try:
        the_lab.up(supervisors=False, pairs="operator")
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture
def healthy_lab(lab: Lab) -> Iterator[Lab]:
    """The session lab, healthy before the test; healed and checked after it."""
    st = lab.status()
    assert st["healthy"], st["problems"]
    yield lab
    lab.heal()
    st = lab.status()
    assert st["healthy"], f"lab not healthy after heal: {st['problems']}"
