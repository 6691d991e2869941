"""The built deb's agent, as a Debian 12 template installs it, run in a lab qube.

The deb is unpacked into a throwaway root; its installed program runs under the template's
interpreter (/usr/bin/python3, Debian 12's) with only that root's dist-packages and the real
`qubesdb` binding (what the deb's python3-qubesdb dependency gives) on its path, in the lab's
sys-firewall network namespace, on real QubesDB daemons (dom0's side and the qube's, the
qube's in its own mount namespace), started by its unit's own command line. Dom0's side
publishes an entry as the controller does; the agent applies it with nft and reports; when
stopped it removes what it owns, and after a kill the unit's ExecStopPost does.
"""

import configparser
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qubes_lab.builder import Lab
from qubes_lab.qubesdb_real import QubeSide, RealQubesDB
from qubes_portfwd.adapters.qubesdb_binding import QubesDbBinding
from qubes_portfwd.db.dom0 import Dom0Channel
from qubes_portfwd.model.entries import FORWARD_PREFIX

from .conftest import TOOL_TIMEOUT, BuiltPackages, extract_deb

pytestmark = pytest.mark.lab

QUBE = "sys-firewall"
TEMPLATE_PYTHON = "/usr/bin/python3"  # Debian 12's: what the installed scripts' shebang names
SITE = "usr/lib/python3/dist-packages"
FORWARD_ID = "5a5a5a5a5a5a"
KEY = f"{FORWARD_PREFIX}{FORWARD_ID}/4"
HANDLED_TIMEOUT = 60.0  # the first apply also starts Python and lists the ruleset
STOP_TIMEOUT = 30.0
LAB_AGENT_TIMEOUT = 30.0
POLL = 0.05


def _entry(target: str) -> str:
    return (
        "role=dnat family=4 proto=tcp in=eth0 ports=18080-18080 "
        f"to={target} toports=8080-8080 srchost=192.0.2.0/24"
    )


def _nft_json(lab: Lab) -> list[dict]:  # type: ignore[type-arg]
    listed = lab.run(QUBE, ["nft", "-j", "list", "ruleset"], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)["nftables"]  # type: ignore[no-any-return]


def _our_tables(ruleset: list[dict]) -> set[tuple[str, str]]:  # type: ignore[type-arg]
    return {
        (o["table"]["family"], o["table"]["name"])
        for o in ruleset
        if "table" in o and o["table"]["name"] == "qubes-portfwd"
    }


def _our_jumps(ruleset: list[dict]) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [
        (o["rule"]["family"], o["rule"]["chain"])
        for o in ruleset
        if "rule" in o
        and o["rule"]["table"] == "qubes"
        and o["rule"].get("comment") == "qubes-portfwd"
    ]


@pytest.fixture
def installed_root(built_packages: BuiltPackages, tmp_path: Path) -> Path:
    root = extract_deb(built_packages.vm_deb, tmp_path / "root")
    assert (root / "usr/bin/qubes-portfwd-agent").is_file()
    return root


@pytest.fixture
def qube_without_lab_agent(lab: Lab, real_qubesdb: RealQubesDB) -> Iterator[QubeSide]:
    """sys-firewall with its lab agent stopped and a real QubesDB pair; the lab's agent is
    back (and has re-applied the lab's entries) afterwards."""
    lab.stop_agent(QUBE)
    try:
        yield real_qubesdb.add_qube(QUBE, lab.topology.qubes[QUBE].qid, netns=lab.netns(QUBE))
    finally:
        started = time.time()
        lab.start_agent(QUBE)
        _wait_lab_agent_reported(lab, started)


def _wait_lab_agent_reported(lab: Lab, since: float) -> None:
    """Until the lab's own agent has reported its entries applied again (a report written
    after `since`: the one its predecessor left may say `stopped`)."""
    store = lab.store(QUBE)
    deadline = time.monotonic() + LAB_AGENT_TIMEOUT
    while True:
        status = store.read_status()
        fresh = status.updated >= since and status.error is None
        if fresh and status.handled == store.generation():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the lab's agent in {QUBE} did not report: {status}")
        time.sleep(POLL)


def _env(root: Path, real_qubesdb: RealQubesDB) -> dict[str, str]:
    # Only the installed tree and the real binding: not the checkout's src/, not the venv.
    binding = real_qubesdb.build.python_dir
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONPATH": f"{root / SITE}:{binding}",
        "LANG": "C.UTF-8",
    }


def _unit_command(
    root: Path, real_qubesdb: RealQubesDB, runtime_dir: Path, key: str = "ExecStart"
) -> list[str]:
    """A command of the installed agent unit, as systemd would run it (`$$` is a literal `$`,
    a leading `-` only says failures are ignored), with its absolute paths moved into the
    throwaway root and the real QubesDB's tools."""
    unit = configparser.ConfigParser(interpolation=None)
    unit.read_string((root / "lib/systemd/system/qubes-portfwd-agent.service").read_text())
    argv = shlex.split(unit["Service"][key].removeprefix("-").replace("$$", "$"))
    assert argv[:2] == ["/bin/sh", "-c"] and len(argv) == 3, argv
    runtime_dir.mkdir(exist_ok=True)  # systemd makes it (RuntimeDirectory=)
    script = argv[2]
    for path, there in {
        "/usr/bin/qubes-portfwd-agent": root / "usr/bin/qubes-portfwd-agent",
        "/usr/bin/qubesdb-read": real_qubesdb.build.bin_dir / "qubesdb-read",
        "/run/qubes-portfwd-agent": runtime_dir,
    }.items():
        if key == "ExecStart":
            assert path in script, f"the unit no longer runs {path}: {script}"
        script = script.replace(path, str(there))
    return [*argv[:2], script]


