"""What a drill found: its counts, notes and failed expectations, and the table of them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

# ----------------------------------------------------------------------------------- results

@dataclass
class Result:
    drill: str
    sent: int = 0
    ok: int = 0
    client_errors: int = 0
    server_errors: int = 0
    conn_errors: int = 0
    lost: int = 0
    restarts: int = 0
    recovery_s: float | None = None
    peak_rss_mb: float | None = None
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def expect(self, condition: bool, failure: str) -> None:
        if not condition:
            self.failures.append(failure)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def count(self, outcomes: Iterable[Outcome]) -> None:
        for out in outcomes:
            self.sent += 1
            if out.status is None:
                if out.kind == "conn":
                    self.conn_errors += 1
                else:
                    self.lost += 1
            elif out.status < 300:
                self.ok += 1
            elif out.status < 500:
                self.client_errors += 1
            else:
                self.server_errors += 1

    def expect_nothing_lost(self) -> None:
        self.expect(self.lost == 0, f"{self.lost} request(s) got neither an answer nor an error")


@dataclass
class Outcome:
    status: int | None
    kind: str  # "http" (an answer), "conn" (clear connection failure), "lost" (deadline passed)
    seconds: float
    tag: str = ""
    body: bytes = b""


COLUMNS = ("drill", "sent", "2xx", "4xx", "5xx", "conn err", "lost", "restarts", "recovery s",
           "peak RSS MB", "result")


def table(results: list[Result]) -> str:
    rows = [COLUMNS]
    for r in results:
        rows.append((r.drill, str(r.sent), str(r.ok), str(r.client_errors), str(r.server_errors),
                     str(r.conn_errors), str(r.lost), str(r.restarts),
                     "-" if r.recovery_s is None else f"{r.recovery_s:.1f}",
                     "-" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f}",
                     "pass" if r.passed else "FAIL"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [" | ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
