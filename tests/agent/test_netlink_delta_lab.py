"""In-place changes committed straight over netlink against the kernel: the ruleset of ours
after them is what libnftables leaves from the same change's text (elements, chains, rules;
handles and counters aside). The commit runs inside the namespace, in a process of its own."""

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from qubes_lab.qubes_base import BaseParams, base_ruleset
from qubes_portfwd.model.entries import DnatHop, Hop
from qubes_portfwd.netlink.delta_batch import delta_messages
from qubes_portfwd.nft.declared_sets import declared_sets
from qubes_portfwd.nft.delta import delta_script, split_script
from tests.nft.helpers import accept, dnat
from tests.nft.lab import make_netns, nft, run
from tests.nft.test_delta_lab import compiled, ours
from tests.strategies import accept_hops, dnat_hops

__all__ = ["make_netns"]

pytestmark = pytest.mark.lab

# Run inside the namespace: reads the change and the new script, commits over netlink.
COMMIT = """
import sys
from qubes_portfwd.agent.nft_netlink import NetlinkBatches
from qubes_portfwd.netlink.delta_batch import delta_messages
from qubes_portfwd.nft.declared_sets import declared_sets
from qubes_portfwd.nft.delta import split_script
delta, script = (open(path).read() for path in sys.argv[1:3])
messages = delta_messages(delta, declared_sets(split_script(script).skeleton))
result = NetlinkBatches().commit(messages)
print("ok" if result.ok else result.output)
"""


def _edge(make_netns: Callable[[], str]) -> str:
    ns = make_netns()
    nft(ns, "-f", "-", stdin=base_ruleset(BaseParams(provides_network=True, ipv6=True)))
    return ns


def check_direct_matches_text(
    subject: str, reference: str, tmp: Path, first: list[Hop], second: list[Hop]
) -> bool:
    """Load `first` whole in both, change to `second` (directly in `subject`, as text in
    `reference`) and compare; whether the change had a direct form."""
    for ns in (subject, reference):
        nft(ns, "-f", "-", stdin=compiled(ns, first))
    before, script = compiled(subject, first), compiled(subject, second)
    delta = delta_script(split_script(before), split_script(script))
    if not delta:
        return False
    if delta_messages(delta, declared_sets(split_script(script).skeleton)) is None:
        return False
    (tmp / "delta").write_text(delta)
    (tmp / "script").write_text(script)
    answer = run(subject, sys.executable, "-c", COMMIT, str(tmp / "delta"), str(tmp / "script"))
    assert answer.strip() == "ok", answer
    nft(reference, "-f", "-", stdin=delta)
    assert ours(subject) == ours(reference)
    return True


def test_adds_changes_and_removals_of_one_protocol_go_direct_and_match(
    make_netns: Callable[[], str], tmp_path: Path
) -> None:
    subject, reference = _edge(make_netns), _edge(make_netns)
    base = [dnat("000000000001"), accept("000000000002"), dnat("000000000003", ports="81-81")]
    steps = [
        [*base, dnat("000000000004", ports="82-82", to="10.137.0.9")],  # edge: hairpin too
        [*base, dnat("000000000004", ports="82-82", toports="92-92", to="10.137.0.9")],
        [*base, dnat("000000000005", ports="90-99", srchost="192.0.2.0/24", proto="udp")],
        [*base, dnat("000000000006", inbound="vif5.0", srchost="10.137.0.0/16")],
        [
            *base,
            dnat(
                "000000000007",
                family=6,
                to="fd09:24ef:4179::a89:3",
                toports="8080-8080",
                srchost="::/0",
            ),
        ],
        [*base, accept("000000000008", ports="22-22", srchost="192.0.2.7")],
        [base[0]],
    ]
    previous = base
    for step in steps:
        assert check_direct_matches_text(subject, reference, tmp_path, previous, step), step
        previous = step


def _one_protocol(hop: DnatHop) -> DnatHop:
    """A DNAT of both protocols has `meta l4proto { tcp, udp }`, which goes through nft."""
    return dataclasses.replace(hop, protos=hop.protos[:1])


DIRECT_HOPS = st.one_of(dnat_hops().map(_one_protocol), accept_hops())


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(DIRECT_HOPS, min_size=1, max_size=5),
    st.lists(DIRECT_HOPS, max_size=3),
    st.integers(0, 5),
)
def test_any_direct_change_ends_as_the_same_text_through_libnftables(
    make_netns: Callable[[], str], tmp_path: Path, kept: list[Hop], added: list[Hop], dropped: int
) -> None:
    subject, reference = _edge(make_netns), _edge(make_netns)
    second = [*kept[dropped:], *added]
    direct = check_direct_matches_text(subject, reference, tmp_path, kept, second)
    event("direct" if direct else "no change, or through libnftables")
