"""The record of a verification by re-running: each run, its verdict, and what it proved needed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional


@dataclass(frozen=True)
class Trial:
    """One run of the command under one set."""

    capabilities: list[str]
    without: Optional[str]  # the capability left out; None for the whole set
    exit_code: Optional[int]  # None: killed at the per-run timeout
    success: bool
    verdict: str  # sufficient, insufficient, needed, not needed


@dataclass
class Verification:
    method: str  # a key of recommend.verify.METHODS
    how: str  # METHODS[method], filled in
    success: str  # what counted as success
    trials: list[Trial] = field(default_factory=list)
    needed: list[str] = field(default_factory=list)
    verified: bool = False
    summary: str = ""

    def why_not_needed(self, capability: str) -> str:
        for number, trial in enumerate(self.trials, 1):
            if trial.without == capability and trial.success:
                return f"the command succeeded without it (run {number})"
        return "not granted"

    def document(self) -> dict:
        return asdict(self)

    @classmethod
    def from_document(cls, doc: dict) -> "Verification":
        return cls(**{**doc, "trials": [Trial(**t) for t in doc["trials"]]})

    def text(self) -> list[str]:
        lines = [f"Verification: {len(self.trials)} runs {self.how}; success: {self.success}."]
        rows = [(str(n), " ".join(t.capabilities) or "(none)", t.without or "-",
                 "timeout" if t.exit_code is None else str(t.exit_code), t.verdict)
                for n, t in enumerate(self.trials, 1)]
        widths = [max(len(r[i]) for r in [("RUN", "SET", "WITHOUT", "EXIT", "VERDICT"), *rows]) for i in range(5)]
        for row in [("RUN", "SET", "WITHOUT", "EXIT", "VERDICT"), *rows]:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        lines.append(f"  {self.summary}")
        return lines
