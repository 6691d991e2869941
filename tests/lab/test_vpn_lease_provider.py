"""Item 8 against the provider-mode responder: a port the provider picks, short leases,
renewal, rotation to a new port shown in `qvm-portfwd list`, release on `del`.

The responder's lease length is a parameter: 4 s here instead of providers' 60 s, so the test
runs past several leases in seconds (the keeper renews at half the granted lifetime).
"""

import ipaddress
import time

import pytest
from labnet import connect, peer_echo_server
from vpn_lease import (
    FORWARD_PORT,
    SERVICE_PORT,
    add_vpn_forward,
    cli,
    listed,
    log_count,
    public_endpoint,
    wait_for,
)

from qubes_lab import provider_natpmp, tunnel_keeper
from qubes_lab.builder import Lab

pytestmark = pytest.mark.lab

LEASE = 4  # seconds the responder grants
MAP_TIMEOUT = 15.0
REACH = 5.0  # connect timeout where a connection must succeed (loaded CI machines)
RENEWALS = 4  # grants seen before the lease is called renewed: > 1 lease of time
ROTATE_TIMEOUT = LEASE / 2 + 10.0  # the keeper learns a new port at its next renewal


@pytest.fixture(scope="module")
def lab(private_lab: Lab) -> Lab:
    provider_natpmp.start(private_lab, lease=LEASE)
    tunnel_keeper.start(private_lab, "sys-vpn")
    return private_lab


def _grants(lab: Lab, public_port: int) -> int:
    log = lab.state_dir / "logs" / f"{provider_natpmp.ROLE}.log"
    return log_count(log, f"external_port={public_port}, lifetime={LEASE})")


def test_provider_port_is_kept_renewed_follows_rotation_and_is_released(lab: Lab) -> None:
    a = lab.addresses
    server = str(a.server4)
    with peer_echo_server(lab, "vpn-work", SERVICE_PORT):
        forward = add_vpn_forward(lab)
        address, first_port = wait_for(
            "public endpoint in list", lambda: public_endpoint(lab, forward), MAP_TIMEOUT
        )
        assert ipaddress.ip_address(address) == a.provider_public4
        assert first_port != FORWARD_PORT  # the provider picked it
        assert f"VPN {address}:{first_port} → sys-vpn[applied]" in cli(lab, "list", "vpn-work")

        # The internet reaches vpn-work at the provider's public port, source kept.
        assert connect(lab, "server", address, first_port, timeout=REACH) == server
        # The LAN does not reach it: nothing was opened in sys-net or sys-firewall.
        assert connect(lab, "lan", a.edge_lan4, FORWARD_PORT, bind=a.lan_clients4[0]) is None
        for qube in ("sys-net", "sys-firewall"):
            ruleset = lab.run(qube, ["nft", "list", "ruleset"], capture_output=True, text=True)
            assert forward not in ruleset.stdout and f":{SERVICE_PORT}" not in ruleset.stdout

        # Renewed: the mapping outlives its first lease and keeps its port.
        seen = _grants(lab, first_port)
        wait_for(
            "renewals",
            lambda: _grants(lab, first_port) >= seen + RENEWALS or None,
            RENEWALS * LEASE + MAP_TIMEOUT,
        )
        assert public_endpoint(lab, forward) == (address, first_port)
        assert connect(lab, "server", address, first_port, timeout=REACH) == server

        # Rotated by the provider: the old port stops at once, the new one is followed.
        provider_natpmp.rotate(lab)
        rotated_at = time.monotonic()
        _, new_port = wait_for(
            "new port in list",
            lambda: e if (e := public_endpoint(lab, forward)) and e[1] != first_port else None,
            ROTATE_TIMEOUT,
        )
        print(f"new public port shown {time.monotonic() - rotated_at:.2f} s after rotation")
        assert connect(lab, "server", address, new_port, timeout=REACH) == server
        assert connect(lab, "server", address, first_port) is None
        assert f"VPN {address}:{new_port} → sys-vpn[applied]" in cli(lab, "list", "vpn-work")

        # Removed: the keeper gives the port back (lifetime 0) and it closes.
        released = log_count(
            lab.state_dir / "logs" / f"{provider_natpmp.ROLE}.log", "external_port=0, lifetime=0)"
        )
        cli(lab, "del", forward)
        wait_for(
            "release",
            lambda: (
                log_count(
                    lab.state_dir / "logs" / f"{provider_natpmp.ROLE}.log",
                    "external_port=0, lifetime=0)",
                )
                > released
                or None
            ),
            MAP_TIMEOUT,
        )
        assert connect(lab, "server", address, new_port) is None
        assert listed(lab, forward) is None
