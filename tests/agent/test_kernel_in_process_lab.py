"""The agent's in-process kernel adapters against the real kernel, in namespaces of the test's
own: libnftables answers as `nft` does, rtnetlink as `ip` does, and both act on the namespace
the agent runs in (it runs under `ip netns exec`, as the lab and Qubes' units start it)."""

import asyncio
import ipaddress
import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from qubes_lab.qubes_base import BaseParams, base_ruleset
from qubes_portfwd.agent.nft_runner import NftRunner
from tests.nft.lab import make_netns, nft, run

__all__ = ["make_netns"]

pytestmark = pytest.mark.lab

CHILD_TIMEOUT = 60.0

# Runs inside the namespace: each line of stdin is one call; one JSON answer per line.
NFT_CHILD = """
import asyncio, json, sys
from qubes_portfwd.agent.nft_library import NftLibrary

async def main():
    nft = NftLibrary()
    for line in sys.stdin:
        call, argument = json.loads(line)
        method = getattr(nft, call)
        result = await (method(argument) if argument is not None else method())
        print(json.dumps([result.ok, result.output]), flush=True)
    nft.close()

asyncio.run(main())
"""

KERNEL_CHILD = """
import ipaddress, json, sys
from qubes_portfwd.agent.downstream_targets import route_devices
from qubes_portfwd.agent.local_addresses import read_interface_addresses

targets = [ipaddress.ip_address(a) for a in sys.argv[1:]]
print(json.dumps({
    "addresses": {k: [str(a) for a in v] for k, v in read_interface_addresses().items()},
    "routes": {str(k): v for k, v in route_devices(targets).items()},
}))
"""


def _in_netns(ns: str, child: str, *args: str, stdin: str = "") -> str:
    result = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", child, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _library_calls(ns: str, *calls: tuple[str, str | None]) -> list[tuple[bool, str]]:
    stdin = "".join(json.dumps(call) + "\n" for call in calls)
    return [tuple(json.loads(line)) for line in _in_netns(ns, NFT_CHILD, stdin=stdin).splitlines()]


TABLE = """add table ip qpt-inproc
add set ip qpt-inproc ports { type inet_service; }
add element ip qpt-inproc ports { 80, 443 }
add chain ip qpt-inproc input { type filter hook input priority 0; policy accept; }
add rule ip qpt-inproc input tcp dport @ports counter accept comment "qpt"
"""


def test_libnftables_applies_and_lists_as_nft_does_in_its_own_namespace(
    make_netns: Callable[[], str],
) -> None:
    ns, other = make_netns(), make_netns()
    [(applied, _), (listed, listing)] = _library_calls(
        ns, ("apply", TABLE), ("list_ruleset_json", None)
    )
    assert applied and listed
    # The same document `nft -j list ruleset` prints in that namespace, and nothing elsewhere.
    assert json.loads(listing) == json.loads(nft(ns, "-j", "list", "ruleset"))
    assert "qpt-inproc" in listing
    assert "qpt-inproc" not in nft(other, "list", "ruleset")


def test_a_failing_script_applies_nothing_and_says_why(make_netns: Callable[[], str]) -> None:
    ns = make_netns()
    bad = TABLE + "add rule ip qpt-inproc nosuch tcp dport 22 accept\n"
    [(applied, error), (listed, listing)] = _library_calls(
        ns, ("apply", bad), ("list_ruleset_json", None)
    )
    assert not applied
    # nft's own message, pointing at the failing line as `nft -f` does.
    assert error.startswith("script:6:24-29: Error: Could not process rule: No such file"), error
    assert error.splitlines()[1] == "add rule ip qpt-inproc nosuch tcp dport 22 accept"
    assert listed and "qpt-inproc" not in listing, "part of a failed transaction was applied"


def test_the_custom_chains_listing_matches_the_nft_program(make_netns: Callable[[], str]) -> None:
    ns = make_netns()
    # Qubes' base rules with IPv4 only: the ip6 custom chains are missing, as on such a qube.
    nft(ns, "-f", "-", stdin=base_ruleset(BaseParams(provides_network=True)))
    nft(ns, "add", "rule", "ip", "qubes", "custom-forward", "counter", "comment", '"ours"')
    [(listed, library)] = _library_calls(ns, ("list_custom_chains_json", None))
    program = asyncio.run(NftRunner(("ip", "netns", "exec", ns)).list_custom_chains_json())
    assert listed and program.ok
    assert json.loads(library) == json.loads(program.output)
    names = [i["chain"]["name"] for i in json.loads(library)["nftables"] if "chain" in i]
    assert sorted(names) == ["custom-forward", "custom-input"]


def test_addresses_and_routes_are_the_kernels_answers(make_netns: Callable[[], str]) -> None:
    ns = make_netns()
    for device, peer in (("eth0", "up0"), ("vif6.0", "work0")):
        run(ns, "ip", "link", "add", device, "type", "veth", "peer", "name", peer)
        run(ns, "ip", "link", "set", device, "up")
        run(ns, "ip", "link", "set", peer, "up")
    run(ns, "ip", "addr", "add", "192.0.2.2/24", "dev", "eth0")
    run(ns, "ip", "addr", "add", "2001:db8::2/64", "dev", "eth0", "nodad")
    run(ns, "ip", "route", "add", "default", "via", "192.0.2.1")
    run(ns, "ip", "route", "add", "10.137.0.6/32", "dev", "vif6.0")
    run(ns, "ip", "-6", "route", "add", "fd09::6/128", "dev", "vif6.0")
    targets = ["10.137.0.6", "192.0.2.2", "192.0.2.255", "198.51.100.7", "fd09::6", "2001:db9::1"]
    answer = json.loads(_in_netns(ns, KERNEL_CHILD, *targets))
    assert answer["addresses"] == {"eth0": ["192.0.2.2", "2001:db8::2"]}
    assert answer["routes"] == {
        "10.137.0.6": "vif6.0",  # a downstream qube
        "192.0.2.2": None,  # local
        "192.0.2.255": None,  # broadcast
        "198.51.100.7": "eth0",  # by the default route
        "fd09::6": "vif6.0",
        "2001:db9::1": None,  # unreachable
    }
    # The same answers as `ip` gives in that namespace.
    for target, device in answer["routes"].items():
        [route] = json.loads(run(ns, "ip", "-j", "route", "get", target, check=False) or "[{}]")
        if device is not None:
            assert route.get("dev") == device and "type" not in route, route
            ipaddress.ip_address(target)
