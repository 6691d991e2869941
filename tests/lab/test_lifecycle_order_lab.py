"""Apply order and partial failure in a lab: inner hops first, removal in reverse (the agents'
status times say so); a hop whose `nft` fails leaves every hop outside it closed."""

from collections.abc import Iterator

import pytest

from lifecycle_lab import LabUser, echo_server, wait_until
from qubes_lab.builder import Lab

pytestmark = pytest.mark.lab

PATH = ["sys-net", "sys-firewall", "work"]
TIMEOUT = 15.0
ANY = ("--external", "--from", "any")


@pytest.fixture(scope="module")
def user(private_lab: Lab) -> Iterator[LabUser]:
    with echo_server(private_lab, "work"):
        yield LabUser(private_lab)


def handled_times(user: LabUser, after: dict[str, int]) -> dict[str, float]:
    """When each agent reported a generation newer than `after` (waits for all of them)."""

    def handled() -> bool:
        return all(user.lab.store(q).read_status().handled > after[q] for q in PATH)

    wait_until(handled, TIMEOUT, "every hop's agent handled the change")
    return {q: user.lab.store(q).read_status().updated for q in PATH}


def generations(user: LabUser) -> dict[str, int]:
    return {q: user.lab.store(q).generation() for q in PATH}


def test_inner_hops_apply_first_and_removal_goes_outer_first(user: LabUser) -> None:
    before = generations(user)
    forward_id = user.add("work", "tcp", "80:8080", *ANY)
    added = handled_times(user, before)
    assert added["work"] <= added["sys-firewall"] <= added["sys-net"], added
    wait_until(lambda: user.applied(forward_id, PATH), TIMEOUT, "applied")
    assert user.lan_connects(80)

    before = generations(user)
    user.ok("qvm_portfwd", "del", forward_id)
    removed = handled_times(user, before)
    assert removed["sys-net"] <= removed["sys-firewall"] <= removed["work"], removed
    assert not user.lan_connects(80)


def test_a_hop_failing_to_apply_leaves_everything_outside_it_closed(user: LabUser) -> None:
    """Last in the module: it breaks sys-firewall's base rules on purpose."""
    working = user.add("work", "tcp", "81:8080", *ANY)
    wait_until(lambda: user.applied(working, PATH), TIMEOUT, "applied")
    user.lab.run("sys-firewall", ["nft", "delete", "table", "ip", "qubes"], check=True)

    # An active forward whose inner hop cannot re-apply is closed outside it...
    wait_until(lambda: not user.dnat_in_kernel("sys-net", working), TIMEOUT, "sys-net closed")
    assert not user.lan_connects(81)

    # ...and a new one never opens outside the failing hop.
    added = user.add("work", "tcp", "82:8082", *ANY)

    def failed() -> bool:
        status = user.status(added)
        return status is not None and status.state == "failed"

    wait_until(failed, TIMEOUT, "shown as failed")
    status = user.status(added)
    assert status is not None
    states = {h.qube: h.state for h in status.hops}
    assert states["sys-firewall"] == "failed" and states["sys-net"] != "applied"
    assert (status.reason or "").startswith("sys-firewall: not applied")
    listing = user.ok("qvm_portfwd", "list")
    assert f"{added}" in listing and "failed" in listing
    for forward_id in (working, added):
        assert not any(forward_id in key for key in user.store_keys("sys-net"))
        assert not user.dnat_in_kernel("sys-net", forward_id)
    assert not user.lan_connects(82)
