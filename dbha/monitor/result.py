"""What ``dbha check`` answers: a Nagios status (its exit code), one line, and a
JSON-ready document with the details."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dbha.monitor.nagios import Assessment, Status


@dataclass(frozen=True)
class CheckResult:
    """The outcome of ``dbha check``: the status (its exit code), one line, and a
    JSON-ready document with the details."""

    status: Status
    summary: str
    doc: dict[str, Any] = field(default_factory=dict)

    @property
    def line(self) -> str:
        return f"DBHA {self.status.name} - {self.summary}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.name,
            "code": int(self.status),
            "summary": self.summary,
            **self.doc,
        }


def failed(summary: str, **doc: Any) -> CheckResult:
    """A CRITICAL result that says what went wrong (the check could not look)."""
    return CheckResult(Status.CRITICAL, " ".join(summary.split())[:1000], {"mode": "error", **doc})


def result(a: Assessment, **doc: Any) -> CheckResult:
    """The result of an assessment, with its findings."""
    findings = [{"status": f.status.name, "text": f.text} for f in a.findings]
    return CheckResult(a.status, a.summary, {"findings": findings, **doc})
