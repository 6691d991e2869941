"""Who may call what (admin/access.py), as pure decisions."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qubes_lab.qubesd.access import QUBE_METHODS, Caller, Peer, check_call, dom0_caller
from qubes_lab.qubesd.wire import Request
from qubes_portfwd.controller.errors import PermissionDenied

ADMIN_GID = 990
SERVICE_UID = 0
names = st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True)
methods = st.from_regex(r"admin\.[a-zA-Z.]{1,40}", fullmatch=True)


def peer(uid: int, *groups: int) -> Peer:
    return Peer(pid=1234, uid=uid, groups=frozenset(groups))


@pytest.mark.parametrize(
    ("who", "let_in"),
    [
        (peer(0, 0), True),
        (peer(1000, 1000, ADMIN_GID), True),
        (peer(1000, ADMIN_GID), True),
        (peer(1000, 1000, 27, 100), False),
        (peer(65534, 65534), False),
    ],
)
def test_dom0_socket_lets_in_root_and_the_admin_group_only(who: Peer, let_in: bool) -> None:
    caller = dom0_caller(who, SERVICE_UID, ADMIN_GID)
    assert (caller.refusal is None) == let_in


def test_without_an_admin_group_only_root_and_the_services_own_user() -> None:
    assert dom0_caller(peer(0), 1000, None).refusal is None
    assert dom0_caller(peer(1000, 1000), 1000, None).refusal is None
    assert dom0_caller(peer(1001, 1001, 0), 1000, None).refusal is not None


@given(names, names, names, methods)
def test_a_qube_never_calls_beyond_its_nat_methods_about_itself(
    qube: str, source: str, dest: str, method: str
) -> None:
    request = Request(method, "", source, dest, b"")
    allowed = source == qube and dest == qube and method in QUBE_METHODS
    try:
        check_call(Caller(qube), request)
    except PermissionDenied:
        assert not allowed
    else:
        assert allowed


@given(st.sampled_from(sorted(QUBE_METHODS)), names)
def test_a_qube_may_ask_about_itself(method: str, qube: str) -> None:
    check_call(Caller(qube), Request(method, "", qube, qube, b""))


def test_a_refused_dom0_caller_is_refused_whatever_it_asks() -> None:
    caller = Caller("dom0", "uid 65534 is not root and not in group 990")
    with pytest.raises(PermissionDenied, match="caller: uid 65534"):
        check_call(caller, Request("admin.vm.List", "", "dom0", "dom0", b""))
