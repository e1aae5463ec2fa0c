"""A saved counterexample on the model, the JSON and (run by `p4lb.lab.replay`) BMv2, side by side.

With BMv2, the model's and the JSON's columns are predictions for the state BMv2 actually held just before the
packet (read back through the CPU port) at the packet's time on the switch clock, so the three columns speak of
one run; without, they are the predictions for the file's own state. Fields marked * are those where the model
and the JSON differ: the report says which of the two BMv2 agrees with there.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from p4lb.verify.bmv2.cex import CexFile, Effect, Row, Scenario, predict_claim, predict_json, predict_model, program_of, rows, sha256, table_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayReport:
    """The comparison of one replay: its rows, whether BMv2 ran, and how the state was reached."""

    cex: CexFile
    bmv2_json: Path
    rows: tuple[Row, ...]
    switched: bool
    notes: tuple[str, ...] = ()

    def differing(self) -> tuple[Row, ...]:
        """The fields where the model and the JSON disagree."""
        return tuple(r for r in self.rows if r.differs)

    def bmv2_agrees_with_json(self) -> bool:
        """BMv2 did what the JSON's reading says, on every field."""
        return self.switched and all(r.bmv2 == r.json for r in self.rows)

    def bmv2_agrees_with_model(self) -> bool:
        """BMv2 did what the model says, on every field."""
        return self.switched and all(r.bmv2 == r.model for r in self.rows)

    def verdict(self) -> str:
        """One line: which side BMv2 sides with where the model and the JSON differ."""
        diff = self.differing()
        if not diff:
            head = "the model and the JSON agree on this state"
            if not self.switched:
                return head
            return f"{head}; BMv2 agrees with them" if self.bmv2_agrees_with_json() else f"{head}; BMv2 does not (fields: {', '.join(r.name for r in self.rows if r.bmv2 != r.json)})"
        names = ", ".join(r.name for r in diff)
        if not self.switched:
            return f"the model and the JSON differ on {names}"
        sides = {r.agrees() for r in diff}
        side = sides.pop() if len(sides) == 1 else "neither consistently"
        return f"the model and the JSON differ on {names}: BMv2 agrees with {'both' if side == 'both' else side}"


def json_notes(cex: CexFile, bmv2_json: Path | None) -> list[str]:
    """A warning if the file's JSON changed since the counterexample was found in it."""
    path = bmv2_json or cex.bmv2_json
    if bmv2_json is None and path.is_file() and sha256(path) != cex.json_sha256:
        return [f"{path} changed since the counterexample was found: replaying the file as it is now"]
    return []


def compare(cex: CexFile, bmv2_json: Path, scn: Scenario, bmv2: Effect | None = None, notes: Sequence[str] = ()) -> ReplayReport:
    """The model's and the JSON's answers on `scn` (the file's state, or the one BMv2 held), beside BMv2's if given."""
    prog = program_of(bmv2_json, cex.program)
    model = predict_model(scn) if cex.kind == "a" else predict_claim(prog, scn)
    table = rows(scn, model, predict_json(prog, scn), bmv2, claim=cex.kind == "b")
    return ReplayReport(cex, bmv2_json, tuple(table), bmv2 is not None, tuple(notes))


def dry_replay(cex: CexFile, bmv2_json: Path | None = None) -> ReplayReport:
    """No BMv2: the model and the JSON on the file's own state."""
    return compare(cex, bmv2_json or cex.bmv2_json, cex.scenario, None, json_notes(cex, bmv2_json))


def print_report(rep: ReplayReport, path: Path) -> None:
    """The replay as text: what was checked, how the state was reached, the table and the verdict."""
    cex = rep.cex
    print(f"{cex.program} counterexample {path} ({'class (a)' if cex.kind == 'a' else 'class (b)'}; the proof found it breaks: {', '.join(cex.failed)})")
    print(f"  BMv2 JSON: {rep.bmv2_json}")
    for n in (*cex.notes, *rep.notes):
        print(f"  - {n}")
    print(table_text(rep.rows))
    print(f"  {rep.verdict()}")
