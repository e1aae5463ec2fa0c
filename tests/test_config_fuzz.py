"""Strict config: any TOML document is either valid or a ConfigFileError naming the field (never a traceback), unknown
keys are refused with the nearest valid key; state files are written atomically, 0600, never through a symlink."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p4lb.controller import cli
from p4lb.controller.controller import load_pool, save_pool
from p4lb.controller.errors import ConfigFileError, StateFileError
from p4lb.controller.settings import SECTION_KEYS, SERVICE_KEYS, TOP_KEYS, load, parse, parse_config
from p4lb.controller.switch import MODEL_LOG, ModelSwitch
from p4lb.model.errors import ConfigError
from p4lb.model.ops import Fail, Write
from p4lb.model.pool import Pool

EXAMPLE = Path(__file__).resolve().parents[1] / "p4lb.example.toml"
VALID = {
    "active": 2,
    "vip": {"address": "10.0.0.1", "port": 80, "client_port": 1, "client_net": "10.0.0.0/24", "client_mac": "00:00:00:00:01:01"},
    "switch": {"grpc": "127.0.0.1:9559", "device_id": 0, "election_id": 1, "rpc_timeout_ms": 2000},
    "health": {"kind": "http", "port": 80, "path": "/", "expect_status": 200, "interval_ms": 100, "timeout_ms": 50, "rise": 2, "fall": 2},
    "flows": {"idle_timeout_s": 60, "table_bits": 16},
    "backend": [{"address": "10.0.2.2", "mac": "00:00:00:00:02:02", "port": 2}, {"address": "10.0.3.3", "mac": "00:00:00:00:03:03", "port": 3}],
}

scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.booleans(), st.floats(allow_nan=True), st.text(max_size=12),
    st.sampled_from(["", "10.0.0.1", "5", "http", "tcp", "https", "/", "/a b", "a\r\nb", "00:00:00:00:02:02", "10.0.0.0/24", "127.0.0.1:9559", "\0", "ü"]),
    st.datetimes(), st.dates(), st.times(),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
ALL_KEYS = sorted(set(TOP_KEYS) | {k for keys in SECTION_KEYS.values() for k in keys})
keys = st.one_of(st.sampled_from(ALL_KEYS), st.text(max_size=10), st.sampled_from(["intreval_ms", "adress", "prot", "grcp", "helth", "backends", "Path"]))


def unknown_keys(doc: object) -> bool:
    """The document has a key the schema does not know (where the schema can see it)."""
    if not isinstance(doc, dict):
        return False
    if any(k not in TOP_KEYS for k in doc):
        return True
    for section in ("vip", "switch", "health", "flows"):
        if isinstance(doc.get(section), dict) and any(k not in SECTION_KEYS[section] for k in doc[section]):
            return True
    backends = doc.get("backend")
    return isinstance(backends, list) and any(isinstance(b, dict) and any(k not in SECTION_KEYS["backend"] for k in b) for b in backends)


@st.composite
def documents(draw) -> dict:
    """The valid document with a few mutations: a value replaced (any type or shape), a key added, a key removed."""
    doc = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["replace", "add", "remove", "replace_section"]))
        section = draw(st.sampled_from(["", "vip", "switch", "health", "flows", "backend"]))
        if section == "backend" and isinstance(doc.get("backend"), list) and doc["backend"] and isinstance(doc["backend"][0], dict):
            table = doc["backend"][draw(st.integers(0, len(doc["backend"]) - 1))]
        elif section and isinstance(doc.get(section), dict):
            table = doc[section]
        else:
            table = doc
        if not isinstance(table, dict):
            continue
        if kind == "replace_section":
            doc[draw(st.sampled_from(list(TOP_KEYS)))] = draw(values)
        elif kind == "remove" and table:
            table.pop(draw(st.sampled_from(sorted(table))))
        elif kind == "replace" and table:
            table[draw(st.sampled_from(sorted(table)))] = draw(values)
        else:
            table[draw(keys)] = draw(values)
    return doc


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(documents())
def test_no_document_gives_a_traceback_and_no_unknown_key_is_accepted(doc):
    refused_or_known(parse, unknown_keys, doc)


def refused_or_known(parse_doc, unknown, doc: dict) -> None:
    """The document is refused with a ConfigFileError naming a field, or parsed and has no unknown key."""
    try:
        parse_doc(doc)
    except ConfigFileError as exc:
        assert exc.field and "invalid" in str(exc)
        return
    assert not unknown(doc), doc


VALID_MULTI = {k: VALID[k] for k in ("switch", "health", "flows")} | {"service": [
    {"name": "web", "address": "10.0.0.1", "port": 80, "id": 0, "active": 1, "backend": VALID["backend"], "health": {"path": "/x"}},
    {"name": "api", "address": "10.0.0.1", "port": 8080, "id": 1, "client_port": 1, "backend": [{"address": "10.0.4.4", "mac": "00:00:00:00:04:04", "port": 4, "weight": 2}]},
]}
MULTI_KEYS = sorted(set(ALL_KEYS) | set(SERVICE_KEYS))


def unknown_service_keys(doc: dict) -> bool:
    """A [[service]] document has a key the schema does not know (where the schema can see it)."""
    if any(k not in TOP_KEYS for k in doc) or any(isinstance(doc.get(s), dict) and any(k not in SECTION_KEYS[s] for k in doc[s]) for s in ("switch", "health", "flows")):
        return True
    services = doc.get("service")
    for svc in services if isinstance(services, list) else []:
        if not isinstance(svc, dict):
            continue
        own, backends = svc.get("health"), svc.get("backend")
        if any(k not in SERVICE_KEYS for k in svc) or (isinstance(own, dict) and any(k not in SECTION_KEYS["health"] for k in own)):
            return True
        if isinstance(backends, list) and any(isinstance(b, dict) and any(k not in SECTION_KEYS["backend"] for k in b) for b in backends):
            return True
    return False


def service_tables(doc: dict) -> list[dict]:
    """Every table of a [[service]] document a mutation may change."""
    tables = [doc] + [doc[s] for s in ("switch", "health", "flows") if isinstance(doc.get(s), dict)]
    for svc in doc["service"] if isinstance(doc.get("service"), list) else []:
        if isinstance(svc, dict):
            tables += [svc] + [t for t in [svc.get("health"), *(svc.get("backend") if isinstance(svc.get("backend"), list) else [])] if isinstance(t, dict)]
    return tables


@st.composite
def service_documents(draw) -> dict:
    """The valid [[service]] document with a few mutations: a value replaced, a key added or removed, anywhere."""
    doc = json.loads(json.dumps(VALID_MULTI))
    for _ in range(draw(st.integers(1, 4))):
        tables = service_tables(doc)
        table = tables[draw(st.integers(0, len(tables) - 1))]
        kind = draw(st.sampled_from(["replace", "add", "remove"]))
        if kind == "remove" and table:
            table.pop(draw(st.sampled_from(sorted(table))))
        elif kind == "replace" and table:
            table[draw(st.sampled_from(sorted(table)))] = draw(values)
        else:
            table[draw(st.one_of(st.sampled_from(MULTI_KEYS), keys))] = draw(values)
    return doc


def test_the_valid_service_document_parses():
    assert parse_config(VALID_MULTI).names == ("web", "api")


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(service_documents())
def test_no_service_document_gives_a_traceback_and_no_unknown_key_is_accepted(doc):
    refused_or_known(parse_config, unknown_service_keys, doc)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.builds(lambda b, i: EXAMPLE.read_bytes()[:i] + b + EXAMPLE.read_bytes()[i:], st.binary(min_size=1, max_size=4), st.integers(0, 1500)))
def test_no_file_gives_a_traceback(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cfg") / "p4lb.toml"
    path.write_bytes(data)
    with contextlib.suppress(ConfigFileError):  # anything else is a traceback: the test fails
        load(path)


@pytest.mark.parametrize(("doc", "field", "words"), [
    ({"vip": 5}, "vip", "[vip] table"),
    ({"health": []}, "health", "[health] table"),
    ({"backend": [1, 2]}, "backend[0]", "[[backend]] table"),
    ({"backend": {"address": "10.0.2.2"}}, "backend", "one [[backend]] table per server"),
    ({"switch": {"device_id": -1}}, "switch.device_id", "0..2**64-1"),
    ({"switch": {"election_id": 0}}, "switch.election_id", "1..2**128-2"),
    ({"switch": {"rpc_timeout_ms": "2000"}}, "switch.rpc_timeout_ms", "whole number"),
    ({"switch": {"client_cert": "c.pem"}}, "switch.client_key", "both"),
    ({"health": {"intreval_ms": 100}}, "health.intreval_ms", "did you mean health.interval_ms?"),
    ({"backend": [{"adress": "10.0.2.2", "mac": "00:00:00:00:02:02", "port": 2}]}, "backend[0].adress", "did you mean backend[0].address?"),
    ({"helth": {}}, "helth", "did you mean health?"),
    ({"flows": {"idle_timeout_s": 1.5}}, "flows.idle_timeout_s", "whole number"),
    ({"health": {"rise": True}}, "health.rise", "whole number"),
    ({"vip": {"port": -80}}, "vip.port", "1..65535"),
    ({"vip": {"service": 256}}, "vip.service", "0..255"),
    ({"vip": {"service": -1}}, "vip.service", "0..255"),
    ({"vip": {"service": "7"}}, "vip.service", "whole number"),
    ({"vip": {"service": True}}, "vip.service", "whole number"),
    ({"backend": [{"address": "10.0.2.2", "mac": "00:00:00:00:02:02", "port": -2}]}, "backend[0].port", "switch port"),
])
def test_wrong_shapes_and_types_name_the_field(doc, field, words):
    base = {"backend": VALID["backend"]}
    with pytest.raises(ConfigFileError) as err:
        parse(base | doc)
    assert err.value.field == field and words in str(err.value), str(err.value)


def test_vip_service_is_read_and_checked_by_the_model_too():
    assert parse({"backend": VALID["backend"], "vip": {"service": 7}}).lb.service == 7
    assert parse({"backend": VALID["backend"]}).lb.service == 0
    lb = parse({"backend": VALID["backend"]}).lb
    for bad in (256, -1, True, 1.0):
        with pytest.raises(ConfigError) as err:
            replace(lb, service=bad)
        assert err.value.field == "vip.service" and "0..255" in str(err.value)


def test_switch_election_id_tls_and_timeouts(tmp_path):
    s = parse({"backend": VALID["backend"], "switch": {"election_id": 2**64 + 7, "root_cert": "ca.pem", "client_cert": "me.pem", "client_key": "me.key", "rpc_timeout_ms": 750}}, tmp_path)
    t = s.switch
    assert t.election_id == (1, 7) and t.tls and t.rpc_timeout_ms == 750
    assert (t.root_cert, t.client_cert, t.client_key) == tuple(str(tmp_path / f) for f in ("ca.pem", "me.pem", "me.key"))
    assert not parse({"backend": VALID["backend"]}).switch.tls


def test_non_utf8_config_is_a_config_error(tmp_path, capsys):
    path = tmp_path / "p4lb.toml"
    path.write_bytes(EXAMPLE.read_bytes().replace(b"VIP", b"V\xffP"))
    assert cli.main(["-c", str(path), "--dry-run", "status"]) == cli.ExitCode.INPUT
    assert "UTF-8" in capsys.readouterr().out


# ---- state files ---------------------------------------------------------------------------------------------------
def test_state_file_is_atomic_private_and_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    path = tmp_path / "p4lb.state.json"
    save_pool(path, Pool.initial(4))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(synced) >= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p4lb.state.json"]


def test_a_full_disk_is_a_clear_error_and_the_old_state_stays(tmp_path, monkeypatch):
    path = tmp_path / "p4lb.state.json"
    save_pool(path, Pool.initial(4))
    before = path.read_bytes()

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(StateFileError, match="No space left on device.*previous one is intact"):
        save_pool(path, Fail(2).apply(Pool.initial(4)))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p4lb.state.json"]  # no temporary left behind


def test_a_state_file_that_is_a_symlink_is_refused(tmp_path):
    target = tmp_path / "elsewhere.json"
    save_pool(target, Pool.initial(4))
    link = tmp_path / "p4lb.state.json"
    link.symlink_to(target)
    with pytest.raises(StateFileError, match="symbolic link"):
        save_pool(link, Fail(2).apply(Pool.initial(4)))
    with pytest.raises(StateFileError, match="symbolic link"):
        load_pool(link, parse({"backend": VALID["backend"] * 1 + [{"address": "10.0.4.4", "mac": "00:00:00:00:04:04", "port": 4}, {"address": "10.0.5.5", "mac": "00:00:00:00:05:05", "port": 5}]}))
    assert json.loads(target.read_text())["healthy"] == [1, 2, 3, 4]


def test_the_model_switch_history_is_bounded():
    sw = ModelSwitch(parse({"backend": VALID["backend"]}).lb)
    for i in range(MODEL_LOG + 500):
        sw.write(Write("rr_group", (i & 1,), 1))
    assert len(sw.log) == MODEL_LOG


def test_a_long_dry_run_loop_does_not_grow(tmp_path, capsys):
    cfg = tmp_path / "p4lb.toml"
    cfg.write_text(EXAMPLE.read_text().replace("interval_ms = 100", "interval_ms = 10").replace("timeout_ms = 50", "timeout_ms = 5"))
    assert cli.main(["-c", str(cfg), "--dry-run", "run", "--rounds", "30"]) == 0
