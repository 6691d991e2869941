"""The Admin API text of a rule: parse (untrusted) and format, in Qubes' key order.

Qubes sorts rule options by (order, name) and moves `comment` last, which gives
`action expire dst4|dst6|dsthost proto specialtarget dstports icmptype comment`;
a rule Qubes wrote therefore reads back byte-identical.
"""

import functools
import string
import sys

from .errors import ValidationError
from .hosts import Network, is_qube_name, parse_cidr, parse_dsthost
from .ports import parse_port_range
from .rule import (
    Action,
    ExpireAt,
    Expiry,
    FilterRule,
    ForwardRule,
    ForwardType,
    Rule,
    Source,
    UntilReboot,
)

VALUE_CHARS = frozenset(string.ascii_letters + string.digits + ":;,./-_[]")
COMMENT_CHARS = VALUE_CHARS | {" "}
VALUE_FORM = "letters, digits and :;,./-_[] only"

FILTER_KEYS = ("action", "proto", "dsthost", "dstports", "icmptype", "specialtarget", "expire")
FORWARD_KEYS = (
    "action",
    "forwardtype",
    "proto",
    "srcports",
    "dstports",
    "srchost",
    "via",
    "follow",
    "expire",
)
DSTHOST_ALIASES = ("dst4", "dst6", "dstname", "dsthost")
ALL_KEYS = frozenset(FILTER_KEYS + FORWARD_KEYS + DSTHOST_ALIASES + ("comment",))
MAX_RULE_LENGTH = 4096


def split_options(
    untrusted_line: str, known_keys: frozenset[str] = ALL_KEYS
) -> tuple[dict[str, str], str | None]:
    """Split `key=value …[comment=free text]` into checked raw values (no meaning yet)."""
    if len(untrusted_line) > MAX_RULE_LENGTH:
        raise ValidationError("rule", f"longer than {MAX_RULE_LENGTH} characters")
    untrusted_options, has_comment, untrusted_comment = untrusted_line.partition("comment=")
    comment = None
    if has_comment:
        if not set(untrusted_comment) <= COMMENT_CHARS:
            raise ValidationError("comment", f"use {VALUE_FORM} and spaces")
        # Qubes drops an empty comment (and its XML loader would read one back as "None").
        comment = untrusted_comment or None
    options: dict[str, str] = {}
    for untrusted_option in untrusted_options.split(" "):
        if not untrusted_option:
            continue
        key, has_value, untrusted_value = untrusted_option.partition("=")
        if not has_value:
            raise ValidationError("rule", f"{untrusted_option!r} is not in the form key=value")
        if key not in known_keys:
            known = ", ".join(sorted(known_keys))
            if key and set(key) <= VALUE_CHARS:
                raise ValidationError(key, f"unknown option; known: {known}")
            # No name, or one not safe to show: the error still says which part is wrong.
            raise ValidationError("rule", f"an option without a known name; known: {known}")
        canonical = "dsthost" if key in DSTHOST_ALIASES else key
        if canonical in options:
            raise ValidationError(key, "given twice")
        if not untrusted_value or not set(untrusted_value) <= VALUE_CHARS:
            raise ValidationError(key, f"empty or bad value; use {VALUE_FORM}")
        options[canonical] = untrusted_value
        if key in ("dst4", "dst6"):
            options["_dsttype"] = key
    return options, comment


def parse_rule(untrusted_line: str) -> Rule:
    """One Admin API line to a validated rule; every error names its field."""
    options, comment = split_options(untrusted_line.rstrip("\n"))
    untrusted_action = options.get("action")
    if untrusted_action is None:
        raise ValidationError("action", "required; expected accept, drop or forward")
    if untrusted_action not in tuple(Action):
        raise ValidationError("action", f"{untrusted_action!r}; expected accept, drop or forward")
    if untrusted_action == Action.FORWARD:
        return _parse_forward(options, comment)
    return _parse_filter(Action(untrusted_action), options, comment)


def _refuse_keys(options: dict[str, str], keys: tuple[str, ...], why: str) -> None:
    for key in keys:
        if key in options:
            raise ValidationError(key, why)


