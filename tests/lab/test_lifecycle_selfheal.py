"""Self-healing: after Qubes' base rules are reloaded, the project's chains are flushed by
hand, or the agent restarts, every hop's rules come back within a second without a change
from dom0; a restarted admin service re-publishes without exposing or losing anything."""

import time
from collections.abc import Callable, Iterator

import pytest
from test_lifecycle_support import COME_BACK_TIMEOUT, Env, poll, showing, web_server

from qubes_lab.builder import Lab
from qubes_lab.nft_inspect import LiveRules, expected_rules, inspect_ruleset
from qubes_lab.qubes_base import base_ruleset
from qubes_lab.restart import base_params
from qubes_portfwd.agent.owned import owned_fingerprint
from qubes_portfwd.model.entries import parse_hop

pytestmark = pytest.mark.lab

PATH = ("sys-net", "sys-firewall", "work")
measured: dict[str, list[float]] = {}


@pytest.fixture(scope="module")
def env(private_lab: Lab) -> Iterator[Env]:
    with showing(measured):
        yield Env(private_lab)


@pytest.fixture(scope="module")
def forward(env: Env) -> str:
    forward = env.cli(
        "qvm_portfwd", "add", "work", "tcp", "80:8080", "--external", "--from", "any"
    ).strip()
    assert poll(lambda: env.all_hops_applied(forward), 20) is not None
    return forward


def fingerprint(env: Env, qube: str) -> str:
    done = env.lab.run(qube, ["nft", "-j", "list", "ruleset"], capture_output=True, text=True)
    return owned_fingerprint(done.stdout)


def reached(env: Env) -> bool:
    a = env.lab.addresses
    url, source = f"http://{a.edge_lan4}:80/", str(a.lan_clients4[0])
    with web_server(env.lab, "work") as page:
        return poll(lambda: page in (env.fetch("lan", url, source) or ""), 10) is not None


def healed(env: Env, qube: str, breaking: Callable[[], float], name: str) -> None:
    """Break `qube`'s rules; they must come back as they were (bounded wait; the time, from
    the moment `breaking` returns, is shown, not asserted)."""
    intact = fingerprint(env, qube)
    t0 = breaking()
    t_poll = time.monotonic()
    took = poll(lambda: fingerprint(env, qube) == intact, COME_BACK_TIMEOUT)
    assert took is not None, f"{qube}: rules not restored within {COME_BACK_TIMEOUT} s"
    measured.setdefault(name, []).append(took + (t_poll - t0))
    assert reached(env)


@pytest.mark.parametrize("qube", PATH)
def test_rules_come_back_after_a_base_rule_reload(env: Env, forward: str, qube: str) -> None:
    def reload() -> float:
        env.lab.reload_base_rules(qube)
        return time.monotonic()

    healed(env, qube, reload, "base rules reloaded")


@pytest.mark.parametrize(
    ("qube", "chain"), [("sys-net", "custom-forward"), ("work", "custom-input")]
)
def test_rules_come_back_after_a_chain_is_flushed_by_hand(
    env: Env, forward: str, qube: str, chain: str
) -> None:
    def flush() -> float:
        env.lab.run(qube, ["nft", "flush", "chain", "ip", "qubes", chain], check=True)
        return time.monotonic()

    healed(env, qube, flush, "chain flushed by hand")


def test_our_table_deleted_by_hand_comes_back(env: Env, forward: str) -> None:
    def delete() -> float:
        env.lab.run("sys-firewall", ["nft", "delete", "table", "ip", "qubes-portfwd"], check=True)
        return time.monotonic()

    healed(env, "sys-firewall", delete, "table deleted by hand")


@pytest.mark.parametrize("qube", PATH)
def test_a_restarted_agent_restores_rules_lost_while_it_was_down(
    env: Env, forward: str, qube: str
) -> None:
    def restart() -> float:
        env.lab.stop_agent(qube)
        # Stopped, the agent removed its own tables (as on a stock host); kept by a crash.
        gone = env.lab.run(
            qube, ["nft", "list", "table", "ip", "qubes-portfwd"], capture_output=True
        )
        assert gone.returncode != 0, "a stopped agent left its table"
        env.lab.reload_base_rules(qube)
        t0 = time.monotonic()
        env.lab.start_agent(qube)
        return t0

    healed(env, qube, restart, "agent restarted (from its start)")


def qubes_table_alone(lab: Lab, qube: str) -> str:
    """Qubes' own `ip qubes` table of `qube`, as its firewall service loads it: nothing of ours."""
    spec = lab.spec
    lines = base_ruleset(base_params(spec, spec.topology[qube], lab.addresses)).splitlines()
    start = lines.index("table ip qubes {")
    return "\n".join(lines[start : lines.index("}", start) + 1]) + "\n"


