"""The keeper's lease book: what falls due, back-off, and what is reported as public."""

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from qubes_portfwd.tunnel import leases as book
from qubes_portfwd.tunnel.leases import Lease, Map, Unmap
from qubes_portfwd.tunnel.wanted import MappingKey

TCP80 = MappingKey("tcp", 80)
UDP53 = MappingKey("udp", 53)
ADDRESS = ipaddress.IPv4Address("203.0.113.2")
ID = "0123456789ab"


def test_new_ports_are_asked_for_with_their_own_number_and_removed_ones_released() -> None:
    held = {UDP53: book.granted(UDP53, 40000, 60, 0.0, None)}
    actions = book.due_actions({TCP80: {ID}}, held, now=1.0)
    assert actions == [Unmap(UDP53), Map(TCP80, 80)]


def test_renewal_at_half_the_lifetime_suggests_the_port_held() -> None:
    held = {TCP80: book.granted(TCP80, 41234, 60, 100.0, None)}
    assert book.due_actions({TCP80: {ID}}, held, now=129.0) == []
    assert book.next_wakeup({TCP80: {ID}}, held, now=129.0) == 130.0
    assert book.due_actions({TCP80: {ID}}, held, now=130.0) == [Map(TCP80, 41234)]


@given(st.integers(2, 100_000), st.floats(0, 1e6))
def test_a_grant_is_renewed_before_it_runs_out(lifetime: int, now: float) -> None:
    lease = book.granted(TCP80, 40000, lifetime, now, None)
    assert now < lease.next_request < now + lifetime


@given(st.integers(1, 20), st.integers(2, 3600))
def test_failures_back_off_but_retry_inside_a_valid_lease(failures: int, lifetime: int) -> None:
    lease = book.granted(TCP80, 40000, lifetime, 0.0, None)
    now = lease.next_request
    for _ in range(failures):
        remaining = lease.granted_at + lease.lifetime - now
        lease = book.failed(TCP80, "no answer", now, lease)
        assert lease.next_request > now
        if remaining >= 3 * book.MIN_RENEW / 2:  # room for a retry above the floor
            assert lease.next_request < lease.granted_at + lease.lifetime
        now = lease.next_request
    assert lease.failures == failures and lease.public_port == 40000


def test_backoff_without_a_grant_doubles_up_to_a_cap() -> None:
    lease = None
    delays = []
    now = 0.0
    for _ in range(10):
        lease = book.failed(TCP80, "refused", now, lease)
        delays.append(lease.next_request - now)
        now = lease.next_request
    assert delays[:3] == [1.0, 2.0, 4.0]
    assert max(delays) == book.MAX_BACKOFF


def test_public_entries_name_each_forward_and_drop_expired_grants() -> None:
    held = {
        TCP80: book.granted(TCP80, 41234, 60, 0.0, None),
        UDP53: book.granted(UDP53, 40053, 4, 0.0, None),
    }
    wanted = {TCP80: frozenset({ID, "ba9876543210"}), UDP53: frozenset({ID})}
    assert book.public_entries(wanted, held, ADDRESS, now=10.0) == {
        f"/qubes-portfwd-public/{ID}/tcp/80": "203.0.113.2:41234",
        "/qubes-portfwd-public/ba9876543210/tcp/80": "203.0.113.2:41234",
    }
    assert book.public_entries(wanted, held, None, now=1.0) == {}


def test_renew_all_now_after_the_provider_lost_its_state() -> None:
    held = {TCP80: book.granted(TCP80, 41234, 60, 0.0, None)}
    renewed = book.renew_all_now(held, 5.0)
    assert book.due_actions({TCP80: {ID}}, renewed, 5.0) == [Map(TCP80, 41234)]
    assert isinstance(renewed[TCP80], Lease)
