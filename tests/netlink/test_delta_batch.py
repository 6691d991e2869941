"""Which in-place changes go to the kernel directly, and the bytes of their key fields (as
`nft --debug=netlink` showed nft 1.0.6 sending the same elements)."""

import struct

import pytest

from qubes_portfwd.netlink.delta_batch import delta_messages
from qubes_portfwd.netlink.nft_encode import (
    NFT_MSG_NEWCHAIN,
    NFT_MSG_NEWRULE,
    NLMSG_ERROR,
    answers_of,
    field_bytes,
)
from qubes_portfwd.netlink.transactions import MESSAGE_HEADER
from qubes_portfwd.nft.declared_sets import DeclaredSet, declared_sets

SKELETON = (
    "table ip qubes-portfwd {",
    "  map dnat-inbound {",
    "    type ifname . ipv4_addr . inet_proto . inet_service : verdict",
    "    flags interval",
    "  }",
    "  map dnat-inbound-any {",
    "    type ifname . inet_proto . inet_service : verdict",
    "  }",
    "  chain prerouting {",
    "    type nat hook prerouting priority dstnat - 10; policy accept;",
    "  }",
    "}",
)
sets = declared_sets(SKELETON)


def test_declarations_are_read_from_the_skeleton() -> None:
    assert sets == {
        ("ip", "qubes-portfwd", "dnat-inbound"): DeclaredSet(
            ("ifname", "ipv4_addr", "inet_proto", "inet_service"), "verdict", True
        ),
        ("ip", "qubes-portfwd", "dnat-inbound-any"): DeclaredSet(
            ("ifname", "inet_proto", "inet_service"), "verdict", False
        ),
    }


def test_key_fields_are_padded_as_nft_sends_them() -> None:
    assert field_bytes("ifname", '"eth0"', False)[0] == b"eth0" + bytes(12)
    assert field_bytes("ipv4_addr", "192.0.2.0/24", True) == (
        bytes([192, 0, 2, 0]),
        bytes([192, 0, 2, 255]),
    )
    assert field_bytes("inet_proto", "udp", False)[0] == bytes([17, 0, 0, 0])
    assert field_bytes("inet_service", "7000-7001", True) == (
        bytes([0x1B, 0x58, 0, 0]),
        bytes([0x1B, 0x59, 0, 0]),
    )


@pytest.mark.parametrize(
    ("kind", "text", "interval"),
    [
        ("ipv4_addr", "192.0.2.0/24", False),  # a prefix needs an interval set
        ("inet_service", "70-71", False),
        ("ipv4_addr", "2001:db8::1", True),  # the wrong family
        ("ifname", "eth0", False),  # unquoted
        ("inet_proto", "icmp", False),
        ("mark", "1", False),
    ],
)
def test_fields_not_of_our_forms_are_refused(kind: str, text: str, interval: bool) -> None:
    with pytest.raises((ValueError, KeyError)):
        field_bytes(kind, text, interval)


def test_a_new_forward_at_the_edge_is_three_messages() -> None:
    delta = (
        "add chain ip qubes-portfwd fwd-ffffffffffff\n"
        "add rule ip qubes-portfwd fwd-ffffffffffff meta l4proto tcp dnat ip to 10.137.0.3:8080\n"
        'add element ip qubes-portfwd dnat-inbound { "eth0" . 192.0.2.0/24 . tcp . 7000-7001 '
        ": goto fwd-ffffffffffff }\n"
    )
    messages = delta_messages(delta, sets)
    assert messages is not None
    assert [m.kind for m in messages] == [NFT_MSG_NEWCHAIN, NFT_MSG_NEWRULE, 12]


@pytest.mark.parametrize(
    "line",
    [
        "add rule ip qubes-portfwd fwd-1 meta l4proto { tcp, udp } dnat ip to 10.137.0.3",
        "add rule ip qubes-portfwd fwd-1 meta l4proto tcp dnat ip to 10.137.0.3 : "
        "iifname . meta l4proto . th dport map @ports-inbound",
        "add rule ip qubes-portfwd fwd-1 meta l4proto tcp dnat ip6 to 10.137.0.3",
        'add element ip qubes-portfwd undeclared { "eth0" . tcp . 80 : goto fwd-1 }',
        'add element ip qubes-portfwd dnat-inbound-any { "eth0" . tcp . 80 : jump fwd-1 }',
        'add element ip qubes-portfwd dnat-inbound-any { "eth0" . tcp . 80-81 : goto fwd-1 }',
        "add table ip qubes-portfwd",
        "flush ruleset",
    ],
)
def test_a_line_without_a_direct_form_sends_the_change_through_nft(line: str) -> None:
    assert delta_messages(f"add chain ip qubes-portfwd fwd-1\n{line}\n", sets) is None


def test_the_kernels_answers_are_read_by_sequence_and_a_cut_answer_ends_the_list() -> None:
    def answer(sequence: int, error: int) -> bytes:
        return MESSAGE_HEADER.pack(20, NLMSG_ERROR, 0, sequence, 0) + struct.pack("=i", error)

    data = answer(2, 0) + answer(3, -2) + answer(4, 0)[:10]
    assert answers_of(data) == [(2, 0), (3, -2)]
