"""The committed BMv2 JSON and P4Info are what p4c makes of the committed sources."""

import json

import pytest

from p4lb.lab.toolchain import PROGRAMS, artifacts, compile_p4, missing_compiler


@pytest.mark.parametrize("program", PROGRAMS)
def test_artifacts_match_sources(program, tmp_path):
    reason = missing_compiler()
    if reason:
        print(f"\nSKIP {program} artifacts check: {reason}")
        pytest.skip(reason)
    committed_p4info, committed_json = artifacts(program)
    if not committed_json.exists():
        pytest.fail(f"{committed_json} is not committed: run `nox -s build_p4` and commit p4/build/")
    fresh_p4info, fresh_json = compile_p4(program, tmp_path)
    strip = lambda d: {k: v for k, v in d.items() if k != "program"}  # noqa: E731  (the source path differs)
    assert strip(json.loads(fresh_json.read_text())) == strip(json.loads(committed_json.read_text()))
    assert fresh_p4info.read_text() == committed_p4info.read_text()
