"""Whatever the entry parsers accept compiles to a script that real nft accepts.

Hops and firewall entries are generated (hypothesis) and also mutated from valid entry text;
only what `parse_hop` / `parse_firewall` accept goes on, through the compiler, to
`nft --check -f -` over Qubes' base rules in a scratch namespace of this test's own.
"""

import ipaddress
import os
import random
import subprocess
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qubes_lab.qubes_base import BaseParams, Downstream, base_ruleset
from qubes_lab.qubes_firewall.entries import FirewallEntry, format_firewall, parse_firewall
from qubes_lab.qubes_firewall.nft import firewall_script
from qubes_portfwd.model.entries import Hop, format_hop, hop_key, parse_hop
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.nft.compiler import QubeRules, compile_qube
from qubes_portfwd.nft.owned import parse_owned_jumps
from strategies import accept_hops, dnat_hops, firewall_entries

from .seeds import SEEDS

pytestmark = pytest.mark.lab

NETVM = BaseParams(
    provides_network=True,
    ipv6=True,
    downstream=(
        Downstream("vif5.0", ipaddress.IPv4Address("10.137.0.5"), ipaddress.IPv6Address("fd09::5")),
    ),
)
HOPS_PER_EXAMPLE = 100


def nft(ns: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "nft", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    name = f"qpt-fz-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        loaded = nft(name, "-f", "-", stdin=base_ruleset(NETVM))
        assert loaded.returncode == 0, loaded.stderr
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=10)


def reparsed_hops(hops: list[Hop]) -> list[Hop]:
    """The hops as the agent gets them: their entry text through parse_hop, one per key."""
    by_key = {hop_key(h): parse_hop(hop_key(h), format_hop(h)) for h in hops}
    return list(by_key.values())


def reparsed_firewalls(entries: list[FirewallEntry]) -> list[FirewallEntry]:
    by_address = {}
    for entry in entries:
        base = f"/qubes-firewall/{entry.address}/"
        values = {k[len(base) :]: v for k, v in format_firewall(entry).items()}
        by_address[entry.address] = parse_firewall(str(entry.address), values)
    return list(by_address.values())


def check(ns: str, hops: list[Hop], firewalls: list[FirewallEntry]) -> None:
    owned = parse_owned_jumps(nft(ns, "-j", "list", "ruleset").stdout)
    compiled = compile_qube(QubeRules(hops=tuple(hops)), owned)
    # Our agent's script, and beside it the lab's emulated qubes-firewall worker's tables.
    tables, _ = firewall_script(firewalls, [], {}, [])
    for script in (compiled.script, tables):
        checked = nft(ns, "--check", "-f", "-", stdin=script)
        assert checked.returncode == 0, f"{checked.stderr}\n--- script:\n{script[:4000]}"


@settings(
    max_examples=2,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.large_base_example],
)  # fmt: skip
@given(
    st.lists(dnat_hops() | accept_hops(), min_size=HOPS_PER_EXAMPLE, max_size=HOPS_PER_EXAMPLE),
    st.lists(firewall_entries(), max_size=5),
)
def test_generated_entries_compile_to_scripts_nft_accepts(netns: str, hops, firewalls) -> None:  # type: ignore[no-untyped-def]
    check(netns, reparsed_hops(hops), reparsed_firewalls(firewalls))


_VALUES = {
    "in": ["eth0", "downstream", ".", "-", "_", "a" * 15, "vif5.0", "lo", "x.y-z_1", "9"],
    "to": ["10.137.0.6", "0.0.0.0", "255.255.255.255", "::", "::ffff:10.0.0.1", "fe80::1",
           "2001:db8::1", "10.137.0.5"],
    "ports": ["1-1", "1-65535", "65535-65535", "443-443", "80-90", "1", "60000"],
    "srchost": ["0.0.0.0/0", "::/0", "10.0.0.0/8,192.0.2.1", "fd00::/8,2001:db8::1/128",
                "192.0.2.0/24," * 20 + "10.0.0.0/8", "255.255.255.255", "::ffff:0:0/96"],
    "proto": ["tcp", "udp", "tcp,udp", "udp,tcp"],
    "role": ["dnat", "accept"],
    "family": ["4", "6"],
}  # fmt: skip
_VALUES["toports"] = _VALUES["ports"]


def mutated_entries(rng: random.Random, count: int) -> list[tuple[str, str]]:
    """Entry texts made from valid ones with values swapped for edge cases (many invalid)."""
    texts = []
    for number in range(count):
        seed = rng.choice(SEEDS["hop_entry"]).decode().partition("\n")[2]
        options = dict(part.split("=", 1) for part in seed.split(" "))
        for key in rng.sample(sorted(_VALUES), rng.randint(1, 4)):
            options[key] = rng.choice(_VALUES[key])
        value = " ".join(f"{k}={v}" for k, v in options.items())
        texts.append((f"/qubes-portfwd/{number:012x}/{options['family']}", value))
    return texts


def test_mutated_entries_that_parse_compile_to_scripts_nft_accepts(netns: str) -> None:
    hops = []
    for key, untrusted_value in mutated_entries(random.Random(9), 400):
        try:
            hops.append(parse_hop(key, untrusted_value))
        except ValidationError:
            continue
    assert len(hops) >= 50, f"only {len(hops)} of the mutated entries parsed"
    check(netns, hops, [])