def _parse_filter(action: Action, options: dict[str, str], comment: str | None) -> FilterRule:
    _refuse_keys(
        options, ("forwardtype", "srcports", "srchost", "via", "follow"), "only for action=forward"
    )
    proto = options.get("proto")
    if proto is not None and proto not in ("tcp", "udp", "icmp"):
        raise ValidationError("proto", f"{proto!r}; expected tcp, udp or icmp")
    dsthost = None
    if "dsthost" in options:
        written_as = options.get("_dsttype")
        dsthost = parse_dsthost(written_as or "dsthost", options["dsthost"])
        if written_as is not None and written_as != dsthost.type:
            family = written_as[-1]
            raise ValidationError(written_as, f"expected an IPv{family} address or network A/N")
    dstports = None
    if "dstports" in options:
        if proto not in ("tcp", "udp"):
            raise ValidationError("dstports", "only with proto=tcp or proto=udp")
        dstports = parse_port_range("dstports", options["dstports"], lowest=0)
    icmptype = None
    if "icmptype" in options:
        if proto != "icmp":
            raise ValidationError("icmptype", "only with proto=icmp")
        icmptype = _parse_int("icmptype", options["icmptype"], 0, 255, "a number 0-255")
    specialtarget = options.get("specialtarget")
    if specialtarget is not None and specialtarget != "dns":
        raise ValidationError("specialtarget", f"{specialtarget!r}; expected dns")
    expire = None
    if "expire" in options:
        expire = ExpireAt(_parse_timestamp(options["expire"]))
    return FilterRule(action, proto, dsthost, dstports, icmptype, specialtarget, expire, comment)


def _parse_forward(options: dict[str, str], comment: str | None) -> ForwardRule:
    for key in ("dsthost", "icmptype", "specialtarget"):
        if key in options:
            shown = options.get("_dsttype", key) if key == "dsthost" else key
            raise ValidationError(
                shown, "not allowed on action=forward; the destination is the qube itself"
            )
    untrusted_type = options.get("forwardtype")
    if untrusted_type not in tuple(ForwardType):
        raise ValidationError(
            "forwardtype",
            ("required" if untrusted_type is None else repr(untrusted_type))
            + "; expected external or internal",
        )
    forwardtype = ForwardType(untrusted_type)
    proto = options.get("proto")
    if proto is not None and proto not in ("tcp", "udp"):
        raise ValidationError("proto", f"{proto!r}; a forward takes tcp or udp (omit for both)")
    if "srcports" not in options:
        raise ValidationError("srcports", "required: the outside port N or range N-M")
    srcports = parse_port_range("srcports", options["srcports"])
    dstports = srcports
    if "dstports" in options and options["dstports"] != options["srcports"]:
        dstports = parse_port_range("dstports", options["dstports"])
        if len(dstports) != len(srcports):
            raise ValidationError(
                "dstports",
                f"{dstports.short} has {len(dstports)} ports but srcports {srcports.short} "
                f"has {len(srcports)}; ranges must have the same length",
            )
    if "srchost" not in options:
        raise ValidationError(
            "srchost",
            "required: who may connect (write 0.0.0.0/0 or ::/0 to allow everyone)"
            if forwardtype == ForwardType.EXTERNAL
            else "required: the qubes that may connect, comma-separated",
        )
    srchost = _parse_sources(forwardtype, options["srchost"])
    via = None
    follow = False
    if "via" in options:
        via = _path(options["via"])
        for name in via:
            if not is_qube_name(name):
                raise ValidationError("via", f"{name!r} is not a qube name; expected NETVM,...")
    if "follow" in options:
        if options["follow"] != "yes":
            raise ValidationError("follow", f"{options['follow']!r}; expected yes (or omit it)")
        if via is not None:
            raise ValidationError("follow", "a forward either follows netvm changes or has via=")
        follow = True
    expire = _parse_forward_expire(options["expire"]) if "expire" in options else None
    return ForwardRule(
        forwardtype, srcports, dstports, srchost, proto, via, follow, expire, comment
    )


def _parse_sources(forwardtype: ForwardType, untrusted_value: str) -> tuple[Source, ...]:
    sources: list[Source] = []
    for item in untrusted_value.split(","):
        if forwardtype == ForwardType.INTERNAL:
            if not is_qube_name(item):
                raise ValidationError(
                    "srchost",
                    f"{item!r} is not a qube name; an internal forward names the qubes "
                    "that may connect (addresses are for external forwards)",
                )
            sources.append(item)
            continue
        if is_qube_name(item) and not item.replace(".", "").isdigit():
            raise ValidationError(
                "srchost",
                f"{item!r} is a qube name; an external forward takes networks such as "
                "192.0.2.0/24 (qube names are for internal forwards)",
            )
        network = _source_network(item)
        if sources and network.version != sources[0].version:  # type: ignore[union-attr]
            raise ValidationError(
                "srchost", "mixes IPv4 and IPv6; write one forward for each family"
            )
        sources.append(network)
    if len(set(sources)) != len(sources):
        raise ValidationError("srchost", "lists the same source twice")
    return tuple(sources)


