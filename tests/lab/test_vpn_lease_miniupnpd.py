"""Item 8 against a real NAT-PMP peer: Debian's miniupnpd on the provider side (fixed ports).

miniupnpd grants the lifetime asked for, so the keeper asks for 4 s to run past several
leases in seconds; it maps the forward's own port (miniupnpd never picks one).
"""

import ipaddress
import os
from collections.abc import Iterator

import pytest
from labnet import connect, peer_echo_server
from vpn_lease import (
    FORWARD_PORT,
    SERVICE_PORT,
    add_vpn_forward,
    cli,
    log_count,
    public_endpoint,
    wait_for,
)

from qubes_lab import provider_miniupnpd, tunnel_keeper
from qubes_lab.builder import Lab

pytestmark = pytest.mark.lab

LIFETIME = 10  # renewed at 5 s: slack for a loaded CI machine (a 4 s lease lapsed once)
MAP_TIMEOUT = 15.0
REACH = 5.0  # connect timeout where a connection must succeed (loaded CI machines)
RENEWALS = 2


@pytest.fixture(scope="module")
def miniupnpd_installed() -> None:
    if not os.path.exists(provider_miniupnpd.MINIUPNPD):
        pytest.fail("miniupnpd is not installed (apt-get install miniupnpd-nftables)")


@pytest.fixture(scope="module")
def lab(miniupnpd_installed: None, private_lab: Lab) -> Iterator[Lab]:
    provider_miniupnpd.start(private_lab)
    try:
        tunnel_keeper.start(private_lab, "sys-vpn", lifetime=LIFETIME)
        yield private_lab
    finally:
        provider_miniupnpd.stop(private_lab)


def _log(lab: Lab) -> str:
    return str(lab.state_dir / "logs" / f"{provider_miniupnpd.ROLE}.log")


def test_miniupnpd_mapping_is_kept_renewed_and_released(lab: Lab) -> None:
    a = lab.addresses
    server = str(a.server4)
    requests = f"{FORWARD_PORT}->{a.tunnel_address('sys-vpn')}:{FORWARD_PORT} tcp"
    with peer_echo_server(lab, "vpn-work", SERVICE_PORT):
        forward = add_vpn_forward(lab)
        address, port = wait_for(
            "public endpoint in list", lambda: public_endpoint(lab, forward), MAP_TIMEOUT
        )
        assert ipaddress.ip_address(address) == provider_miniupnpd.MINIUPNPD_PUBLIC4
        assert port == FORWARD_PORT
        assert f"VPN {address}:{port} → sys-vpn[applied]" in cli(lab, "list", "vpn-work")
        assert connect(lab, "server", address, port, timeout=REACH) == server
        assert connect(lab, "lan", a.edge_lan4, FORWARD_PORT, bind=a.lan_clients4[0]) is None

        seen = log_count(_log(lab), f"{requests} lifetime={LIFETIME}s")
        wait_for(
            "renewals",
            lambda: (
                log_count(_log(lab), f"{requests} lifetime={LIFETIME}s") >= seen + RENEWALS or None
            ),
            RENEWALS * LIFETIME + MAP_TIMEOUT,
        )
        assert connect(lab, "server", address, port, timeout=REACH) == server

        cli(lab, "del", forward)
        wait_for(
            "release",
            lambda: log_count(_log(lab), f"TCP port {FORWARD_PORT} mapping removed") or None,
            MAP_TIMEOUT,
        )
        assert connect(lab, "server", address, port) is None
