"""A PCP (RFC 6887) MAP client written for the tests from the RFC's wire format, IPv4 or IPv6:
`python3 pcp_wire_client.py SERVER PROTO INTERNAL EXTERNAL LIFETIME` prints one JSON line.

No Debian package speaks PCP over IPv6 (natpmpc is NAT-PMP, IPv4 only), so this stands in for
one; it shares no code with the product's codec. Retransmits on silence with doubling waits
(RFC 6887 §8.1.1, shortened for a lab), and accepts only the reply to its own nonce.
"""

import ipaddress
import json
import os
import socket
import struct
import sys
import time

PCP_PORT = 5351
VERSION = 2
OPCODE_MAP = 1
RESPONSE_BIT = 0x80
PROTOCOLS = {"tcp": 6, "udp": 17}
WAITS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # about 16 s in all, then "silent"


def pcp_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    """RFC 6887 §5: 16 bytes; an IPv4 address as its IPv4-mapped IPv6 address."""
    if address.version == 4:
        return b"\0" * 10 + b"\xff\xff" + address.packed
    return address.packed


def from_pcp_address(packed: bytes) -> str:
    address = ipaddress.IPv6Address(packed)
    return str(address.ipv4_mapped or address)


def main(argv: list[str]) -> int:
    server, proto, internal, external, lifetime = argv
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.connect((server, PCP_PORT))
    # The header's client address is the source address of the request (RFC 6887 §8.1).
    client = ipaddress.ip_address(sock.getsockname()[0])
    nonce = os.urandom(12)
    # No preference: all zeros in the request's family (RFC 6887 §11.1).
    no_preference = ipaddress.ip_address("::" if family == socket.AF_INET6 else "0.0.0.0")
    request = struct.pack("!BBHI", VERSION, OPCODE_MAP, 0, int(lifetime)) + pcp_address(client)
    request += nonce + struct.pack("!B3xHH", PROTOCOLS[proto], int(internal), int(external))
    request += pcp_address(no_preference)
    started = time.monotonic()
    for wait in WAITS:
        sock.send(request)
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                reply = sock.recv(1100)
            except OSError:
                break
            if len(reply) < 60 or reply[0] != VERSION or reply[1] != OPCODE_MAP | RESPONSE_BIT:
                continue
            if reply[24:36] != nonce:  # not the answer to this request (RFC 6887 §11.3)
                continue
            result, reply_lifetime, epoch = reply[3], *struct.unpack("!II", reply[4:12])
            reply_protocol = reply[36]
            reply_internal, reply_external = struct.unpack("!HH", reply[40:44])
            answer = {
                "result": result,
                "lifetime": reply_lifetime,
                "epoch": epoch,
                "protocol": reply_protocol,
                "internal": reply_internal,
                "port": reply_external,
                "address": from_pcp_address(reply[44:60]),
                "client": str(client),
                "seconds": round(time.monotonic() - started, 4),
            }
            print(json.dumps(answer))
            return 0
    print(json.dumps({"result": None, "client": str(client)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
