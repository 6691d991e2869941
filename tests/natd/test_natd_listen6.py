"""Where natd listens for PCP over IPv6 (no root): the qube's IPv6 gateway from its DB, none
without IPv6, and a socket bound to it before any vif holds the address."""

import argparse
import asyncio
import ipaddress
import socket

import pytest

from qubes_portfwd.natd.main import GATEWAY6_KEY, freebind_udp6, gateway6_address, parser

# Documentation range: no interface of this machine holds it.
ABSENT = ipaddress.IPv6Address("2001:db8:ffff::3")


class Db:
    def __init__(self, keys: dict[str, bytes]) -> None:
        self.keys = keys

    def read(self, path: str) -> bytes | None:
        return self.keys.get(path)


def args(*argv: str) -> argparse.Namespace:
    return parser().parse_args(["--qube", "sys-firewall", *argv])


@pytest.mark.parametrize(
    ("keys", "argv", "expected"),
    [
        ({GATEWAY6_KEY: b"fd09:24ef:4179::a89:3"}, (), "fd09:24ef:4179::a89:3"),
        ({}, (), None),
        ({GATEWAY6_KEY: b"10.137.0.3"}, (), None),  # not IPv6: IPv4 only, said in the log
        ({GATEWAY6_KEY: b"fd09::1"}, ("--listen6", "fd09::2"), "fd09::2"),
    ],
)
def test_the_ipv6_gateway(keys: dict[str, bytes], argv: tuple[str, ...], expected: str) -> None:
    found = gateway6_address(args(*argv), Db(keys))  # type: ignore[arg-type]
    assert found == (ipaddress.IPv6Address(expected) if expected else None)


def test_bound_before_the_address_is_there() -> None:
    plain = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with plain, pytest.raises(OSError):
        plain.bind((str(ABSENT), 0))
    sock = freebind_udp6(ABSENT, 0)
    with sock:
        assert ipaddress.IPv6Address(sock.getsockname()[0]) == ABSENT
        assert not sock.getblocking()

        async def served() -> None:  # asyncio takes it as the endpoint's socket
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                asyncio.DatagramProtocol, sock=sock
            )
            transport.close()

        asyncio.run(served())
