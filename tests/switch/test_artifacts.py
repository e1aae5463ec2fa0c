"""The committed BMv2 JSON and P4Info of every build (p4lb, p4lb_small, p4lb_mid, seed, forward, probe_floor, probe_swar) are what p4c makes of the
committed sources with the build's defines."""

import json

import pytest

from p4lb.lab.toolchain import BUILDS, artifacts, compile_p4, missing_compiler


@pytest.mark.parametrize("build", BUILDS)
def test_artifacts_match_sources(build, tmp_path):
    reason = missing_compiler()
    if reason:
        print(f"\nSKIP {build} artifacts check: {reason}")
        pytest.skip(reason)
    committed_p4info, committed_json = artifacts(build)
    if not committed_json.exists():
        pytest.fail(f"{committed_json} is not committed: run `nox -s build_p4` and commit p4/build/")
    fresh_p4info, fresh_json = compile_p4(build, tmp_path)
    strip = lambda d: {k: v for k, v in d.items() if k != "program"}  # noqa: E731  (the source path differs)
    assert strip(json.loads(fresh_json.read_text())) == strip(json.loads(committed_json.read_text()))
    assert fresh_p4info.read_text() == committed_p4info.read_text()


def test_small_build_is_p4lb_on_32_places():
    """p4lb_small differs from p4lb only in the flow table's size: 32 places (4 ways x one 8-place bucket)."""
    big, small = (json.loads(artifacts(b)[1].read_text()) for b in ("p4lb", "p4lb_small"))
    sizes = {r["name"].rsplit(".", 1)[-1]: r["size"] for r in small["register_arrays"]}
    assert {k: sizes[k] for k in ("flow_state", "flow_key", "flow_backend", "flow_last_seen")} == dict.fromkeys(("flow_state", "flow_key", "flow_backend", "flow_last_seen"), 32)
    assert {r["name"]: r["size"] for r in big["register_arrays"]}["MyIngress.flow_state"] == 1 << 20
    assert [a["name"] for a in small["actions"]] == [a["name"] for a in big["actions"]]


def _tables(program: dict) -> dict:
    """Each keyed table of a BMv2 JSON and its actions."""
    return {t["name"]: t["actions"] for p in program["pipelines"] for t in p["tables"] if t["key"]}


def _hashes(program: dict) -> list:
    """The crc32 calculations of a BMv2 JSON: their inputs, in order."""
    return [c["input"] for c in program["calculations"] if c["algo"] == "crc32"]


def test_probe_floor_is_forward_plus_only_the_32_candidate_probe():
    """probe_floor.json (a benchmark `lab.instructions` and `lab.bench` measure: the probe place by place): forward's
    table and actions, 4 crc32 hashes, 32 reads of one packed register and nothing that writes state."""
    floor, forward = (json.loads(artifacts(b)[1].read_text()) for b in ("probe_floor", "forward"))
    ops = [p["op"] for a in floor["actions"] for p in a["primitives"]]
    assert ops.count("register_read") == 32 and ops.count("modify_field_with_hash_based_offset") == 4
    assert not {"register_write", "count"} & set(ops)
    assert [(r["name"], r["bitwidth"], r["size"]) for r in floor["register_arrays"]] == [("FwdIngress.places", 106, 1 << 20)]
    assert len(_hashes(floor)) == 4
    assert _tables(floor) == _tables(forward)


def test_probe_swar_is_forward_plus_only_a_packed_32_candidate_probe():
    """probe_swar.json: forward's table and actions, probe_floor's 4 crc32 hashes (the same inputs), 4 reads of one
    register of buckets (8 places of 128 bits in a cell: 2^20 places, as probe_floor) and nothing that writes state;
    what its masks compute is proven in tests/test_probe_swar.py."""
    swar, forward, floor = (json.loads(artifacts(b)[1].read_text()) for b in ("probe_swar", "forward", "probe_floor"))
    ops = [p["op"] for a in swar["actions"] for p in a["primitives"]]
    assert ops.count("register_read") == 4 and ops.count("modify_field_with_hash_based_offset") == 4
    assert not {"register_write", "count"} & set(ops)
    assert [(r["name"], r["bitwidth"], r["size"]) for r in swar["register_arrays"]] == [("FwdIngress.buckets", 1024, (1 << 20) // 8)]
    assert _hashes(swar) == _hashes(floor) and len(_hashes(swar)) == 4
    assert _tables(swar) == _tables(forward)
