"""In-place changes between compiled scripts, without a kernel: what the delta says."""

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qubes_portfwd.model.entries import Hop
from qubes_portfwd.nft.compiler import QubeRules, compile_qube
from qubes_portfwd.nft.delta import delta_script, split_script
from qubes_portfwd.nft.owned import OwnedJump, OwnedJumps
from tests.strategies import accept_hops, dnat_hops

from .helpers import accept, dnat

OUTSIDE = {"eth0": (ipaddress.ip_address("192.0.2.2"), ipaddress.ip_address("2001:db8::2"))}
OWNED = OwnedJumps(
    (OwnedJump(4, "custom-forward", 7), OwnedJump(4, "custom-input", 8)), frozenset({4, 6})
)
IN_PLACE_VERBS = ("add chain ", "flush chain ", "add rule ", "add element ", "delete element ")


def script(*hops: Hop) -> str:
    return compile_qube(QubeRules(hops=hops, interface_addresses=OUTSIDE), OWNED).script


def test_the_same_script_needs_no_change() -> None:
    parts = split_script(script(dnat("000000000001"), accept("000000000002")))
    assert delta_script(parts, parts) == ""


def test_jump_handles_do_not_count_as_a_change() -> None:
    other = OwnedJumps(
        (OwnedJump(4, "custom-forward", 70), OwnedJump(4, "custom-input", 80)), frozenset({4, 6})
    )
    hops = (dnat("000000000001"),)
    again = compile_qube(QubeRules(hops=hops, interface_addresses=OUTSIDE), other).script
    assert delta_script(split_script(script(*hops)), split_script(again)) == ""


def test_an_added_forward_adds_its_chain_and_elements_only() -> None:
    before = split_script(script(dnat("000000000001", ports="80-80")))
    after = split_script(
        script(
            dnat("000000000001", ports="80-80"),
            dnat("000000000002", ports="81-81", to="10.137.0.9"),
        )
    )
    delta = delta_script(before, after)
    assert delta is not None
    lines = delta.splitlines()
    assert "add chain ip qubes-portfwd fwd-000000000002" in lines
    assert any(
        line.startswith("add element ip qubes-portfwd dnat-inbound-any {")
        and '"eth0" . tcp . 81 : goto fwd-000000000002' in line
        for line in lines
    )
    assert not any(line.startswith(("delete", "flush")) for line in lines)


def test_a_removed_forward_goes_by_key_and_its_chain_last() -> None:
    before = split_script(script(dnat("000000000001"), dnat("000000000002", ports="81-81")))
    after = split_script(script(dnat("000000000001")))
    delta = delta_script(before, after)
    assert delta is not None
    lines = delta.splitlines()
    assert 'delete element ip qubes-portfwd dnat-inbound-any { "eth0" . tcp . 81 }' in lines
    assert lines[-1] == "delete chain ip qubes-portfwd hairpin-000000000002"
    assert lines.index("delete chain ip qubes-portfwd fwd-000000000002") > max(
        i for i, line in enumerate(lines) if line.startswith("delete element")
    )


def test_a_changed_target_refills_the_chain() -> None:
    before = split_script(script(dnat("000000000001", to="10.137.0.5")))
    after = split_script(script(dnat("000000000001", to="10.137.0.9")))
    delta = delta_script(before, after)
    assert delta is not None
    assert "flush chain ip qubes-portfwd fwd-000000000001" in delta.splitlines()
    assert "add rule ip qubes-portfwd fwd-000000000001 meta l4proto tcp dnat ip to 10.137.0.9" in (
        delta.splitlines()
    )


def test_a_new_structure_is_loaded_whole() -> None:
    """Qubes' ip6 table gone: our sets and jumps there go, which elements alone cannot say."""
    hops = (dnat("000000000001"),)
    ipv4_only = OwnedJumps(OWNED.jumps, frozenset({4}))
    fewer = compile_qube(QubeRules(hops=hops, interface_addresses=OUTSIDE), ipv4_only).script
    assert delta_script(split_script(script(*hops)), split_script(fewer)) is None


def test_a_new_source_length_or_the_first_hairpin_changes_elements_only() -> None:
    before = split_script(script(accept("000000000002")))
    network = dnat("000000000001", ports="81-81", srchost="10.1.0.0/16")
    delta = delta_script(before, split_script(script(accept("000000000002"), network)))
    assert delta is not None
    assert "add element ip qubes-portfwd dnat-hairpin-mask1 {" in delta


def test_a_script_not_of_the_compiler_is_refused() -> None:
    with pytest.raises(ValueError, match="not closed"):
        split_script("table ip qubes-portfwd {\n  chain fwd-1 {\n")


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.one_of(dnat_hops(), accept_hops()), max_size=6),
    st.lists(st.one_of(dnat_hops(), accept_hops()), max_size=6),
)
def test_a_delta_touches_only_elements_and_forward_chains(
    first: list[Hop], second: list[Hop]
) -> None:
    before, after = split_script(script(*first)), split_script(script(*second))
    delta = delta_script(before, after)
    if delta is None:
        assert before.skeleton != after.skeleton or before.elements.keys() != after.elements.keys()
        return
    for line in delta.splitlines():
        assert line.startswith(IN_PLACE_VERBS) or line.startswith("delete chain "), line
        if "chain" in line.split(" ", 2)[1]:
            name = line.split()[4]
            assert name.startswith(("fwd-", "hairpin-")), line
    assert delta_script(after, after) == ""
