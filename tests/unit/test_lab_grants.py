"""The grant statements of docs/grants.md, as the lab's operator-built pairs run them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dbha.lab import grants

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("engine", grants.ENGINES)
def test_grants_render_the_password_once_quoted(engine: str) -> None:
    rendered = grants.render(grants.grants(engine), "o'k")
    assert sum("'o''k'" in s for s in rendered) == 1
    assert not any("{password}" in s for s in rendered)
    with pytest.raises(ValueError, match="backslash"):
        grants.render(grants.grants(engine), "a\\b")


@pytest.mark.parametrize("engine", grants.ENGINES)
def test_no_statement_makes_dbha_a_superuser(engine: str) -> None:
    for g in grants.grants(engine) + grants.replication(engine):
        upper = g.sql.upper()
        for word in ("SUPERUSER", "ALL PRIVILEGES", "GRANT OPTION", "SUPER,", " SUPER "):
            assert word not in upper, g.sql
        assert g.verbs and g.why, g.sql


def test_app_user_never_appears_in_the_grant_lists() -> None:
    every = grants.PG_GRANTS + grants.PG_REPLICATION + grants.MARIA_GRANTS
    assert not [g.sql for g in every + grants.MARIA_REPLICATION if re.search(r"\bapp\b", g.sql)]


def test_unknown_engine_has_no_grant_list() -> None:
    with pytest.raises(ValueError, match="no grant list"):
        grants.grants("oracle")


@pytest.mark.parametrize("engine", grants.ENGINES)
def test_docs_show_exactly_the_statements_the_lab_runs(engine: str) -> None:
    """docs/grants.md shows each statement verbatim (one per line, with ';'), and no
    statement for dbha's accounts in its SQL blocks that the lab does not run."""
    text = (DOCS / "grants.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", text, flags=re.S)
    shown = {ln.strip() for b in blocks for ln in b.splitlines() if ln.strip()}
    lab = {f"{s};" for s in grants.render(grants.grants(engine), "<password>")}
    lab |= {f"{s};" for s in grants.render(grants.replication(engine), "<password>")}
    assert lab <= shown, sorted(lab - shown)
    every = {
        f"{s};"
        for e in grants.ENGINES
        for s in grants.render(grants.grants(e) + grants.replication(e), "<password>")
    }
    accounts = re.compile(r"\b(TO|ROLE|USER) '?(dbha|replicator|repl)\b")
    stray = {s for s in shown if accounts.search(s)} - every
    assert not stray, sorted(stray)


def test_config_reference_links_the_grants_page() -> None:
    text = (DOCS / "config.md").read_text()
    section = text[text.index("### `[database]`") : text.index("### `[heartbeat]`")]
    assert "(grants.md)" in section
