"""The transition table: well-formed, enforced by check(), rendered into the docs."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbha.core.model import (
    ACQUIRE_VIP,
    FENCE,
    PROMOTE,
    RELEASE_VIP,
    RUN_SAFETY_CHECK,
    Action,
    Decision,
    NodeRole,
    NodeState,
    Notify,
)
from dbha.core.tablepage import BEGIN, END, render, splice
from dbha.core.transitions import AMBIENT, ROWS, TABLE, check

DOC = Path(__file__).resolve().parents[2] / "docs" / "state-machine.md"
R = NodeRole


def test_rows_are_well_formed() -> None:
    assert len(ROWS) == len(TABLE)
    for row in TABLE:
        assert row.sources, row.rule
        assert row.condition and row.reason, row.rule
        assert all(issubclass(cls, Action) for cls, _ in row.actions), row.rule


def test_every_role_has_a_way_out_and_a_way_in() -> None:
    """No dead-end role: each role is left by some row and entered by some row."""
    for role in R:
        assert any(role in r.sources and r.target not in (None, role) for r in TABLE), role
        assert any(role in (r.target, r.via) for r in TABLE), role


def _decision(rule: str, to: NodeRole, *actions: Action) -> Decision:
    return Decision(NodeState(role=to), actions, rule, "why")


@pytest.mark.parametrize(
    ("state", "decision", "problem"),
    [
        (NodeState(R.REPLICA), _decision("no-such-rule", R.REPLICA), "not in the table"),
        (NodeState(R.REPLICA), _decision("primary-serving", R.PRIMARY), "not allowed"),
        (
            NodeState(R.PRIMARY),
            _decision("primary-isolated", R.PRIMARY, FENCE, Notify("f")),
            "goes to primary",
        ),
        (NodeState(R.PRIMARY), _decision("primary-isolated", R.FENCED, FENCE), "missing Notify"),
        (
            NodeState(R.PRIMARY),
            _decision("primary-isolated", R.FENCED, FENCE, Notify("f"), PROMOTE),
            "unexpected",
        ),
        (
            NodeState(R.PRIMARY),
            _decision("primary-isolated", R.FENCED, Notify("f"), RELEASE_VIP),
            "unexpected",
        ),
        (
            NodeState(R.HANDOVER),
            _decision("handover-wait", R.HANDOVER, RUN_SAFETY_CHECK),
            "unexpected",
        ),
    ],
)
def test_check_rejects_what_the_table_does_not_allow(
    state: NodeState, decision: Decision, problem: str
) -> None:
    assert problem in (check(state, decision) or "")


@pytest.mark.parametrize(
    ("state", "decision"),
    [
        (NodeState(R.PRIMARY), _decision("primary-isolated", R.FENCED, Notify("f"))),
        (
            NodeState(R.PRIMARY),
            _decision("primary-isolated", R.FENCED, RELEASE_VIP, FENCE, Notify("f")),
        ),
        (NodeState(R.PRIMARY), _decision("primary-serving", R.PRIMARY, RUN_SAFETY_CHECK)),
        (NodeState(R.PRIMARY), _decision("primary-take-vip", R.PRIMARY, ACQUIRE_VIP)),
    ],
)
def test_check_accepts_optional_and_ambient_actions(state: NodeState, decision: Decision) -> None:
    assert check(state, decision) is None


def test_ambient_action_is_the_safety_check_only() -> None:
    assert AMBIENT[0].__name__ == "RunSafetyCheck"
    assert R.HANDOVER not in AMBIENT[1]


def test_render_has_the_diagram_and_every_rule() -> None:
    text = render()
    assert text.startswith(BEGIN) and text.rstrip().endswith(END)
    assert "```mermaid\nstateDiagram-v2" in text
    for row in TABLE:
        assert f"| `{row.rule}` |" in text
    assert "replica --> promoting : " in text and "promoting --> primary : " in text
    assert "primary --> fenced : " in text


def test_the_documentation_is_up_to_date() -> None:
    """docs/state-machine.md holds exactly what the table renders today.

    Regenerate with: .venv/bin/python scripts/state-machine-doc
    """
    doc = DOC.read_text()
    assert splice(doc) == doc
    assert render().rstrip("\n") in doc


def test_splice_replaces_only_the_generated_part() -> None:
    doc = f"# Title\n\nprose\n\n{BEGIN}\nSTALE-CONTENT\n{END}\n\nmore prose\n"
    out = splice(doc)
    assert out.startswith("# Title\n\nprose\n\n") and out.endswith("\n\nmore prose\n")
    assert "STALE-CONTENT" not in out
    with pytest.raises(ValueError):
        splice("no markers")
