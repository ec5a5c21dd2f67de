"""What an audit finds: findings naming client, round and check, and the verdict.

Exit codes follow the command line's contract: 0 clean, 1 findings, 2 cannot audit. A
check that fails unexpectedly (the auditor could not decide, which blames no one) is
reported as a finding whose check is :data:`CANNOT_AUDIT_CHECK`, naming the check that
failed; such a finding makes the whole verdict "cannot audit".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import IntEnum

#: The ``check`` of a finding that says a check could not run (no party is blamed).
CANNOT_AUDIT_CHECK = "cannot-audit"


class Verdict(IntEnum):
    """The outcome of an audit, valued as the command's exit code."""

    CLEAN = 0
    FINDINGS = 1
    CANNOT_AUDIT = 2


@dataclass(frozen=True)
class Finding:
    """One thing that does not add up: which round, which client (if any), which check."""

    round_id: int
    check: str
    detail: str
    client: str | None = None


@dataclass(frozen=True)
class RoundAudit:
    """Per-round summary: what was looked at and which checks ran clean."""

    round_id: int
    status: str
    committed: int
    participants: int
    checks: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditReport:
    """The auditor's answer for a ledger and an artifact store."""

    ledger_address: str
    chain_id: int | None
    rounds: tuple[RoundAudit, ...]
    findings: tuple[Finding, ...]
    cannot_audit: str | None = None
    epsilon_tolerance: float = 0.0

    @property
    def verdict(self) -> Verdict:
        if self.cannot_audit is not None or any(
            finding.check == CANNOT_AUDIT_CHECK for finding in self.findings
        ):
            return Verdict.CANNOT_AUDIT
        return Verdict.FINDINGS if self.findings else Verdict.CLEAN

    @property
    def exit_code(self) -> int:
        return int(self.verdict)

    def to_dict(self) -> dict[str, object]:
        return {
            "verdict": self.verdict.name.lower().replace("_", "-"),
            "exit_code": self.exit_code,
            "ledger_address": self.ledger_address,
            "chain_id": self.chain_id,
            "cannot_audit": self.cannot_audit,
            "epsilon_tolerance": self.epsilon_tolerance,
            "rounds": [asdict(round_audit) for round_audit in self.rounds],
            "findings": [asdict(finding) for finding in self.findings],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def to_table(self) -> str:
        """A readable table: one line per round, then one line per finding."""
        lines = [f"audit of ledger {self.ledger_address} (chain id {self.chain_id})"]
        if self.cannot_audit is not None:
            lines.append(f"CANNOT AUDIT: {self.cannot_audit}")
            return "\n".join(lines)
        check_names = sorted({name for r in self.rounds for name in r.checks})
        header = ["round", "status", "committed", "included", *check_names]
        rows = [
            [
                str(r.round_id),
                r.status,
                str(r.committed),
                str(r.participants),
                *("ok" if r.checks.get(name, True) else "FAIL" for name in check_names),
            ]
            for r in self.rounds
        ]
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
        lines.extend(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows
        )
        if self.findings:
            lines.append(f"{len(self.findings)} finding(s):")
            for finding in self.findings:
                who = f" client {finding.client}" if finding.client else ""
                lines.append(f"  round {finding.round_id}{who}: {finding.check}: {finding.detail}")
        lines.append(f"verdict: {self.verdict.name.lower().replace('_', '-')}")
        return "\n".join(lines)
