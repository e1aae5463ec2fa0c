"""The `p4lb` command line: dry runs touch nothing outside the process, exit codes, messages, help, JSON, width."""

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console

from p4lb.controller import cli
from p4lb.controller.controller import Controller, save_pool
from p4lb.controller.errors import SwitchError
from p4lb.controller.settings import load
from p4lb.controller.switch import ModelSwitch
from p4lb.model.crc import ip_str
from p4lb.model.ops import Drain, Fail, Scale
from p4lb.model.p4lb import P4LB, FlowEntry, SlotState, flow_places, p4lb_packet
from p4lb.model.packet import SYN, Packet
from p4lb.model.pool import Pool

EXAMPLE = Path(__file__).resolve().parents[1] / "p4lb.example.toml"


@pytest.fixture
def cfg(tmp_path) -> Path:
    """The example config copied to a folder of its own (state files land beside it)."""
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "p4lb.toml"
    shutil.copy(EXAMPLE, path)
    return path


def run(capsys, *argv: str) -> tuple[int, str]:
    """Exit code and everything printed."""
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out + out.err


def status(capsys, cfg: Path, *extra: str) -> list[dict]:
    code, out = run(capsys, "-c", cfg, *extra, "--dry-run", "status", "--json")
    assert code == 0, out
    return json.loads(out)["backends"]


