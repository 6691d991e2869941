"""A qube's firewall.xml: read Qubes' v2 (and v1) format, write v2 atomically.

Files are untrusted input: size-limited before parsing, DTDs and entities refused, the
element structure checked, and every property validated by the Admin API rule parser.
"""

import io
import os
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape, quoteattr

import defusedxml
import defusedxml.ElementTree

from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.rule import Action, FilterRule, Rule, UntilReboot
from qubes_portfwd.store.atomic_file import FileTooLarge, read_limited, write_atomically

from .firewall_v1 import V1_ROOT, rules_from_v1
from .rule_properties import located, rule_from_properties, rule_properties

# Bounds memory for untrusted input; ~300 bytes a forward, so room for ~50,000 rules.
MAX_FIREWALL_XML_BYTES = 16 << 20
FILE_FIELD = "firewall.xml"
V2_FORM = (
    '<firewall version="2"><rules><rule><properties><property name="NAME">VALUE</property>'
    "…</properties></rule>…</rules></firewall>"
)
# What Qubes assumes when a qube has no firewall.xml.
DEFAULT_RULES: tuple[Rule, ...] = (FilterRule(Action.ACCEPT),)

_SHOWN = 40
_SHOWN_NAMES = 5
# firewall > rules > rule > properties > property (v1: QubesFirewallRules > rule), and one
# more so that an element inside a <property> gets the structure check's own message.
MAX_DEPTH = 6
# A 16 MiB file of real rules holds well under this (a rule is ~10 elements in ~300 bytes).
MAX_ELEMENTS = 1_000_000


def parse_firewall_xml(untrusted_data: bytes) -> list[Rule]:
    """The rules of a firewall.xml document, v2 or v1; ValidationError if anything is off."""
    if len(untrusted_data) > MAX_FIREWALL_XML_BYTES:
        raise ValidationError(FILE_FIELD, f"larger than {MAX_FIREWALL_XML_BYTES} bytes")
    root = _parse_bounded(untrusted_data)
    untrusted_version = root.get("version", "1")
    if untrusted_version == "2":
        return _rules_from_v2(root)
    if untrusted_version != "1":
        raise ValidationError("version", f"{untrusted_version[:_SHOWN]!r}; expected 1 or 2")
    if root.tag != V1_ROOT:
        raise ValidationError(
            FILE_FIELD,
            f'root <{root.tag[:_SHOWN]}> without version="2"; expected {V2_FORM} '
            f"(or Qubes 3's <{V1_ROOT}>)",
        )
    return rules_from_v1(root)


def _parse_bounded(untrusted_data: bytes) -> Element:
    """The element tree, refused as soon as it nests deeper or holds more than a firewall.xml
    can (parsing a hostile tree to the end costs seconds and hundreds of MB)."""
    depth = elements = 0
    root: Element | None = None
    try:
        for event, element in defusedxml.ElementTree.iterparse(
            io.BytesIO(untrusted_data), events=("start", "end"), forbid_dtd=True
        ):
            if event == "end":
                depth -= 1
                continue
            depth, elements = depth + 1, elements + 1
            root = element if root is None else root
            if depth > MAX_DEPTH:
                raise ValidationError(FILE_FIELD, f"nested deeper than {MAX_DEPTH}: {V2_FORM}")
            if elements > MAX_ELEMENTS:
                raise ValidationError(FILE_FIELD, f"more than {MAX_ELEMENTS} elements")
    except defusedxml.DefusedXmlException as err:
        raise ValidationError(FILE_FIELD, f"DTDs and entities are not allowed ({err})") from None
    except ParseError as err:
        raise ValidationError(FILE_FIELD, f"not well-formed XML ({err})") from None
    if root is None:
        raise ValidationError(FILE_FIELD, f"no element; expected {V2_FORM}")
    return root


def _rules_from_v2(root: Element) -> list[Rule]:
    _expect(root, "firewall", {"version"})
    (rules_element,) = _children(root, "rules", exactly_one=True)
    rules = []
    for number, rule_element in enumerate(_children(rules_element, "rule"), start=1):
        (properties,) = _children(rule_element, "properties", exactly_one=True)
        pairs = []
        for prop in _children(properties, "property"):
            if len(prop):
                raise ValidationError(FILE_FIELD, "a <property> holds text, not elements")
            pairs.append((prop.get("name", ""), prop.text or ""))
        try:
            rules.append(rule_from_properties(pairs))
        except ValidationError as err:
            raise located(err, f"firewall.xml rule {number}") from None
    return rules


