"""Expiry in a lab: a `--for 3s` forward leaves every hop's kernel within a second of its
time, outer hop first, with no command; an until-reboot one survives an admin-service
restart but not a new boot id."""

import time
import uuid
from collections.abc import Iterator

import pytest

from admin_service import simulate_reboot
from lifecycle_lab import LabUser, echo_server, wait_until
from qubes_lab.builder import Lab
from qubes_portfwd.model.rule import ExpireAt
from qubes_portfwd.model.rule_text import parse_rule

pytestmark = pytest.mark.lab

PATH = ["sys-net", "sys-firewall", "work"]
WITHIN = 1.5  # the requirement is one second; the poll reports the measured time
APPLY_TIMEOUT = 15.0


@pytest.fixture(scope="module")
def user(private_lab: Lab) -> Iterator[LabUser]:
    with echo_server(private_lab, "work"):
        yield LabUser(private_lab)


def on_any_hop(user: LabUser, forward_id: str, port: int) -> list[str]:
    """The hops whose kernel still holds something of the forward."""
    held = [q for q in PATH[:2] if user.dnat_in_kernel(q, forward_id)]
    return held + (["work"] if user.input_allowed("work", port) else [])


def forward_features(user: LabUser) -> str:
    """The values of work's `portfwd.<id>` features: where its forwards are stored."""
    client = user.client()
    return " ".join(client.get_feature("work", f"portfwd.{i}") for i in client.forward_ids("work"))


def test_a_forward_for_3s_leaves_every_kernel_within_a_second_of_its_time(
    user: LabUser,
) -> None:
    forward_id = user.add("work", "tcp", "80:8080", "--external", "--from", "any", "--for", "3s")
    wait_until(lambda: user.applied(forward_id, PATH), APPLY_TIMEOUT, "applied on every hop")
    assert user.lan_connects(80)
    status = user.status(forward_id)
    assert status is not None
    rule = parse_rule(status.rule)
    assert isinstance(rule.expire, ExpireAt)
    expire = rule.expire.timestamp
    assert on_any_hop(user, forward_id, 8080) == PATH

    generations = {q: user.lab.store(q).generation() for q in PATH}
    assert user.input_allowed("work", 8080)
    wait_until(lambda: time.time() >= expire, 5.0, "the expiry time")
    # Removal goes outer hop first, so the target's kernel is the last to be cleaned.
    wait_until(lambda: not user.input_allowed("work", 8080), 2 * WITHIN, "gone from work")
    late = time.time() - expire
    print(f"forward gone from every hop {late:.3f} s after its expiry time")
    assert on_any_hop(user, forward_id, 8080) == []
    assert late < WITHIN

    def removal_handled() -> bool:
        return all(user.lab.store(q).read_status().handled > generations[q] for q in PATH)

    wait_until(removal_handled, APPLY_TIMEOUT, "every agent handled the removal")
    statuses = {q: user.lab.store(q).read_status().updated for q in PATH}
    assert statuses["sys-net"] <= statuses["sys-firewall"] <= statuses["work"], statuses
    assert not user.lan_connects(80)
    assert forward_id not in user.forwards()
    assert f"{expire}" not in forward_features(user)
    assert forward_id not in user.client().forward_ids("work")


def test_until_reboot_survives_a_service_restart_but_not_a_new_boot_id(user: LabUser) -> None:
    forward_id = user.add("work", "tcp", "81:8080", "--external", "--from", "any", "--until-reboot")
    wait_until(lambda: user.applied(forward_id, PATH), APPLY_TIMEOUT, "applied on every hop")
    boot_id = user.lab.boot_id_file.read_text().strip()
    assert f"boot:{boot_id}" in user.forwards()[forward_id]["expire"]

    user.lab.restart_admin()
    assert user.applied(forward_id, PATH)
    assert user.lan_connects(81)

    simulate_reboot(user.lab.boot_id_file, str(uuid.uuid4()))  # the host rebooted
    took = wait_until(
        lambda: not on_any_hop(user, forward_id, 8080), APPLY_TIMEOUT, "gone after the reboot"
    )
    print(f"until-reboot forward gone from every hop {took:.3f} s after the new boot id")
    assert forward_id not in user.forwards()
    assert "boot:" not in forward_features(user)
    assert not user.lan_connects(81)

    user.lab.restart_admin()
    assert forward_id not in user.forwards()
    assert not user.store_keys("sys-net")