def _in_qube(side: QubeSide, netns: str, argv: list[str]) -> list[str]:
    # Mount namespace (the qube's QubesDB socket) and network namespace; no PID namespace,
    # so the agent's PID is ours to signal.
    return ["nsenter", f"--mount={side.join_mount}", f"--net=/run/netns/{netns}", "--", *argv]


@dataclass(frozen=True)
class InstalledAgent:
    process: subprocess.Popen[bytes]
    dom0: Dom0Channel
    target: str
    log: Path
    stop_post: list[str]  # the unit's ExecStopPost, run as the agent's processes are
    env: dict[str, str]

    def logged(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, as `systemctl stop` sends; its exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STOP_TIMEOUT)


@pytest.fixture
def installed_agent(
    lab: Lab,
    real_qubesdb: RealQubesDB,
    qube_without_lab_agent: QubeSide,
    installed_root: Path,
    tmp_path: Path,
) -> Iterator[InstalledAgent]:
    """The deb's qubes-portfwd-agent running in sys-firewall by its unit's command line (its
    qube name read from QubesDB), after dom0 committed one entry."""
    side, netns = qube_without_lab_agent, lab.netns(QUBE)
    env = _env(installed_root, real_qubesdb)
    probe = subprocess.run(
        _in_qube(side, netns, [TEMPLATE_PYTHON, "-c",
                               "import qubes_portfwd, qubesdb; print(qubes_portfwd.__file__)"]),
        env=env, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == str(installed_root / SITE / "qubes_portfwd/__init__.py")

    dom0 = Dom0Channel(real_qubesdb.call_in_dom0(lambda: QubesDbBinding(QUBE)), QUBE)
    dom0.db.write("/name", QUBE.encode())
    target = str(lab.topology.qubes["work"].address4)
    dom0.replace_prefixes([FORWARD_PREFIX], {KEY: _entry(target)})
    log_path = tmp_path / "agent.log"
    argv = _unit_command(installed_root, real_qubesdb, tmp_path / "run")
    stop_post = _unit_command(installed_root, real_qubesdb, tmp_path / "run", "ExecStopPost")
    with log_path.open("w") as log:
        process = subprocess.Popen(
            _in_qube(side, netns, argv), env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield InstalledAgent(process, dom0, target, log_path, _in_qube(side, netns, stop_post), env)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT)


def test_the_debs_agent_applies_an_entry_with_nft_and_reports_its_handled_counter(
    lab: Lab, installed_agent: InstalledAgent
) -> None:
    dom0, target = installed_agent.dom0, installed_agent.target
    status = dom0.wait_for_handled(dom0.generation(), HANDLED_TIMEOUT)
    assert status.handled == dom0.generation(), installed_agent.logged()
    assert dict(status.per_key) == {KEY: "applied"}
    assert ("ip", "qubes-portfwd") in _our_tables(_nft_json(lab))
    listed = lab.run(QUBE, ["nft", "list", "table", "ip", "qubes-portfwd"],
                     capture_output=True, text=True)  # fmt: skip
    assert FORWARD_ID in listed.stdout and target in listed.stdout, listed.stdout
    jumps = _our_jumps(_nft_json(lab))
    assert {("ip", "custom-forward"), ("ip", "custom-input")} <= set(jumps)
    assert len(jumps) == len(set(jumps))  # one of each, in Qubes' custom chains only

    # The entry removed, then back: the agent follows dom0's commits.
    generation = dom0.replace_prefixes([FORWARD_PREFIX], {})
    assert dom0.wait_for_handled(generation, HANDLED_TIMEOUT).handled == generation
    assert FORWARD_ID not in json.dumps(_nft_json(lab))
    generation = dom0.replace_prefixes([FORWARD_PREFIX], {KEY: _entry(target)})
    assert dom0.wait_for_handled(generation, HANDLED_TIMEOUT).per_key[KEY] == "applied"
    assert FORWARD_ID in json.dumps(_nft_json(lab))
    assert installed_agent.stop() == 0, installed_agent.logged()
    # Its name came from QubesDB's /name, read by the unit's command line.
    assert f"qubes-portfwd-agent[{QUBE}] INFO generation" in installed_agent.logged()


def test_the_debs_agent_removes_its_rules_when_stopped(
    lab: Lab, installed_agent: InstalledAgent
) -> None:
    dom0 = installed_agent.dom0
    assert dom0.wait_for_handled(dom0.generation(), HANDLED_TIMEOUT).per_key[KEY] == "applied"
    assert ("ip", "qubes-portfwd") in _our_tables(_nft_json(lab))

    assert installed_agent.stop() == 0, installed_agent.logged()
    after = _nft_json(lab)
    assert _our_tables(after) == set(), "the stopped agent left its table"
    assert _our_jumps(after) == [], "the stopped agent left its jumps in Qubes' chains"


def test_after_a_kill_the_units_stop_command_removes_what_the_agent_left(
    lab: Lab, installed_agent: InstalledAgent
) -> None:
    dom0 = installed_agent.dom0
    assert dom0.wait_for_handled(dom0.generation(), HANDLED_TIMEOUT).per_key[KEY] == "applied"
    installed_agent.process.kill()  # no chance to clean up: a crash, the OOM killer
    installed_agent.process.wait(timeout=STOP_TIMEOUT)
    assert ("ip", "qubes-portfwd") in _our_tables(_nft_json(lab))  # the kernel keeps them

    removed = subprocess.run(
        installed_agent.stop_post, env=installed_agent.env,
        capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False,
    )  # fmt: skip
    assert removed.returncode == 0, removed.stderr
    after = _nft_json(lab)
    assert _our_tables(after) == set(), "ExecStopPost left the agent's table"
    assert _our_jumps(after) == [], "ExecStopPost left the agent's jumps in Qubes' chains"
