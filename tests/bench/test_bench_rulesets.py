"""The bench's two designs of the same forwards, as text (the lab run loads them for real)."""

import pytest

from bench.rulesets import (
    MEASURED_ID,
    Design,
    background_hops,
    edge_script,
    firewall_script,
    target_script,
)


@pytest.mark.parametrize("count", [1, 2, 50])
def test_linear_design_has_one_dnat_and_one_accept_per_forward(count: int) -> None:
    script = edge_script(Design.LINEAR, count)
    assert script.count(" dnat ip to ") == count
    assert script.count('add rule ip qubes custom-forward iifname "eth0"') == count


def test_forward_under_test_is_last_in_the_linear_chain() -> None:
    dnats = [line for line in edge_script(Design.LINEAR, 20).splitlines() if "dnat ip to" in line]
    assert "tcp dport 7000-7001" in dnats[-1]
    assert all("tcp dport 7000-7001" not in line for line in dnats[:-1])


@pytest.mark.parametrize("count", [1, 2, 50])
def test_map_design_dispatches_every_forward_through_one_map(count: int) -> None:
    script = edge_script(Design.MAP, count)
    assert script.count("chain fwd-") == count
    assert f"chain fwd-{MEASURED_ID}" in script
    assert " dnat ip to " not in script.split("table ip qubes-portfwd {", 1)[0]


def test_both_designs_share_base_rules_and_the_comparison_paths() -> None:
    tails = [edge_script(d, 5).rsplit("\n", 4)[1:] for d in Design]
    assert tails[0] == tails[1]
    for design in Design:
        script = edge_script(design, 5)
        assert script.startswith("flush ruleset\ntable ip qubes {")
        assert 'add element ip qubes allowed { "vif3.0" . 10.137.0.6 }' in script


def test_background_forwards_use_distinct_ports_away_from_the_services() -> None:
    hops = background_hops(300)
    ports = [h.ports.first for h in hops]
    assert len(set(ports)) == 300
    assert min(ports) > 7101


def test_counts_are_checked() -> None:
    with pytest.raises(ValueError):
        edge_script(Design.MAP, 0)
    with pytest.raises(ValueError):
        background_hops(-1)


def test_inner_hops_forward_and_accept_the_services() -> None:
    assert "10.137.0.6" in firewall_script()
    assert "7000-7001" in target_script()
