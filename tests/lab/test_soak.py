"""Soak: a bounded random sequence of operations, checking after each step that the rules
live in every qube's kernel are exactly what the admin service's plan says.

Operations go through the client library (add, del, expire, netvm change) and the lab
(qube restart, agent kill). The seed is printed; set SOAK_SEED to replay a run and
SOAK_STEPS to change the length.
"""

import ipaddress
import itertools
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from qubes_lab.builder import Lab
from qubes_lab.nft_inspect import LiveRules, expected_rules, inspect_ruleset
from qubes_portfwd.client import AdminClient, ForwardState, ForwardStatus, QubesdError
from qubes_portfwd.model.entries import AcceptHop, DnatHop, Hop
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.rule import ForwardRule
from qubes_portfwd.model.rule_text import parse_rule
from qubes_portfwd.model.topology import Topology

pytestmark = pytest.mark.lab

STEPS = int(os.environ.get("SOAK_STEPS", "500"))
TIME_BUDGET = 900.0  # seconds for the whole sequence; exceeding it fails the test
SETTLE_TIMEOUT = 20.0  # per step: agents handled the latest generation and the kernels agree
TARGETS = ("work", "personal")
NETVMS = ("sys-firewall", "sys-vpn")
RESTARTABLE = ("work", "personal", "sys-firewall", "sys-net")
EXPIRE_SECONDS = 2
PORTS = range(2000, 2060, 2)  # a small pool, so adds sometimes conflict and ports get reused
SOURCES = ("0.0.0.0/0", "192.0.2.0/24", "198.51.100.7/32")


@pytest.fixture(scope="module")
def lab(private_lab: Lab) -> Lab:
    """A lab of the soak's own: it changes netvms, restarts qubes and kills agents."""
    return private_lab


@dataclass
class Soak:
    lab: Lab
    client: AdminClient
    rng: random.Random
    counts: dict[str, int]

    def forward_rule(self) -> str:
        port = self.rng.choice(PORTS)
        proto = self.rng.choice(("tcp", "udp", None))
        words = ["action=forward", "forwardtype=external"]
        words += [f"proto={proto}"] if proto else []
        words += [f"srcports={port}-{port}", f"dstports={port + 1000}-{port + 1000}"]
        words.append(f"srchost={self.rng.choice(SOURCES)}")
        if self.rng.random() < 0.5:
            words.append("follow=yes")
        return " ".join(words)

    def add(self, expire: bool = False) -> str:
        rule = self.forward_rule()
        if expire:
            rule += f" expire={int(time.time()) + EXPIRE_SECONDS}"
        try:
            self.client.add_forward(self.rng.choice(TARGETS), rule)
        except QubesdError as err:  # refused (a conflict on a shared edge): part of the soak
            return f"refused: {err}"
        return rule

    def delete(self) -> str:
        forwards = self.client.forwards()
        if not forwards:
            return "nothing to delete"
        victim = self.rng.choice(forwards)
        try:
            self.client.remove_forward(victim.target, victim.id)
        except ValidationError:
            # Listed from the status document, then gone at its expiry before the removal:
            # the service's answer is right; any other vanished forward is a failure.
            if "expire=" not in victim.rule:
                raise
            return f"{victim.target} {victim.id} expired meanwhile"
        return f"{victim.target} {victim.id}"

    def netvm(self) -> str:
        qube = self.rng.choice(TARGETS)
        netvm = self.rng.choice(NETVMS)
        self.client.set_property(qube, "netvm", netvm)
        return f"{qube} -> {netvm}"

    def restart_qube(self) -> str:
        qube = self.rng.choice(RESTARTABLE)
        self.lab.restart_qube(qube)
        return qube

    def kill_agent(self) -> str:
        qube = self.rng.choice(sorted(self.lab.topology.qubes))
        state = self.lab._require_state()  # the lab's record of the PID it started
        process = state.process(f"agent:{qube}")
        assert process is not None, f"no agent recorded for {qube}"
        os.kill(process.pid, signal.SIGKILL)
        self.lab.stop_agent(qube)  # reaps it and forgets the PID
        self.lab.start_agent(qube)
        return qube

    def operations(self) -> list[tuple[str, float, Callable[[], str]]]:
        return [
            ("add", 30, self.add),
            ("del", 20, self.delete),
            ("expire", 10, lambda: self.add(expire=True)),
            ("netvm", 12, self.netvm),
            ("restart", 3, self.restart_qube),
            ("kill", 8, self.kill_agent),
        ]


def expected_hops(plan: list[ForwardStatus], topology: Topology) -> dict[str, list[Hop]]:
    """Per qube, the hops the plan's active forwards put there (DNAT to the next qube in)."""
    hops: dict[str, list[Hop]] = {name: [] for name in topology.qubes}
    for forward in plan:
        if forward.state != ForwardState.ACTIVE:
            continue
        rule = parse_rule(forward.rule)
        assert isinstance(rule, ForwardRule)
        family = forward.family
        sources = tuple(n for n in rule.source_networks if n.version == family)
        path = forward.path
        for outer, inner in itertools.pairwise(path):
            to = topology[inner].address4 if family == 4 else topology[inner].address6
            assert to is not None
            toports = rule.dstports if inner == forward.target else rule.srcports
            hops[outer].append(
                DnatHop(forward.id, family, rule.protos, "eth0", rule.srcports,
                        ipaddress.ip_address(to), toports, sources)
            )  # fmt: skip
        hops[forward.target].append(
            AcceptHop(forward.id, family, rule.protos, rule.dstports, sources)
        )
    return hops