def _expect(element: Element, tag: str, attributes: set[str]) -> None:
    if element.tag != tag:
        raise ValidationError(
            FILE_FIELD, f"unexpected <{element.tag[:_SHOWN]}> where <{tag}> belongs: {V2_FORM}"
        )
    unexpected = set(element.attrib) - attributes
    if unexpected:
        shown = sorted(name[:_SHOWN] for name in unexpected)[:_SHOWN_NAMES]
        more = f" and {len(unexpected) - len(shown)} more" if len(unexpected) > len(shown) else ""
        raise ValidationError(FILE_FIELD, f"<{tag}> has unexpected attributes {shown}{more}")


def _children(parent: Element, tag: str, *, exactly_one: bool = False) -> list[Element]:
    """`parent`'s child elements, all `tag`; text between elements must be whitespace."""
    children = list(parent)
    if any(text and text.strip() for text in [parent.text, *(c.tail for c in children)]):
        raise ValidationError(FILE_FIELD, f"<{parent.tag}> holds text; expected {V2_FORM}")
    for child in children:
        _expect(child, tag, {"name"} if tag == "property" else set())
    if exactly_one and len(children) != 1:
        raise ValidationError(
            FILE_FIELD, f"<{parent.tag}> needs exactly one <{tag}>, has {len(children)}"
        )
    return children


def firewall_xml_bytes(rules: list[Rule] | tuple[Rule, ...], now: float, boot_id: str) -> bytes:
    """The v2 document, byte for byte as Qubes writes it, expired rules left out.

    Raises ValidationError for a rule that would not read back equal (e.g. built by hand
    from unchecked values), or for `expire=boot` not yet bound to a boot id.
    """
    # lxml, as Qubes calls it, writes no XML declaration for UTF-8 and indents by two spaces.
    rule_lines = []
    for number, rule in enumerate(rules, start=1):
        if _drops_on_save(rule, now, boot_id):
            continue
        properties = rule_properties(rule)
        _check_storable(rule, properties, number)
        rule_lines += ["    <rule>", "      <properties>"]
        rule_lines += [
            f"        <property name={quoteattr(name)}>{escape(value)}</property>"
            for name, value in properties
        ]
        rule_lines += ["      </properties>", "    </rule>"]
    rules_lines = ["  <rules>", *rule_lines, "  </rules>"] if rule_lines else ["  <rules/>"]
    lines = ['<firewall version="2">', *rules_lines, "</firewall>"]
    return ("\n".join(lines) + "\n").encode()


def _drops_on_save(rule: Rule, now: float, boot_id: str) -> bool:
    # Binding `boot` here would hide a caller that forgot to; dropping it would lose the rule.
    if isinstance(rule.expire, UntilReboot) and rule.expire.boot_id is None:
        raise ValidationError(
            "expire", "boot must be bound to the host's boot id (boot:ID) before it is saved"
        )
    return rule.expire is not None and rule.expire.expired(now, boot_id)


def _check_storable(rule: Rule, properties: list[tuple[str, str]], number: int) -> None:
    try:
        stored = rule_from_properties(properties)
    except ValidationError as err:
        raise located(err, f"rule {number} to save") from None
    if stored != rule:
        raise ValidationError("rule", f"rule {number} to save would read back as {stored}")


def load_firewall(path: str | os.PathLike[str]) -> list[Rule]:
    """A qube's rules from its firewall.xml; Qubes' default (accept all) if there is none."""
    try:
        untrusted_data = read_limited(Path(path), MAX_FIREWALL_XML_BYTES)
    except FileNotFoundError:
        return list(DEFAULT_RULES)
    except FileTooLarge:
        raise ValidationError(FILE_FIELD, f"larger than {MAX_FIREWALL_XML_BYTES} bytes") from None
    return parse_firewall_xml(untrusted_data)


def save_firewall(
    path: str | os.PathLike[str], rules: list[Rule] | tuple[Rule, ...], now: float, boot_id: str
) -> None:
    """Write the rules as v2, atomically; on any error the old file is left untouched.

    A document the loader would refuse is refused here, before anything is written; a
    failed write (full disk, read-only store) raises FirewallWriteError.
    """
    data = firewall_xml_bytes(rules, now, boot_id)
    if len(data) > MAX_FIREWALL_XML_BYTES:
        raise ValidationError(
            FILE_FIELD,
            f"{len(rules)} rules make {len(data)} bytes, over the {MAX_FIREWALL_XML_BYTES} "
            "bytes a firewall.xml may have",
        )
    try:
        write_atomically(Path(path), data)
    except OSError as err:
        raise FirewallWriteError(Path(path), err) from None


class FirewallWriteError(ValidationError, OSError):
    """The rules were valid but the file could not be written; the old file is unchanged.

    Also a ValidationError, so the Admin API answers it with this text rather than as an
    internal error; `errno` is the OS error's.
    """

    def __init__(self, path: Path, err: OSError) -> None:
        reason = err.strerror or type(err).__name__
        super().__init__(
            FILE_FIELD, f"could not write {path} ({reason}); the rules stay as they were"
        )
        self.errno = err.errno
