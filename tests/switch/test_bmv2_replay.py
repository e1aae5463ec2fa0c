"""The JSON reading is BMv2's, on exactly the packet where a mutated JSON and the model differ.

A mutant of the compiled JSON is written to a temp dir; the equivalence proof finds where it differs from the
model and writes the counterexample file; the replay drives BMv2 running that mutant into the counterexample's
state (P4Runtime tables, CPU-port registers, packets for the flow slot or the seed's registers), sends the packet
and reads back what happened. On every field where the model and the JSON differ, BMv2 must do what the JSON's
reading says and not what the model says. The same file replayed on BMv2 running the committed JSON must do what
the model says, on every field.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from p4lb.lab.toolchain import require_switch
from p4lb.model.config import default_config
from p4lb.p4 import artifacts
from p4lb.verify.bmv2.cex import CexFile, read_cex, save_counterexample
from p4lb.verify.bmv2.equivalence import Verdict, check_equivalence
from p4lb.verify.bmv2.program import load_json
from p4lb.verify.bmv2.replay import ReplayReport
from p4lb.verify.runner import fresh_process
from test_bmv2_equivalence import nodes, wrong_drop_index


def hexval(node: dict) -> int | None:
    """A hexstr node's value."""
    return int(node["value"], 16) if node.get("type") == "hexstr" else None


def fin_writes_free(d: dict) -> None:
    """FIN/RST on an open flow writes OPEN + 3 (= FREE in 2 bits) instead of CLOSING."""
    for a in d["actions"]:
        for n in nodes(a["primitives"]):
            if n.get("op") == "?" and any(m.get("value") == ["tcp", "flags"] for m in nodes(n.get("cond"))) and hexval(n["left"]) == 1:
                n["left"] = {"type": "hexstr", "value": "0x03"}


def seed_flowlet_3(d: dict) -> None:
    """The seed's first failover (server 1 failed -> server 2) records server 3 in flowlet_select."""
    (choose,) = [a for a in d["actions"] if a["name"].endswith("choose") and any(hexval(p["parameters"][1]) == 2 for p in a["primitives"] if p["op"] == "assign")][:1]
    for p in choose["primitives"]:
        if p["op"] == "register_write" and p["parameters"][0]["value"].endswith("flowlet_select"):
            p["parameters"][2] = {"type": "hexstr", "value": "0x03"}


MUTANTS = {"fin_writes_free": ("p4lb", fin_writes_free), "wrong_drop_index": ("p4lb", wrong_drop_index), "seed_flowlet_3": ("seed", seed_flowlet_3)}


@pytest.fixture(scope="module")
def replay_lab():
    """One p4lb lab holding no P4Runtime session: each replay pushes its own JSON with its own session."""
    require_switch()
    from p4lb.lab.lab import Lab  # noqa: PLC0415

    with Lab("p4lb", default_config(4), push=False) as lab:
        yield lab


def replay(cex: CexFile, **kw: object) -> ReplayReport:
    """The lab's replay (imported here: the lab needs the switch extras)."""
    from p4lb.lab.replay import replay as run  # noqa: PLC0415

    return run(cex, **kw)  # type: ignore[arg-type]


def counterexample(tmp_path: Path, name: str) -> CexFile:
    """Mutate the committed JSON into tmp_path, prove it differs, and read back the counterexample file written."""
    program, mutate = MUTANTS[name]
    data = copy.deepcopy(load_json(program))
    mutate(data)
    mutant = tmp_path / f"{name}.json"
    mutant.write_text(json.dumps(data))
    r = fresh_process(check_equivalence, program, data=data, reachability=False, others=False, timeout_ms=300_000)  # as the prover runs it: in the test process a differing multi-way query took 16-250 s
    assert r.verdict is Verdict.DIFFERS and r.counterexample is not None, r.failed()
    cex = read_cex(save_counterexample(r, tmp_path / "out", mutant))
    assert cex.replayable, cex.notes
    return cex


def show(rep: ReplayReport) -> str:
    """The replay's table, for failure messages and -s."""
    from p4lb.verify.bmv2.cex import table_text  # noqa: PLC0415

    return "\n".join([*rep.notes, table_text(rep.rows), rep.verdict()])


def assert_bmv2_sides_with_json(rep: ReplayReport, failed: tuple[str, ...]) -> None:
    """The model and the JSON differ (on a field the proof named); BMv2 does what the JSON says there, everywhere."""
    diff = rep.differing()
    assert diff, f"the reached state shows no difference\n{show(rep)}"
    assert any(row.name.split("[")[0] in failed or row.name.startswith(tuple(failed)) for row in diff), f"none of {failed} differs\n{show(rep)}"
    for row in diff:
        assert row.bmv2 == row.json and row.bmv2 != row.model, f"{row.name}: model {row.model}, JSON {row.json}, BMv2 {row.bmv2}\n{show(rep)}"
    assert rep.bmv2_agrees_with_json(), show(rep)


@pytest.mark.parametrize("name", ["fin_writes_free", "wrong_drop_index"])
def test_bmv2_does_what_the_json_says_where_it_differs_from_the_model(replay_lab, tmp_path: Path, name: str) -> None:
    cex = counterexample(tmp_path, name)
    rep = replay(cex, lab=replay_lab)
    print(f"\n{name}: {show(rep)}")
    assert not [n for n in rep.notes if "left state" in n or "left FREE" in n], show(rep)  # the file's flow slot was reached
    assert_bmv2_sides_with_json(rep, cex.failed)
    committed = replay(cex, bmv2_json=artifacts("p4lb")[1], lab=replay_lab)
    print(f"committed JSON: {show(committed)}")
    assert not committed.differing() and committed.bmv2_agrees_with_model(), show(committed)


def test_seed_bmv2_does_what_the_json_says(tmp_path: Path) -> None:
    """The seed: registers reached by packets planned on the model (its own lab, started and stopped by the replay).
    The mutant may take another way than the model on the way there (that is the difference); the replay plans
    again from what it reached, and whatever it reached is what both predictions are made on."""
    require_switch()
    cex = counterexample(tmp_path, "seed_flowlet_3")
    rep = replay(cex)
    print(f"\nseed: {show(rep)}")
    assert any(" reached " in n for n in rep.notes), show(rep)
    assert_bmv2_sides_with_json(rep, cex.failed)
    committed = replay(cex, bmv2_json=artifacts("seed")[1])
    assert not committed.differing() and committed.bmv2_agrees_with_model(), show(committed)


def test_replay_command_exit_status(replay_lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m p4lb.lab.replay FILE`: exit 0 when BMv2 did what the JSON's reading says, with the table."""
    from p4lb.lab.replay import main  # noqa: PLC0415

    cex = counterexample(tmp_path, "fin_writes_free")
    path = next((tmp_path / "out").glob("bmv2-cex-p4lb-*.json"))
    assert main([str(path)]) == 0
    out = capsys.readouterr().out
    assert "BMv2 agrees with JSON" in out and any(line.lstrip().startswith(f"flow_state[{cex.scenario.only_cell('flow_state')}] *") for line in out.splitlines()), out
