"""An in-place change (`nft/delta.py`'s text) as one nf_tables batch, for the agent to commit
over netlink without libnftables (pure).

libnftables fetches its cache of the ruleset before every transaction: ~3.3 ms for one
element with 10 forwards, ~5 ms with 835, where the kernel commits the same batch in ~0.2
and ~0.9 ms. The change's lines have a few fixed forms; each becomes its message. Anything
else, a rule not of the forms our forwards' chains hold or an element not of its set's
declared types, answers None: the caller loads the text through libnftables as before.
"""

import ipaddress
import re
from collections.abc import Mapping

from ..nft.declared_sets import DeclaredSet, SetPath
from .nft_encode import (
    FAMILIES,
    NFT_MSG_DELCHAIN,
    NFT_MSG_DELRULE,
    NFT_MSG_DELSETELEM,
    NFT_MSG_NEWCHAIN,
    NFT_MSG_NEWRULE,
    NFT_MSG_NEWSETELEM,
    NLM_F_APPEND,
    NLM_F_CREATE,
    PROTOCOLS,
    Message,
    ct_label_set,
    data_value,
    dnat_to,
    field_bytes,
    goto,
    l4proto_is,
    nested,
    service_value,
    string,
)

MAX_BATCH_BYTES = 1 << 16  # larger changes go through libnftables, off the event loop
_RULE = re.compile(r"meta l4proto (tcp|udp)(?: ct label set (\d+))? dnat (ip|ip6) to (\S+)")
_NAT_FAMILY = {"ip": 2, "ip6": 10}  # NFPROTO_IPV4, NFPROTO_IPV6


def delta_messages(delta: str, sets: Mapping[SetPath, DeclaredSet]) -> list[Message] | None:
    """The messages of the batch committing `delta` (`nft_encode.batch`), or None when a line
    has no direct form here or the change is large."""
    messages = []
    size = 0
    try:
        for line in delta.splitlines():
            message = _message(line, sets)
            if message is None:
                return None
            size += len(message.attributes)
            messages.append(message)
    except (ValueError, KeyError):
        return None
    return messages if messages and size <= MAX_BATCH_BYTES else None


def _message(line: str, sets: Mapping[SetPath, DeclaredSet]) -> Message | None:
    words = line.split(" ", 5)
    if len(words) < 5 or words[2] not in FAMILIES:
        return None
    verb, noun, family, table, name = words[:5]
    rest = words[5] if len(words) == 6 else ""
    where = string(1, table)
    if noun == "chain" and not rest:
        if verb == "add":
            return Message(NFT_MSG_NEWCHAIN, NLM_F_CREATE, family, where + string(3, name))
        if verb == "delete":
            return Message(NFT_MSG_DELCHAIN, 0, family, where + string(3, name))
        if verb == "flush":  # every rule of the chain: a rule deletion naming no rule
            return Message(NFT_MSG_DELRULE, 0, family, where + string(2, name))
        return None
    if noun == "rule" and verb == "add":
        expressions = _rule_expressions(family, rest)
        if expressions is None:
            return None
        body = where + string(2, name) + nested(4, *expressions)
        return Message(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, family, body)
    if noun == "element" and verb in ("add", "delete"):
        declared = sets.get((family, table, name))
        if declared is None or not (rest.startswith("{ ") and rest.endswith(" }")):
            return None
        items = [item.strip() for item in rest[2:-2].split(",")]
        adding = verb == "add"
        elements = [_element(item, declared, adding) for item in items]
        body = where + string(2, name) + nested(3, *elements)
        if adding:
            return Message(NFT_MSG_NEWSETELEM, NLM_F_CREATE, family, body)
        return Message(NFT_MSG_DELSETELEM, 0, family, body)
    return None


def _element(item: str, declared: DeclaredSet, with_value: bool) -> bytes:
    """NFTA_LIST_ELEM: the key (and key end, for an interval set), a map's value when adding."""
    key_text, _, value_text = item.partition(" : ")
    fields = key_text.split(" . ")
    if len(fields) != len(declared.key_types) or (
        with_value and bool(value_text) != bool(declared.value_type)
    ):
        raise ValueError(f"element {item!r} does not fit its set")
    starts, ends = [], []
    for kind, text in zip(declared.key_types, fields, strict=True):
        start, end = field_bytes(kind, text.strip(), declared.interval)
        starts.append(start)
        ends.append(end)
    parts = [data_value(1, b"".join(starts))]  # NFTA_SET_ELEM_KEY
    if declared.interval:
        parts.append(data_value(10, b"".join(ends)))  # NFTA_SET_ELEM_KEY_END
    if with_value and declared.value_type is not None:
        parts.append(_value(declared.value_type, value_text.strip()))
    return nested(1, *parts)


def _value(kind: str, text: str) -> bytes:
    """NFTA_SET_ELEM_DATA."""
    if kind == "verdict":
        verb, _, chain = text.partition(" ")
        if verb != "goto" or not chain or " " in chain:
            raise ValueError(f"verdict {text!r}")
        return goto(2, chain)
    if kind == "inet_service":
        return data_value(2, service_value(text))
    raise ValueError(f"no direct form for a value of type {kind}")


def _rule_expressions(family: str, rule: str) -> list[bytes] | None:
    """A forward's own DNAT rule (`nft/forwards.py`, `nft/hairpin.py`) with one protocol and
    no port map; None for any other."""
    found = _RULE.fullmatch(rule)
    if found is None:
        return None
    protocol, label, nat_family, target = found.groups()
    if nat_family != family:
        return None
    address_text, port = target, None
    if target.startswith("["):  # `[ADDRESS6]:PORT`
        address_text, _, port_text = target[1:].partition("]:")
        port = int(port_text)
    elif family == "ip" and ":" in target:
        address_text, _, port_text = target.partition(":")
        port = int(port_text)
    address = ipaddress.ip_address(address_text)
    if address.version != (4 if family == "ip" else 6):
        return None
    expressions = l4proto_is(PROTOCOLS[protocol])
    if label is not None:
        expressions += ct_label_set(int(label))
    return [*expressions, *dnat_to(_NAT_FAMILY[family], address.packed, port)]
