"""NAT-PMP behind a VPN qube: natd in sys-vpn answers vpn-work with the provider's public
address and port (the tunnel qube's lease keeper got them from the provider), and the
internet reaches vpn-work there."""

import re

import pytest
from natd_lab import tcp_server, wait_fetch

from qubes_lab import provider_natpmp, tunnel_keeper
from qubes_lab.builder import Lab
from qubes_portfwd.client import AdminClient

pytestmark = pytest.mark.lab

SERVICE_PORT = 8090
TUNNEL_PORT = 8090  # asked outside port: on sys-vpn's tunnel interface
MAPPED_RE = re.compile(r"Mapped public port (\d+) protocol TCP to local port (\d+)")
NATPMPC = ["timeout", "30", "stdbuf", "-oL", "natpmpc", "-g"]
ADDRESS_RE = re.compile(r"Public IP address : ([0-9.]+)")


@pytest.fixture(scope="module")
def vpn_lab(private_lab: Lab) -> Lab:
    provider_natpmp.start(private_lab)
    tunnel_keeper.start(private_lab, "sys-vpn")
    private_lab.natd_url("sys-vpn")  # natd answers there before the test asks
    return private_lab


def test_mapping_behind_the_vpn_comes_back_with_the_providers_port(vpn_lab: Lab) -> None:
    lab = vpn_lab
    AdminClient(lab.admin_socket).nat_policy_set("vpn-work", ["ports=1-65535 action=allow"])
    gateway = str(lab.topology["sys-vpn"].address4)
    with tcp_server(lab, "vpn-work", SERVICE_PORT, "hello-behind-vpn"):
        done = lab.run(
            "vpn-work",
            [*NATPMPC, gateway, "-a", str(TUNNEL_PORT), str(SERVICE_PORT), "tcp", "300"],
            capture_output=True,
            text=True,
            cwd="/",
        )
        mapped = MAPPED_RE.search(done.stdout)
        assert mapped, done.stdout + done.stderr
        public_port = int(mapped.group(1))
        assert public_port != TUNNEL_PORT  # the provider chose it
        # natpmpc asks for the external address first: the provider's once a lease exists
        # (before this first mapping there is none, so 0.0.0.0), never the LAN's.
        address = ADDRESS_RE.search(done.stdout)
        a = lab.addresses
        assert address is not None and address.group(1) in (
            str(a.provider_public4),
            "0.0.0.0",
        )
        server = str(a.server4)
        reply = wait_fetch(lab, "server", server, str(a.provider_public4), public_port)
        assert reply == "hello-behind-vpn"
