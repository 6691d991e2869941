"""Every fuzz target on inputs near its seeds (hypothesis), each input under a time limit.

The normal suite runs CI_EXAMPLES inputs per target; FUZZ_SECONDS=N runs a hundred times more.
"""

import pytest
from hypothesis import HealthCheck, given, settings

from .limits import examples, time_limit
from .mutations import near
from .seeds import SEEDS
from .targets import TARGETS


def test_every_target_has_seeds() -> None:
    assert set(SEEDS) == set(TARGETS)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds_pass_their_target(name: str) -> None:
    for seed in SEEDS[name]:
        with time_limit():
            TARGETS[name](seed)


def _property(name: str):  # type: ignore[no-untyped-def]
    @settings(
        max_examples=examples(),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=near(SEEDS[name]))
    def run(data: bytes) -> None:
        with time_limit():
            TARGETS[name](data)

    return run


test_rule_text_inputs = _property("rule_text")
test_firewall_xml_inputs = _property("firewall_xml")
test_admin_wire_inputs = _property("admin_wire")
test_hop_entry_inputs = _property("hop_entry")
test_firewall_entry_inputs = _property("firewall_entry")
test_agent_entries_inputs = _property("agent_entries")
test_natpmp_inputs = _property("natpmp")
test_pcp_inputs = _property("pcp")
test_nat_request_inputs = _property("nat_request")
test_port_control_inputs = _property("port_control")
test_upnp_http_inputs = _property("upnp_http")
test_upnp_soap_inputs = _property("upnp_soap")