def live_rules(lab: Lab, qube: str) -> LiveRules:
    listing = lab.run(qube, ["nft", "-j", "list", "ruleset"], capture_output=True, text=True)
    assert listing.returncode == 0, f"nft list in {qube}: {listing.stderr}"
    return inspect_ruleset(listing.stdout)


def agents_caught_up(lab: Lab) -> bool:
    for qube in lab.topology.qubes:
        store = lab.store(qube)
        if store.read_status().handled < store.generation():
            return False
    return True


def differences(lab: Lab, client: AdminClient) -> list[str]:
    """Every way the kernels differ from the plan (empty when they agree)."""
    plan = client.forwards()
    problems = [
        f"{f.id} ({f.target}) failed: {f.reason}" for f in plan if f.state == ForwardState.FAILED
    ]
    topology = lab.dom0_topology()
    for qube, hops in expected_hops(plan, topology).items():
        live = live_rules(lab, qube)
        expected = expected_rules(hops)
        if live.problems:
            problems.append(f"{qube}: unreadable ruleset parts {live.problems}")
        if live.without_hairpins() != expected:
            problems.append(f"{qube}: live {_describe(live)} != planned {_describe(expected)}")
        if not live.hairpins <= live.forward_ids:
            problems.append(f"{qube}: hairpin without its DNAT: {live.hairpins}")
    return problems


def _describe(rules: LiveRules) -> str:
    dnats = sorted(f"{d.forward_id}/{d.family}->{d.to}" for d in rules.dnats)
    return f"dnat={dnats} input={sorted(rules.inputs)} forward={sorted(rules.forwards)}"


def settle(lab: Lab, client: AdminClient, step: str) -> float:
    """Wait (bounded) until every agent handled its latest generation and the kernels agree."""
    started = time.monotonic()
    deadline = started + SETTLE_TIMEOUT
    problems: list[str] = ["not checked"]
    while time.monotonic() < deadline:
        if agents_caught_up(lab):
            problems = differences(lab, client)
            if not problems:
                return time.monotonic() - started
        time.sleep(0.05)  # polling interval of a bounded wait
    raise AssertionError(f"after {step}: kernels differ from the plan: " + "; ".join(problems))


def test_soak(lab: Lab) -> None:
    seed = int(os.environ.get("SOAK_SEED", str(random.SystemRandom().randrange(2**32))))
    print(f"soak seed {seed} (replay with SOAK_SEED={seed})")
    client = AdminClient(lab.admin_socket, timeout=60)
    soak = Soak(lab, client, random.Random(seed), {})
    operations = soak.operations()
    names = [name for name, _, _ in operations]
    weights = [weight for _, weight, _ in operations]
    actions = dict((name, action) for name, _, action in operations)
    started = time.monotonic()
    settle_times: list[float] = []
    settle(lab, client, "start")
    for number in range(STEPS):
        elapsed = time.monotonic() - started
        assert elapsed < TIME_BUDGET, f"only {number} of {STEPS} steps in {TIME_BUDGET} s"
        name = soak.rng.choices(names, weights)[0]
        try:
            detail = actions[name]()
        except Exception as err:
            raise AssertionError(f"step {number} {name} raised (seed {seed})") from err
        soak.counts[name] = soak.counts.get(name, 0) + 1
        settle_times.append(settle(lab, client, f"step {number} {name} {detail} (seed {seed})"))
    settle_times.sort()
    print(
        f"soak: {STEPS} steps in {time.monotonic() - started:.1f} s; {soak.counts}; "
        f"settle median {settle_times[len(settle_times) // 2]:.3f} s, "
        f"max {settle_times[-1]:.3f} s"
    )


def test_the_check_notices_a_rule_the_plan_does_not_have(lab: Lab) -> None:
    client = AdminClient(lab.admin_socket, timeout=60)
    settle(lab, client, "start")
    # Nobody repairs what we add by hand; killed, not stopped: a stopped agent removes its own.
    process = lab._require_state().process("agent:work")
    assert process is not None
    os.kill(process.pid, signal.SIGKILL)
    lab.stop_agent("work")  # reaps it and forgets the PID
    try:
        extra = "add element ip qubes portfwd-input-allowed { 192.0.2.99/32 . tcp . 9999 }"
        lab.run("work", ["nft", extra], check=True)
        assert any("192.0.2.99/32 . tcp . 9999" in p for p in differences(lab, client))
    finally:
        lab.start_agent("work")
    # The new agent's first apply replaces everything we own: the stray element goes.
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while differences(lab, client):
        assert time.monotonic() < deadline, "the stray element stayed"
        time.sleep(0.05)  # polling interval of a bounded wait
