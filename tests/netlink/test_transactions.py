"""Reading the committer of each nftables transaction from a batch of notifications."""

import struct

from qubes_portfwd.netlink.transactions import (
    GETGEN,
    NEWGEN,
    NFT_MSG_DELRULE,
    NFT_MSG_DELTABLE,
    NFT_MSG_NEWCHAIN,
    NFT_MSG_NEWRULE,
    NFT_MSG_NEWSETELEM,
    NFTA_GEN_PROC_PID,
    UNREADABLE,
    ObjectChange,
    TransactionEnd,
    committers_of,
    generation_of,
    generation_request,
    generations_between,
    read_notifications,
)

NEWRULE = (10 << 8) | 6
NFTA_GEN_ID = 1
NFTA_GEN_PROC_NAME = 3


def attribute(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def message(kind: int, attributes: bytes = b"") -> bytes:
    body = b"\x02\x00\x00\x00" + attributes  # nfgenmsg: family, version, resource id
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def newgen(pid: int, name: bytes = b"nft\0") -> bytes:
    return message(
        NEWGEN,
        attribute(NFTA_GEN_ID, struct.pack(">I", 7))
        + attribute(NFTA_GEN_PROC_PID, struct.pack(">I", pid))
        + attribute(NFTA_GEN_PROC_NAME, name),
    )


def test_each_transaction_is_named_by_its_ending_message() -> None:
    batch = message(NEWRULE) + message(NEWRULE) + newgen(4242) + message(NEWRULE) + newgen(99)
    assert committers_of(batch) == (4242, 99)


def test_messages_without_their_end_name_nobody_yet() -> None:
    assert committers_of(message(NEWRULE) + message(NEWRULE)) == ()
    assert committers_of(b"") == ()


def test_the_committer_is_found_after_attributes_of_any_length() -> None:
    assert committers_of(newgen(123456, b"a-longer-task-name\0")) == (123456,)


def test_an_end_without_a_committer_or_a_malformed_message_is_unknown() -> None:
    assert committers_of(message(NEWGEN, attribute(NFTA_GEN_ID, b"\0\0\0\1"))) == (None,)
    whole = newgen(5)
    assert committers_of(whole[:-3]) == (None,)  # cut short
    assert committers_of(whole + b"\x01\x02") == (5, None)  # a header that cannot fit
    too_long = struct.pack("=IHHII", 4096, NEWGEN, 0, 0, 0)
    assert committers_of(too_long) == (None,)
    broken_attribute = message(NEWGEN, struct.pack("=HH", 200, NFTA_GEN_PROC_PID) + b"\0" * 4)
    assert committers_of(broken_attribute) == (None,)


def test_the_generation_request_is_a_bare_getgen() -> None:
    request = generation_request(7)
    length, kind, flags, sequence, port = struct.unpack_from("=IHHII", request)
    assert (length, kind, flags, sequence, port) == (len(request), GETGEN, 1, 7, 0)
    assert request[16:] == b"\0\0\0\0"


def test_the_generation_is_read_from_the_reply() -> None:
    assert generation_of(newgen(4242)) == 7
    trailing_error = struct.pack("=IHHII", 20, 2, 0, 0, 0) + b"\0" * 4
    assert generation_of(newgen(1) + trailing_error) == 7


def test_a_reply_that_is_not_a_generation_gives_none() -> None:
    assert generation_of(b"") is None
    assert generation_of(message(NEWRULE, attribute(NFTA_GEN_ID, b"\0\0\0\1"))) is None
    assert generation_of(message(NEWGEN)) is None  # no generation attribute
    assert generation_of(newgen(1)[:-8]) is None  # cut short: longer than what came


def test_transactions_between_generations_count_across_the_wrap() -> None:
    assert generations_between(5, 5) == 0
    assert generations_between(5, 7) == 2
    assert generations_between(2**32 - 1, 1) == 2


def string(text: str) -> bytes:
    return text.encode() + b"\0"


def named(kind: int, table: str, name_attribute: int, name: str, family: int = 2) -> bytes:
    attributes = attribute(1, string(table))
    if name_attribute != 1:
        attributes += attribute(name_attribute, string(name))
    body = bytes([family, 0, 0, 0]) + attributes
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def test_each_message_names_its_table_and_object() -> None:
    nft = 10 << 8
    batch = (
        named(nft | NFT_MSG_DELTABLE, "qubes", 1, "qubes")
        + named(nft | NFT_MSG_NEWCHAIN, "qubes", 3, "custom-input", family=10)
        + named(nft | NFT_MSG_DELRULE, "qubes", 2, "custom-forward")
        + named(nft | NFT_MSG_NEWSETELEM, "qubes-portfwd", 2, "dnat-any")
        + newgen(77)
    )
    assert read_notifications(batch) == [
        ObjectChange(NFT_MSG_DELTABLE, 2, "qubes", "qubes"),
        ObjectChange(NFT_MSG_NEWCHAIN, 10, "qubes", "custom-input"),
        ObjectChange(NFT_MSG_DELRULE, 2, "qubes", "custom-forward"),
        ObjectChange(NFT_MSG_NEWSETELEM, 2, "qubes-portfwd", "dnat-any"),
        TransactionEnd(77),
    ]


def test_what_cannot_be_named_reads_as_unnamed() -> None:
    other_subsystem = named((11 << 8) | NFT_MSG_NEWRULE, "qubes", 2, "custom-input")
    unknown_type = named((10 << 8) | 99, "qubes", 2, "custom-input")
    no_name = message(NEWRULE, attribute(1, string("qubes")))
    assert read_notifications(other_subsystem + unknown_type + no_name) == [
        ObjectChange(NFT_MSG_NEWRULE, 2, None, None),
        ObjectChange(99, 2, None, None),
        ObjectChange(NFT_MSG_NEWRULE, 2, "qubes", None),
    ]
    assert read_notifications(newgen(5)[:-3]) == [UNREADABLE, TransactionEnd(None)]