@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to open a connection is recorded and refused."""
    attempts = []

    def refuse(*args, **kw):
        attempts.append(args)
        raise OSError("network use in a test that must not touch the network")

    async def refuse_async(*args, **kw):
        refuse(*args)

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(asyncio, "open_connection", refuse_async)
    return attempts


# ---- 1, 2: dry runs --------------------------------------------------------------------------------------------


def test_dry_run_health_loop_opens_no_connection(cfg, capsys, no_network):
    code, out = run(capsys, "-c", cfg, "--dry-run", "run", "--rounds", "3")
    assert code == 0, out
    assert no_network == []


def test_dry_run_health_loop_keeps_the_states_verdicts(cfg, capsys, no_network):
    assert run(capsys, "-c", cfg, "--dry-run", "fail", "2")[0] == 0
    assert run(capsys, "-c", cfg, "--dry-run", "run", "--rounds", "3")[0] == 0
    assert [r["state"] for r in status(capsys, cfg)] == ["serving", "failed", "serving", "serving"]
    assert no_network == []


def test_dry_run_sequence_persists_in_its_own_state_file(cfg, capsys):
    real = cfg.with_suffix(".state.json")
    assert run(capsys, "-c", cfg, "--dry-run", "fail", "2")[0] == 0
    assert run(capsys, "-c", cfg, "--dry-run", "drain", "3")[0] == 0
    assert [r["state"] for r in status(capsys, cfg)] == ["serving", "failed", "draining", "serving"]
    assert not real.exists()
    assert (cfg.parent / "p4lb.dry-run.state.json").is_file()


def test_dry_run_never_changes_the_real_state(cfg, capsys):
    settings = load(cfg)
    real = cfg.with_suffix(".state.json")
    save_pool(real, Fail(4).apply(Pool.initial(4)), settings)
    before = real.read_bytes()
    assert run(capsys, "-c", cfg, "--dry-run", "fail", "1")[0] == 0
    assert real.read_bytes() == before
    assert [r["healthy"] for r in status(capsys, cfg)] == [False, True, True, True]


def test_dry_run_state_beside_an_explicit_state_file(tmp_path):
    assert cli.dry_run_state(tmp_path / "lb.state.json") == tmp_path / "lb.dry-run.state.json"
    assert cli.dry_run_state(tmp_path / "sets") == tmp_path / "sets.dry-run.state.json"


# ---- 3: exit codes ---------------------------------------------------------------------------------------------


def test_exit_codes_are_documented():
    text = cli.parser().format_help()
    for code in cli.ExitCode:
        assert f"  {int(code)} " in text and f"  {int(code)} " in cli.__doc__


def test_exit_0_done(cfg, capsys):
    assert run(capsys, "-c", cfg, "--dry-run", "deploy")[0] == cli.ExitCode.OK


def test_exit_1_the_prover_found_a_problem(capsys, monkeypatch):
    import p4lb.verify.__main__ as prover  # noqa: PLC0415

    seen = []
    monkeypatch.setattr(prover, "main", lambda argv: seen.append(argv) or 1)
    assert run(capsys, "prove", "--design", "seed", "-p", "P4", "--no-mutants")[0] == cli.ExitCode.PROVER
    assert seen == [["prove", "--design", "seed", "-p", "P4", "--no-mutants"]]


def test_prove_arguments_reach_the_prover_and_its_usage_errors_are_2(capsys, monkeypatch):
    import p4lb.verify.__main__ as prover  # noqa: PLC0415

    monkeypatch.setattr(prover, "run", lambda *a: pytest.fail("the prover ran despite a bad argument"))
    code, out = run(capsys, "prove", "--design", "nosuch")
    assert code == cli.ExitCode.INPUT and "nosuch" in out


def files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.mark.parametrize(
    "argv",
    [
        ["--dry-run", "fail", "9"],
        ["--dry-run", "scale", "--active", "7"],
        ["--dry-run", "heal", "x"],
        ["--dry-run", "flow", "10.0.0.10"],
        ["--dry-run", "run", "--rounds", "-1"],
        ["fail", "9"],
        ["fail", "0"],
    ],
)
def test_exit_2_bad_arguments_write_nothing(argv, cfg, capsys, monkeypatch):
    monkeypatch.setattr(cli, "make_switch", lambda *a, **k: ModelSwitch(load(cfg).lb))  # the real path, on the model
    code, out = run(capsys, "-c", cfg, *argv)
    assert code == cli.ExitCode.INPUT, out
    assert "usage error" in out and "config error" not in out and "Traceback" not in out
    assert files(cfg.parent) == {"p4lb.toml"}  # no state file, no lock file


@pytest.mark.parametrize("dry", [True, False])
@pytest.mark.parametrize("cmd", [["fail", "2"], ["deploy"], ["status"]])
@pytest.mark.parametrize("corrupt", ["garbage", "directory", "list", "fields"])
def test_exit_2_corrupt_state_file_names_it_and_the_fix(corrupt, cmd, dry, cfg, capsys, monkeypatch):
    monkeypatch.setattr(cli, "make_switch", lambda *a, **k: ModelSwitch(load(cfg).lb))
    state = cfg.parent / ("p4lb.dry-run.state.json" if dry else "p4lb.state.json")
    if corrupt == "directory":
        state.mkdir()
    else:
        state.write_text({"garbage": "{not json", "list": "[1, 2]", "fields": '{"n": "four"}'}[corrupt])
    before = files(cfg.parent)
    code, out = run(capsys, "-c", cfg, *(["--dry-run"] if dry else []), *cmd)
    assert code == cli.ExitCode.INPUT, out
    assert str(state) in out and ("delete it" in out or "--state" in out) and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1
    assert files(cfg.parent) == before  # no lock file


def test_exit_2_state_file_of_other_backends(cfg, capsys, monkeypatch):
    state = cfg.with_suffix(".state.json")
    state.write_text('{"n": 4, "active": [1], "healthy": [1], "draining": [], "backends": ["10.9.9.9"]}')
    monkeypatch.setattr(cli, "make_switch", lambda *a, **k: ModelSwitch(load(cfg).lb))
    code, out = run(capsys, "-c", cfg, "fail", "2")
    assert code == cli.ExitCode.INPUT and "keep ids stable" in out
    assert files(cfg.parent) == {"p4lb.toml", "p4lb.state.json"}


def test_exit_2_state_folder_missing(cfg, capsys, tmp_path):
    state = tmp_path / "nowhere" / "p4lb.state.json"
    code, out = run(capsys, "-c", cfg, "--state", state, "--dry-run", "fail", "2")
    assert code == cli.ExitCode.INPUT and str(state.parent) in out and "--state" in out and "Traceback" not in out
    assert not state.parent.exists() and files(cfg.parent) == {"p4lb.toml"}


class DownSwitch(ModelSwitch):
    """A switch that answers nothing."""

    def read(self, full: bool = True):
        raise SwitchError("switch unreachable at 127.0.0.1:1 (no gRPC answer in 5 s)")


def test_exit_3_switch_unreachable(cfg, capsys, monkeypatch):
    monkeypatch.setattr(cli, "make_switch", lambda *a, **k: DownSwitch(load(cfg).lb))
    code, out = run(capsys, "-c", cfg, "status")
    assert code == cli.ExitCode.SWITCH and "switch error" in out and "unreachable" in out and "Traceback" not in out


def test_exit_4_internal_error_is_one_line_and_a_log_file(cfg, capsys, monkeypatch, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(logs))

    def boom(self, **_):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(Controller, "report", boom)
    code, out = run(capsys, "-c", cfg, "--dry-run", "status")
    assert code == cli.ExitCode.INTERNAL
    assert len(out.strip().splitlines()) == 1 and "Traceback" not in out and "boom" in out
    (log,) = logs.iterdir()
    assert str(log) in out
    assert "Traceback" in log.read_text() and "RuntimeError: boom" in log.read_text()


def test_debug_shows_the_traceback(cfg, capsys, monkeypatch):
    monkeypatch.setattr(Controller, "report", lambda self, **_: 1 / 0)
    code, out = run(capsys, "-c", cfg, "--debug", "--dry-run", "status")
    assert code == cli.ExitCode.INTERNAL and "Traceback" in out and "ZeroDivisionError" in out


# ---- 4: messages are plain text ------------------------------------------------------------------------------


def test_error_text_is_not_read_as_markup(tmp_path, capsys):
    path = tmp_path / "p4lb.toml"
    path.write_text('[vip]\naddress = "10.0.0.1"\n')
    code, out = run(capsys, "-c", path, "--dry-run", "status")
    assert code == cli.ExitCode.INPUT and "[[backend]]" in out and "config error" in out
    assert files(tmp_path) == {"p4lb.toml"}


# ---- 5: help, JSON, flow, usage errors -------------------------------------------------------------------------


def subparsers() -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_subcommand_and_argument_is_described():
    for name, sub in {"p4lb": cli.parser(), **subparsers()}.items():
        assert sub.description, name
        for action in sub._actions:
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)


def test_every_subcommand_help_runs(capsys):
    for name in subparsers():
        if name != "prove":
            code, out = run(capsys, name, "--help")
            assert code == 0 and "usage: p4lb " + name in out


def test_prove_help_is_the_provers(capsys):
    code, out = run(capsys, "prove", "--help")
    assert code == 0 and "--no-mutants" in out


def test_status_json_fields_are_stable(cfg, capsys):
    assert run(capsys, "-c", cfg, "--dry-run", "drain", "3")[0] == 0
    rows = status(capsys, cfg)
    assert rows[0]["address"] == "10.0.2.2" and rows[0]["switch_port"] == 2 and rows[0]["state"] == "serving"
    assert rows[2]["state"] == "draining" and rows[2]["draining"] is True and not rows[2]["in_group"]
    assert set(rows[0]) == {"backend", "address", "switch_port", "state", "active", "healthy", "draining", "in_group", "weight", "open_flows", "flows_dispatched", "service"}


def test_flow_on_a_free_slot_says_it_is_free(cfg, capsys):
    code, out = run(capsys, "-c", cfg, "--dry-run", "flow", "10.0.0.10:40000")
    assert code == 0 and "no place holds this connection; its next SYN takes slot" in out and "FREE" in out and "0.0.0.0" not in out and "backend 0" not in out
    code, out = run(capsys, "-c", cfg, "--dry-run", "flow", "10.0.0.10:40000", "--json")
    got = json.loads(out)
    assert code == 0 and got["state"] == "free" and got["held_by"] is None and got["backend"] is None and got["client"] == "10.0.0.10:40000"


def open_flows(ctl: Controller, n: int) -> None:
    sw = ctl.switch
    for i in range(n):
        sw.state = p4lb_packet(sw.cfg, P4LB, sw.state, Packet(0x0A00000A, 40000 + i, SYN, i))[0]


def dry_controller(cfg: Path) -> Controller:
    settings = load(cfg)
    ctl = Controller(settings, ModelSwitch(settings.lb), grace_s=0)
    ctl.deploy()
    return ctl


def test_flow_held_by_this_connection(cfg):
    ctl = dry_controller(cfg)
    open_flows(ctl, 1)
    got = cli.flow_report(ctl, Packet(0x0A00000A, 40000, 0))
    assert (got["state"], got["held_by"], got["backend"], got["expired"]) == ("open", "this connection", 1, False)


def test_flows_json_fields(cfg, capsys):
    ctl = dry_controller(cfg)
    open_flows(ctl, 2)
    cli.show_flows(ctl, True, Console())
    *rows, total = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert total == {"open_flows": 2}
    assert sorted((r["client"], r["backend"], r["address"], r["switch_port"]) for r in rows) == [("10.0.0.10:40000", 1, "10.0.2.2", 2), ("10.0.0.10:40001", 2, "10.0.3.3", 3)]


@pytest.mark.parametrize("cmd", ["status", "flows", "flow"])
def test_every_reading_command_has_json(cmd):
    sub = subparsers()[cmd]
    assert any(a.dest == "json" for a in sub._actions)


def test_argparse_errors_are_usage_errors(cfg, capsys):
    code, out = run(capsys, "-c", cfg, "--dry-run", "scale")
    assert code == cli.ExitCode.INPUT and "usage error" in out and "--active" in out and "config error" not in out
    code, out = run(capsys, "-c", cfg, "--dry-run", "status", "--bogus")
    assert code == cli.ExitCode.INPUT and "usage error" in out and "--bogus" in out


# ---- 6: 80 columns ----------------------------------------------------------------------------------------------


def test_tables_fit_80_columns(cfg, capsys, monkeypatch):
    ctl = dry_controller(cfg)
    ctl.apply(Scale(2))
    ctl.apply(Drain(3))
    ctl.apply(Fail(3))
    ctl.apply(Fail(1))
    open_flows(ctl, 30)
    cli.show_status(ctl, False, Console(width=80))
    cli.show_flows(ctl, False, Console(width=80))
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    rows = [line.split() for line in out.splitlines() if line.split()[:1] and line.split()[0].isdigit()]
    backends = {r[0]: r for r in rows if len(r) >= 8 and ":" not in r[1]}  # a backend's first line (flows' rows show client:port)
    for b in ctl.settings.lb.backends:  # address and port each whole, on the backend's own line
        assert backends[str(b.id)][1:3] == [ip_str(b.ip), str(b.port)]
    flows = [line.split() for line in out.splitlines() if line.split()[1:2] and line.split()[1].startswith("10.0.0.10:400")]
    assert len(flows) == 30 and all(r[2:] == ["2", "10.0.3.3", "3"] for r in flows) and "p4lb open flows: 30" in out
    monkeypatch.setenv("COLUMNS", "80")
    code, out = run(capsys, "-c", cfg, "--dry-run", "status")
    assert code == 0 and max(len(line) for line in out.splitlines()) <= 80 and "10.0.5.5" in out


# ---- 7: any working directory ----------------------------------------------------------------------------------


def test_absolute_config_from_another_directory(cfg, tmp_path, capsys, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert run(capsys, "--config", cfg.resolve(), "--dry-run", "fail", "2")[0] == 0
    assert [r["healthy"] for r in status(capsys, cfg.resolve())] == [True, False, True, True]
    assert files(elsewhere) == set() and "p4lb.dry-run.state.json" in files(cfg.parent)
    res = subprocess.run([sys.executable, "-m", "p4lb.controller.cli", "--config", str(cfg.resolve()), "--dry-run", "status"], capture_output=True, text=True, cwd=elsewhere, timeout=60)
    assert res.returncode == 0 and "failed" in res.stdout, res.stdout + res.stderr


# ---- 8: no p4runtime-shell -------------------------------------------------------------------------------------

WITHOUT_SHELL = """
import sys
sys.modules["p4runtime_sh"] = None
sys.modules["grpc"] = None
from p4lb.controller import cli
code = cli.main(sys.argv[1:])
print("P4RT_LOADED" if "p4lb.controller.p4rt" in sys.modules else "P4RT_NOT_LOADED")
sys.exit(code)
"""


def without_shell(cfg: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_SHELL, "-c", str(cfg), *argv], capture_output=True, text=True, cwd=cfg.parent, timeout=60)


def test_dry_run_works_without_p4runtime_shell(cfg):
    for argv in (["--dry-run", "status"], ["--dry-run", "fail", "2"], ["--dry-run", "flows", "--json"]):
        res = without_shell(cfg, *argv)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "P4RT_NOT_LOADED" in res.stdout


def test_real_switch_without_p4runtime_shell_says_what_to_install(cfg):
    res = without_shell(cfg, "status")
    assert res.returncode == cli.ExitCode.SWITCH, res.stdout + res.stderr
    assert "install the switch extra: pip install 'p4lb[switch]'" in res.stdout and "Traceback" not in res.stdout + res.stderr
    assert files(cfg.parent) == {"p4lb.toml"}


def test_output_piped_into_head_is_not_an_error(cfg, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))

    def closed(self, **_):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(Controller, "report", closed)
    code, out = run(capsys, "-c", cfg, "--dry-run", "status", "--json")
    assert code == cli.ExitCode.OK and "error" not in out
    assert not list(tmp_path.glob("p4lb-error-*.log"))


def test_flow_found_beyond_its_first_candidate(cfg):
    """A connection whose first candidate place another flow holds sits elsewhere: `p4lb flow` finds it there."""
    ctl = dry_controller(cfg)
    sw, lb = ctl.switch, ctl.settings.lb
    pkt = Packet(0x0A00000A, 40000, SYN, 1)
    first = flow_places(lb, pkt)[0]
    sw.state = replace(sw.state, flows={first: FlowEntry(SlotState.OPEN, 12345 << 16 | 7, 2, 0)}, now=1)
    sw.state = p4lb_packet(lb, P4LB, sw.state, pkt)[0]
    got = cli.flow_report(ctl, Packet(0x0A00000A, 40000, 0))
    assert got["found"] and got["slot"] != first and got["slot"] in flow_places(lb, pkt)
    assert (got["state"], got["held_by"], got["candidates"]) == ("open", "this connection", len(flow_places(lb, pkt)))


def test_flow_not_held_names_the_place_its_syn_takes(cfg):
    ctl = dry_controller(cfg)
    got = cli.flow_report(ctl, Packet(0x0A00000A, 40000, 0))
    assert (got["found"], got["refused"], got["held_by"]) == (False, False, None)
    assert got["slot"] in flow_places(ctl.settings.lb, Packet(0x0A00000A, 40000, 0))
