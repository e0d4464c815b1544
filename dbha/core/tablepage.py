"""The generated part of docs/state-machine.md, rendered from the transition table
(:data:`dbha.core.transitions.TABLE`): a Mermaid diagram and one row per rule.
``scripts/state-machine-doc`` writes it into the page; a unit test checks that
the page is up to date."""

from __future__ import annotations

import itertools

from dbha.core.transitions import ALL, TABLE

BEGIN = "<!-- BEGIN GENERATED from dbha/core/transitions.py: do not edit by hand -->"
END = "<!-- END GENERATED -->"


def render() -> str:
    """The generated part of docs/state-machine.md: a Mermaid diagram and the table."""
    lines = [BEGIN, "", "```mermaid", "stateDiagram-v2", "    [*] --> replica"]
    edges: dict[tuple[str, str], list[str]] = {}
    for row in TABLE:
        for src in row.sources:
            dst = row.target_for(src)
            hops = [src, dst] if row.via is None else [src, row.via, dst]
            for here, there in itertools.pairwise(hops):
                names = edges.setdefault((here.value, there.value), [])
                if here is not there and row.rule not in names:
                    names.append(row.rule)
    for (frm, to), rules in edges.items():
        if rules:
            lines.append(f"    {frm} --> {to} : {', '.join(rules)}")
    lines += [
        "```",
        "",
        "Every rule, in the order decide() considers them (rows that keep the role are "
        "left out of the diagram; a promotion passes through `promoting`, persisted with "
        "the new epoch before the database is promoted, and stays there if a later "
        "action fails). Actions run in order; `?` marks an action taken only "
        "when needed. Any row ending in primary, promoting, replica or fenced may also "
        "start with `RunSafetyCheck` while the peer is quiet.",
        "",
        "| rule | from | condition | to | actions | why |",
        "|---|---|---|---|---|---|",
    ]
    for row in TABLE:
        froms = "any" if row.sources == ALL else ", ".join(s.value for s in row.sources)
        to = "(same)" if row.target is None else row.target.value
        lines.append(
            f"| `{row.rule}` | {froms} | {row.condition} | {to} | {row.actions_text()} "
            f"| {row.reason} |"
        )
    lines += ["", END]
    return "\n".join(lines) + "\n"


def splice(document: str) -> str:
    """``document`` with its generated part replaced by :func:`render`."""
    head, sep, rest = document.partition(BEGIN)
    if not sep:
        raise ValueError("the document has no generated part")
    _, sep, tail = rest.partition(END)
    if not sep:
        raise ValueError("the document's generated part is not closed")
    return head + render().rstrip("\n") + tail
