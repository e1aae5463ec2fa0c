"""Weights through the controller: configured per backend, changed with `p4lb weight`, kept in the state file,
staged and committed like every change, shown by `status`; bad weights named and refused."""

import json
from collections import Counter

import pytest

from p4lb.controller import cli
from p4lb.controller.controller import Controller
from p4lb.controller.errors import ConfigFileError
from p4lb.controller.settings import load, parse
from p4lb.controller.switch import ModelSwitch
from p4lb.model.ops import Fail, Weight
from p4lb.model.p4lb import check_plan
from p4lb.model.pool import MAX_WEIGHT, interleave
from test_runtime import _toml, config


def _group(ctl: Controller) -> tuple[int, ...]:
    st = ctl.switch.state  # type: ignore[attr-defined]
    return st.members(st.version)


def test_configured_weights_shape_the_deployed_group(tmp_path):
    data = config()
    data["backend"][2]["weight"] = 3
    settings = parse(data)
    ctl = Controller(settings, ModelSwitch(settings.lb), grace_s=0)
    ctl.deploy()
    assert settings.weights == (1, 1, 3, 1) and _group(ctl) == interleave({1: 1, 2: 1, 3: 3, 4: 1})


def test_weight_command_is_staged_committed_and_kept(tmp_path):
    path, state = tmp_path / "p4lb.toml", tmp_path / "p4lb.state.json"
    path.write_text(_toml(config()))
    settings = load(path)
    first = Controller(settings, ModelSwitch(settings.lb), grace_s=0, state_file=state)
    first.deploy()
    before = first.switch.state  # type: ignore[attr-defined]
    applied = first.apply(Weight(2, 4))
    check_plan(before, list(applied.writes), applied.after)  # the plan the proofs cover: staged, then one commit
    assert Counter(_group(first)) == {1: 1, 2: 4, 3: 1, 4: 1}
    assert json.loads(state.read_text())["weights"] == [1, 4, 1, 1]
    first.apply(Fail(2))
    second = Controller(settings, first.switch, grace_s=0, state_file=state)
    assert second.pool.weight(2) == 4 and second.reconcile() == []
    assert [r.weight for r in second.status(scan=False)] == [1, 4, 1, 1]


@pytest.mark.parametrize(("weight", "words"), [(0, "1.."), (MAX_WEIGHT + 1, "1.."), ("heavy", "1..")])
def test_bad_configured_weight_is_named(weight, words):
    data = config()
    data["backend"][1]["weight"] = weight
    with pytest.raises(ConfigFileError) as err:
        parse(data)
    assert err.value.field == "backend[1].weight" and words in str(err.value)


def test_weights_beyond_a_groups_positions_are_refused():
    data = config()
    data["backend"] = [dict(data["backend"][0], address=f"10.1.{i // 200}.{i % 200 + 1}", mac=f"00:00:00:01:{i // 200:02x}:{i % 200 + 1:02x}", port=1 + i % 200, weight=MAX_WEIGHT) for i in range(40)]
    with pytest.raises(ConfigFileError) as err:
        parse(data)
    assert err.value.field == "backend.weight" and "at most 255" in str(err.value)


def test_cli_weight_out_of_range_is_a_usage_error_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "p4lb.toml"
    path.write_text(_toml(config()))
    assert cli.main(["-c", str(path), "--dry-run", "weight", "2", str(MAX_WEIGHT + 1)]) == 2
    said = capsys.readouterr()
    assert "argument weight: 9 is out of range: a weight is 1..8" in said.out + said.err
    assert not list(tmp_path.glob("*.state.json")) and not list(tmp_path.glob("*.lock"))
    assert cli.main(["-c", str(path), "--dry-run", "weight", "2", "3"]) == 0
    capsys.readouterr()
    assert cli.main(["-c", str(path), "--dry-run", "status", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["weight"] for r in out["backends"]] == [1, 3, 1, 1]