def live(env: Env, qube: str) -> LiveRules:
    done = env.lab.run(qube, ["nft", "-j", "list", "ruleset"], capture_output=True, text=True)
    return inspect_ruleset(done.stdout)


def holds(rules: LiveRules, expected: LiveRules) -> bool:
    return (
        expected.dnats <= rules.dnats
        and expected.inputs <= rules.inputs
        and expected.forwards <= rules.forwards
    )


def shown(env: Env, forward: str) -> dict[tuple[str, int], str]:
    """Each hop's state as `qvm-portfwd list` shows it, by (qube, family)."""
    return {
        (h.qube, f.family): str(h.state)
        for f in env.client.forwards()
        if f.id == forward
        for h in f.hops
    }


def restore_table_alone(lab: Lab, qube: str) -> None:
    table = qubes_table_alone(lab, qube)
    lab.run(qube, ["nft", "-f", "-"], input=table, text=True, check=True)


@pytest.mark.parametrize(
    "restore", [restore_table_alone, Lab.reload_base_rules], ids=["table alone", "base reload"]
)
def test_after_qubes_table_is_deleted_and_restored_no_hop_is_shown_ahead_of_its_kernel(
    env: Env, forward: str, restore: Callable[[Lab, str], None]
) -> None:
    """Every listing that says a hop is applied is followed by a look at that hop's kernel:
    it must hold the forward's rules, until every hop is applied and a LAN client gets in."""
    everything_applied = poll(
        lambda: set(shown(env, forward).values()) == {"applied"}, COME_BACK_TIMEOUT
    )
    assert everything_applied is not None
    expected = {
        (qube, int(key[-1])): expected_rules([parse_hop(key, value)])
        for qube in PATH
        for key, value in env.lab.store(qube).read()[1].items()
        if key.startswith(f"/qubes-portfwd/{forward}/")
    }
    assert set(expected) == set(shown(env, forward))

    env.lab.run("sys-firewall", ["nft", "delete", "table", "ip", "qubes"], check=True)
    t0 = time.monotonic()
    noticed = poll(lambda: shown(env, forward)[("sys-firewall", 4)] != "applied", COME_BACK_TIMEOUT)
    assert noticed is not None, "the lost rules were never reported"
    measured.setdefault("Qubes' table deleted: shown not applied after", []).append(
        time.monotonic() - t0
    )
    restore(env.lab, "sys-firewall")
    restored = time.monotonic()

    a = env.lab.addresses
    url, source = f"http://{a.edge_lan4}:80/", str(a.lan_clients4[0])
    with web_server(env.lab, "work") as page:
        while True:
            # Each kernel is looked at before and after the listing: a hop taken back between
            # the listing and the second look (its inner hop lost its rules) held them before
            # and is no longer shown applied after; any other miss is a hop shown ahead.
            held_before = {hop: holds(live(env, hop[0]), expected[hop]) for hop in expected}
            states = shown(env, forward)
            for hop, state in states.items():
                if state == "applied" and not holds(live(env, hop[0]), expected[hop]):
                    taken_back = held_before[hop] and shown(env, forward)[hop] != "applied"
                    assert taken_back, f"{hop} shown applied ahead"
            if set(states.values()) == {"applied"} and page in (
                env.fetch("lan", url, source) or ""
            ):
                break
            assert time.monotonic() - restored < COME_BACK_TIMEOUT, f"not back: {states}"
    name = f"Qubes' table restored ({restore.__name__}): all applied and reached after"
    measured.setdefault(name, []).append(time.monotonic() - restored)


def ours(snapshot: tuple[int, dict[str, str]]) -> dict[str, str]:
    """A hop's entries without Qubes' firewall keys, which Qubes' own reload rewrites."""
    return {k: v for k, v in snapshot[1].items() if not k.startswith("/qubes-firewall")}


def test_an_admin_restart_keeps_forwards_and_removals(env: Env, forward: str) -> None:
    removed = env.cli(
        "qvm_portfwd", "add", "work", "tcp", "81:8081", "--external", "--from", "any"
    ).strip()
    assert poll(lambda: env.all_hops_applied(removed), 20) is not None
    env.cli("qvm_portfwd", "del", removed)
    before = {q: ours(env.lab.store(q).read()) for q in PATH}
    env.lab.stop_admin()
    assert reached(env)  # the agents keep what they have while dom0's service is away
    env.lab.start_admin()
    env.client.firewall_reload("work")  # returns once the service re-planned and published
    assert {q: ours(env.lab.store(q).read()) for q in PATH} == before, "entries were rewritten"
    assert env.all_hops_applied(forward)
    assert [f.id for f in env.client.forwards_of("work")] == [forward]
    assert reached(env)
    a = env.lab.addresses
    with web_server(env.lab, "work", 8081):
        assert env.fetch("lan", f"http://{a.edge_lan4}:81/", str(a.lan_clients4[0])) is None