# Thousands of forwards name the same few paths and source networks: parsed once, they share
# one value (a /24 as a network object costs ~150 bytes per rule otherwise).
@functools.lru_cache(maxsize=256)
def _path(untrusted_via: str) -> tuple[str, ...]:
    return tuple(sys.intern(name) for name in untrusted_via.split(","))


@functools.lru_cache(maxsize=256)
def _source_network(untrusted_source: str) -> Network:
    return parse_cidr("srchost", untrusted_source)


def _parse_int(field: str, untrusted_value: str, low: int, high: int, form: str) -> int:
    if not (untrusted_value.isdigit() and untrusted_value.isascii() and len(untrusted_value) <= 15):
        raise ValidationError(field, f"{untrusted_value!r} is not {form}")
    value = int(untrusted_value)
    if not low <= value <= high:
        raise ValidationError(field, f"{value} is out of range; expected {form}")
    return value


def _parse_timestamp(untrusted_value: str) -> int:
    return _parse_int("expire", untrusted_value, 0, 2**40, "a UNIX time in seconds")


def _parse_forward_expire(untrusted_value: str) -> Expiry:
    if untrusted_value == "boot":
        return UntilReboot(None)
    if untrusted_value.startswith("boot:"):
        boot_id = untrusted_value[len("boot:") :]
        if not boot_id or not set(boot_id) <= set(string.hexdigits + "-"):
            raise ValidationError("expire", "boot:ID takes the host's boot id (hex and -)")
        return UntilReboot(boot_id)
    return ExpireAt(_parse_timestamp(untrusted_value))


def format_rule(rule: Rule) -> str:
    """The Admin API line of a rule (what `admin.vm.firewall.Get` answers)."""
    if isinstance(rule, ForwardRule):
        parts = [f"action={rule.action}", f"forwardtype={rule.forwardtype}"]
        if rule.proto:
            parts.append(f"proto={rule.proto}")
        parts += [
            f"srcports={rule.srcports.text}",
            f"dstports={rule.dstports.text}",
            "srchost=" + ",".join(str(s) for s in rule.srchost),
        ]
        if rule.via is not None:
            parts.append("via=" + ",".join(rule.via))
        if rule.follow:
            parts.append("follow=yes")
        if rule.expire is not None:
            parts.append(f"expire={rule.expire.text}")
    else:
        parts = [f"action={rule.action}"]
        if rule.expire is not None:
            parts.append(f"expire={rule.expire.text}")
        parts += filter_match_options(rule)
    if rule.comment is not None:
        parts.append(f"comment={rule.comment}")
    return " ".join(parts)


def filter_match_options(rule: FilterRule) -> list[str]:
    """The options that decide what an outbound rule matches, in Qubes' order."""
    parts = []
    if rule.dsthost is not None:
        parts.append(f"{rule.dsthost.type}={rule.dsthost.text}")
    if rule.proto:
        parts.append(f"proto={rule.proto}")
    if rule.specialtarget:
        parts.append(f"specialtarget={rule.specialtarget}")
    if rule.dstports is not None:
        parts.append(f"dstports={rule.dstports.text}")
    if rule.icmptype is not None:
        parts.append(f"icmptype={rule.icmptype}")
    return parts


def format_qdb_rule(rule: FilterRule) -> str:
    """The QubesDB form the qube's firewall agent reads: no expire, no comment."""
    return " ".join([f"action={rule.action}", *filter_match_options(rule)])


def parse_rules(untrusted_text: str) -> list[Rule]:
    """A whole `admin.vm.firewall.Set` payload, all or nothing; errors carry the line."""
    rules = []
    for line_no, untrusted_line in enumerate(untrusted_text.splitlines(), start=1):
        if not untrusted_line.strip():
            continue
        try:
            rules.append(parse_rule(untrusted_line))
        except ValidationError as err:
            raise err.at_line(line_no) from None
    return rules
