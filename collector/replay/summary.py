"""The exact counts of one replay and the bounded lists of what went wrong.

Counts are exact; the lists of failures are capped (MAX_LISTED) so that a replay of a
million bad records still prints a readable summary. Pure data: no I/O beyond `render`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_LISTED = 20


@dataclass(slots=True)
class Summary:
    read: int = 0
    matched: int = 0
    written: int = 0
    deduplicated: int = 0
    upgraded: int = 0
    failed: int = 0  # could not upgrade, or the sink refused
    malformed: int = 0
    recovered: int = 0
    still_invalid: int = 0
    dry_run: bool = False
    # (event_id or topic, reason) of failed records; (topic, partition, offset, reason)
    failures: list[tuple[str, str]] = field(default_factory=list)
    malformed_at: list[tuple[str, int, int, str]] = field(default_factory=list)

    def fail(self, what: str, reason: str) -> None:
        self.failed += 1
        if len(self.failures) < MAX_LISTED:
            self.failures.append((what, reason))

    def bad_record(self, topic: str, partition: int, offset: int, reason: str) -> None:
        self.malformed += 1
        if len(self.malformed_at) < MAX_LISTED:
            self.malformed_at.append((topic, partition, offset, reason))

    def add(self, other: Summary) -> None:
        """Fold in the summary of another part of the same replay (a Spark task's)."""
        for name in self.COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures += other.failures[: MAX_LISTED - len(self.failures)]
        self.malformed_at += other.malformed_at[: MAX_LISTED - len(self.malformed_at)]

    COUNTS = (
        "read",
        "matched",
        "written",
        "deduplicated",
        "upgraded",
        "failed",
        "malformed",
        "recovered",
        "still_invalid",
    )

    def counts(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.COUNTS}

    def render(self) -> str:
        head = "replay summary" + (" (dry run, nothing written)" if self.dry_run else "")
        lines = [head + ": " + " ".join(f"{k}={v}" for k, v in self.counts().items())]
        lines += [f"  malformed {t}[{p}]@{o}: {why}" for t, p, o, why in self.malformed_at]
        if self.malformed > len(self.malformed_at):
            lines.append(f"  ... and {self.malformed - len(self.malformed_at)} more malformed")
        lines += [f"  failed {what}: {why}" for what, why in self.failures]
        if self.failed > len(self.failures):
            lines.append(f"  ... and {self.failed - len(self.failures)} more failed")
        return "\n".join(lines)
