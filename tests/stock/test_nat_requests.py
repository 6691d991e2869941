"""NAT requests over qrexec into real core-admin: natd's qrexec adapter, qrexec's part played
by the stand-in (the same bytes the real qrexec-daemon sends; tests/qrexec checks that), our
socket service served by the extension inside the stock qubesd. A grant is a feature of the
target in core-admin, applied on every hop by our agents; a refusal stores nothing."""

import sys
from pathlib import Path

import pytest
from stock_host import StockHost

from qubes_portfwd.adapters.qrexec_nat import QrexecNat
from qubes_portfwd.ports.nat_channel import NatRefused, Refusal

pytestmark = pytest.mark.lab

STAND_IN = Path(__file__).parents[1] / "qrexec" / "qrexec_stand_in.py"
APPLIED = {"sys-net": "applied", "sys-firewall": "applied", "work": "applied"}


def channel(host: StockHost, caller: str) -> QrexecNat:
    """`caller`'s natd channel to dom0, as qrexec connects it to the extension's socket."""
    program = (sys.executable, str(STAND_IN), "--socket", str(host.qubesd.nat_socket))
    return QrexecNat((*program, "--source", caller), timeout=60)


def request(host: StockHost, client: str, port: int, lifetime: int) -> str:
    return (
        f"client={client} proto=tcp internal-port={port} external-port={port} "
        f"lifetime={lifetime} origin=NAT-PMP wait=0"
    )


def work_address(host: StockHost) -> str:
    return str(host.qubesd.command("state")["state"]["work"]["ip"])


def forwards_of_work(host: StockHost) -> list[str]:
    return host.client().forward_ids("work")


def test_a_grant_through_qrexec_is_a_feature_of_work_applied_on_every_hop(
    stock_host: StockHost,
) -> None:
    host = stock_host
    host.client().nat_policy_set("work", ["ports=1024-65535 action=allow"])
    nat = channel(host, "sys-firewall")
    try:
        granted = nat.request(request(host, work_address(host), 8080, 600))
        assert granted["result"] == "granted", granted
        assert forwards_of_work(host) == [granted["id"]]
        assert host.wait_hops(granted["id"], APPLIED) == APPLIED

        removed = nat.request(request(host, work_address(host), 8080, 0))
        assert removed == {"result": "removed", "count": "1"}
        assert forwards_of_work(host) == []
    finally:
        host.client().nat_policy_set("work", [])


def test_under_deny_or_from_a_qube_not_in_front_nothing_is_stored(
    stock_host: StockHost,
) -> None:
    host = stock_host
    host.client().nat_policy_set("work", ["ports=1-65535 action=deny"])
    try:
        with pytest.raises(NatRefused) as denied:
            channel(host, "sys-firewall").request(request(host, work_address(host), 8081, 600))
        assert denied.value.refusal is Refusal.DENIED
        host.client().nat_policy_set("work", ["ports=1024-65535 action=allow"])
        with pytest.raises(NatRefused) as not_behind:  # work is behind sys-firewall, not sys-net
            channel(host, "sys-net").request(request(host, work_address(host), 8082, 600))
        assert not_behind.value.refusal is Refusal.DENIED
        assert forwards_of_work(host) == []
    finally:
        host.client().nat_policy_set("work", [])


def test_an_ask_waits_for_dom0s_user_on_the_extensions_prompt_socket(
    stock_host: StockHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = stock_host
    monkeypatch.setenv("QUBES_PORTFWD_PROMPT_SOCKET", str(host.qubesd.prompt_socket))
    user = host.client()  # dom0's prompt and qvm-portfwd pending|approve|deny
    user.nat_policy_set("work", ["ports=1024-65535 action=ask"])
    nat = channel(host, "sys-firewall")
    try:
        asked = nat.request(request(host, work_address(host), 8083, 600))
        denied = nat.request(request(host, work_address(host), 8084, 600))
        shown = {p["id"]: (p["qube"], p["via"]) for p in user.nat_pending()}
        user.nat_deny(denied["id"])
        approved = user.nat_approve(asked["id"])

        assert asked["result"] == denied["result"] == "pending"
        assert shown == {
            asked["id"]: ("work", "sys-firewall"),
            denied["id"]: ("work", "sys-firewall"),
        }
        assert forwards_of_work(host) == [approved["id"]]
        assert host.wait_hops(approved["id"], APPLIED) == APPLIED
        assert user.nat_pending() == []
        nat.request(request(host, work_address(host), 8083, 0))
        assert forwards_of_work(host) == []
    finally:
        user.nat_policy_set("work", [])
