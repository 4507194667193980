"""Source-only training: cross-entropy on labelled source clips; the target is never forwarded."""

from __future__ import annotations

from cmcl.methods.base import Method


class SourceOnly(Method):
    name = "source_only"
    description = "cross-entropy on the labelled source only; target never forwarded (lower bound)"
    paper_rows = ("T2 Source-only", "T3 Source-only", "T4 Source-only", "T6 Source-only")

    def needs_target(self, stage: str) -> bool:
        return False
