"""The Qubes < 4.0 firewall.xml (v1), translated to rules as Qubes' `load_v1` does.

v1 is a policy plus exceptions: `<QubesFirewallRules policy="allow|deny" dns=… icmp=…>`
with one `<rule address= netmask= proto= port= toport= expire=>` per exception.
"""

import ipaddress
from xml.etree.ElementTree import Element

from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.rule import Rule

from .rule_properties import located, rule_from_properties

V1_ROOT = "QubesFirewallRules"
V1_RULE = "rule"
_V1_FORM = f'<{V1_ROOT} policy="allow|deny"><{V1_RULE} address=… port=…/>…'


def rules_from_v1(root: Element) -> list[Rule]:
    """Qubes' translation: DNS and ICMP rules first, then the exceptions, then the policy."""
    untrusted_policy = root.get("policy")
    if untrusted_policy not in ("allow", "deny"):
        raise ValidationError("policy", "expected allow or deny (firewall.xml version 1)")
    policy = untrusted_policy
    rules = [
        _rule([("action", _action(root, "dns", policy)), ("specialtarget", "dns")], "dns"),
        _rule([("action", _action(root, "icmp", policy)), ("proto", "icmp")], "icmp"),
    ]
    exception_action = "drop" if policy == "allow" else "accept"
    for number, element in enumerate(root, start=1):
        if element.tag != V1_RULE:
            raise ValidationError(
                "firewall.xml", f"unexpected <{element.tag[:40]}>; expected {_V1_FORM}"
            )
        if len(element):
            raise ValidationError("firewall.xml", f"<{V1_RULE}> {number} has child elements")
        rules.append(_rule(_exception_properties(element, exception_action), f"rule {number}"))
    if policy == "allow":
        rules.append(_rule([("action", "accept")], "policy"))
    return rules


def _action(root: Element, untrusted_key: str, policy: str) -> str:
    # Qubes reads anything but "allow" as deny.
    return "accept" if root.get(untrusted_key, policy) == "allow" else "drop"


def _exception_properties(element: Element, action: str) -> list[tuple[str, str]]:
    properties = [("action", action)]
    untrusted_address = element.get("address")
    if untrusted_address:
        properties.append(("dsthost", _dsthost(untrusted_address, element.get("netmask"))))
    untrusted_proto = element.get("proto")
    untrusted_port, untrusted_toport = element.get("port"), element.get("toport")
    dstports = None
    if untrusted_port and untrusted_toport:
        dstports = f"{untrusted_port}-{untrusted_toport}"
    elif untrusted_port:
        dstports = untrusted_port
    # Qubes defaults to TCP before it maps "any" to no protocol, so "any" with a port fails
    # (dstports without tcp/udp), in Qubes as here.
    if dstports and not untrusted_proto:
        untrusted_proto = "tcp"
    if untrusted_proto == "any":
        untrusted_proto = None
    if untrusted_proto:
        properties.append(("proto", untrusted_proto))
    if dstports:
        properties.append(("dstports", dstports))
    untrusted_expire = element.get("expire")
    if untrusted_expire:
        properties.append(("expire", untrusted_expire))
    return properties


def _dsthost(untrusted_address: str, untrusted_netmask: str | None) -> str:
    """Qubes' DstHost(address, netmask): the netmask applies to a bare IP address only."""
    if "/" in untrusted_address:
        return untrusted_address
    try:
        address = ipaddress.ip_address(untrusted_address)
    except ValueError:
        return untrusted_address  # a DNS name; the rule parser checks it
    netmask = 32
    if untrusted_netmask is not None:
        if not (
            untrusted_netmask.isascii()
            and untrusted_netmask.isdigit()
            and len(untrusted_netmask) <= 3
        ):
            raise ValidationError("netmask", f"{untrusted_netmask[:40]!r} is not a number 0-128")
        netmask = int(untrusted_netmask)
    # Qubes writes `prefixlen or 32|128`: netmask 0 becomes a single host. Kept as Qubes has it,
    # so a v1 file means here what it means to Qubes.
    prefix = netmask or address.max_prefixlen
    return f"{untrusted_address}/{prefix}"


def _rule(properties: list[tuple[str, str]], where: str) -> Rule:
    try:
        return rule_from_properties(properties)
    except ValidationError as err:
        raise located(err, f"firewall.xml v1 {where}") from None
