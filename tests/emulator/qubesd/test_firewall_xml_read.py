"""Reading firewall.xml: Qubes' v2 and v1 files, and refusal of anything malformed or hostile."""

import pytest

from qubes_lab.qubesd.firewall_xml import MAX_FIREWALL_XML_BYTES, parse_firewall_xml
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.rule_text import format_rule, parse_rules

# As Qubes' Firewall.save() writes it (lxml, pretty_print, no XML declaration for UTF-8).
QUBES_V2 = b"""<firewall version="2">
  <rules>
    <rule>
      <properties>
        <property name="action">accept</property>
        <property name="comment">intranet web, see [1]</property>
        <property name="dsthost">10.1.2.3/24</property>
        <property name="proto">tcp</property>
        <property name="dstports">443</property>
      </properties>
    </rule>
    <rule>
      <properties>
        <property name="action">accept</property>
        <property name="expire">1700000000</property>
        <property name="dsthost">qubes-os.org</property>
      </properties>
    </rule>
    <rule>
      <properties>
        <property name="action">accept</property>
        <property name="proto">udp</property>
        <property name="dstports">5000-5010</property>
      </properties>
    </rule>
    <rule>
      <properties>
        <property name="action">accept</property>
        <property name="specialtarget">dns</property>
      </properties>
    </rule>
    <rule>
      <properties>
        <property name="action">accept</property>
        <property name="proto">icmp</property>
        <property name="icmptype">8</property>
      </properties>
    </rule>
    <rule>
      <properties>
        <property name="action">drop</property>
      </properties>
    </rule>
  </rules>
</firewall>
"""
QUBES_V2_RULES = parse_rules(
    """action=accept dst4=10.1.2.3/24 proto=tcp dstports=443-443 comment=intranet web, see [1]
action=accept expire=1700000000 dsthost=qubes-os.org
action=accept proto=udp dstports=5000-5010
action=accept specialtarget=dns
action=accept proto=icmp icmptype=8
action=drop"""
)


def test_qubes_v2_file() -> None:
    assert parse_firewall_xml(QUBES_V2) == QUBES_V2_RULES


def test_v2_forward_rules_and_empty_list() -> None:
    document = b"""<?xml version='1.0' encoding='UTF-8'?>
<firewall version="2"><rules><rule><properties>
  <property name="action">forward</property><property name="forwardtype">external</property>
  <property name="proto">tcp</property><property name="srcports">80</property>
  <property name="dstports">8080</property><property name="srchost">0.0.0.0/0</property>
  <property name="via">sys-firewall,sys-net</property>
  <property name="expire">boot:1f2e-3d</property><property name="comment">web</property>
</properties></rule></rules></firewall>"""
    (rule,) = parse_firewall_xml(document)
    assert format_rule(rule) == (
        "action=forward forwardtype=external proto=tcp srcports=80-80 dstports=8080-8080 "
        "srchost=0.0.0.0/0 via=sys-firewall,sys-net expire=boot:1f2e-3d comment=web"
    )
    assert parse_firewall_xml(b'<firewall version="2"><rules/></firewall>') == []


# Qubes 3 (v1): a policy, DNS and ICMP switches, and exceptions to the policy.
QUBES_V1_DENY = b"""<QubesFirewallRules dns="allow" icmp="deny" policy="deny" yumProxy="allow">
  <rule address="10.0.0.0" netmask="8" proto="tcp" port="80" toport="90"/>
  <rule address="qubes-os.org" port="443"/>
  <rule address="192.168.1.1" proto="udp" port="53" expire="1700000000"/>
  <rule address="2001:db8::" netmask="32" proto="any"/>
  <rule address="10.2.0.0/16" netmask="8" proto="icmp"/>
</QubesFirewallRules>
"""


def test_v1_deny_policy_lists_accepts_after_dns_and_icmp() -> None:
    assert [format_rule(r) for r in parse_firewall_xml(QUBES_V1_DENY)] == [
        "action=accept specialtarget=dns",
        "action=drop proto=icmp",
        "action=accept dst4=10.0.0.0/8 proto=tcp dstports=80-90",
        "action=accept dsthost=qubes-os.org proto=tcp dstports=443-443",  # tcp by default
        "action=accept expire=1700000000 dst4=192.168.1.1/32 proto=udp dstports=53-53",
        "action=accept dst6=2001:db8::/32",  # proto "any" is no protocol
        "action=accept dst4=10.2.0.0/16 proto=icmp",  # a written prefix wins over netmask
    ]


def test_v1_allow_policy_lists_drops_then_accepts_the_rest() -> None:
    document = b"""<QubesFirewallRules policy="allow" dns="deny">
  <rule address="10.9.9.9" proto="tcp" port="22"/>
  <rule address="0.0.0.0" netmask="0" proto="udp"/>
</QubesFirewallRules>"""
    assert [format_rule(r) for r in parse_firewall_xml(document)] == [
        "action=drop specialtarget=dns",
        "action=accept proto=icmp",  # an absent switch follows the policy
        "action=drop dst4=10.9.9.9/32 proto=tcp dstports=22-22",
        # Qubes' load_v1 reads netmask 0 as "no netmask" and makes it a single host.
        "action=drop dst4=0.0.0.0/32 proto=udp",
        "action=accept",
    ]


def test_v1_without_exceptions() -> None:
    assert [format_rule(r) for r in parse_firewall_xml(b'<QubesFirewallRules policy="deny"/>')] == [
        "action=drop specialtarget=dns",
        "action=drop proto=icmp",
    ]


def _refusal(document: bytes) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        parse_firewall_xml(document)
    return caught.value


def _v2(*properties: str) -> bytes:
    inner = "".join(properties)
    rule = f"<rule><properties>{inner}</properties></rule>"
    return f'<firewall version="2"><rules>{rule}</rules></firewall>'.encode()


def _prop(name: str, value: str) -> str:
    return f'<property name="{name}">{value}</property>'


ACCEPT = _prop("action", "accept")


@pytest.mark.parametrize(
    ("document", "field", "says"),
    [
        (_v2(ACCEPT, _prop("proto", "tcp"), _prop("dstports", "70000")), "dstports", "rule 1"),
        (_v2(_prop("proto", "tcp")), "action", "required"),
        (_v2(ACCEPT, _prop("proto", "gre")), "proto", "expected tcp, udp or icmp"),
        (_v2(ACCEPT, _prop("colour", "red")), "property", "'colour' is not a rule property"),
        (_v2(ACCEPT, _prop("dst4", "10.0.0.1")), "property", "'dst4' is not a rule property"),
        (_v2(ACCEPT, _prop("proto", "tcp"), _prop("proto", "udp")), "proto", "given twice"),
        (_v2(ACCEPT, _prop("comment", "a"), _prop("comment", "b")), "comment", "given twice"),
        (_v2(ACCEPT, _prop("comment", "a&lt;b")), "comment", "letters, digits"),
        (_v2(ACCEPT, _prop("comment", "line\nbreak")), "comment", "letters, digits"),
        (_v2(ACCEPT, _prop("proto", "")), "proto", "empty or bad value"),
        # A space would smuggle a second option into the Admin API line.
        (_v2(ACCEPT, _prop("proto", "tcp dstports=22")), "proto", "empty or bad value"),
        (_v2(ACCEPT, _prop("dsthost", "10.0.0.1 comment=x")), "dsthost", "empty or bad"),
        (
            _v2(
                _prop("action", "forward"),
                _prop("forwardtype", "external"),
                _prop("srcports", "80"),
            ),
            "srchost",
            "required",
        ),
        (_v2(ACCEPT, "<property>tcp</property>"), "property", "'' is not a rule property"),
    ],
)
def test_bad_properties_name_the_field_and_the_rule(document: bytes, field: str, says: str) -> None:
    error = _refusal(document)
    assert error.field == field
    assert says in str(error)
    assert "(firewall.xml rule 1)" in error.message


def test_the_rule_number_counts_from_one() -> None:
    document = (
        b'<firewall version="2"><rules>'
        b'<rule><properties><property name="action">accept</property></properties></rule>'
        b'<rule><properties><property name="action">maybe</property></properties></rule>'
        b"</rules></firewall>"
    )
    error = _refusal(document)
    assert error.field == "action" and "(firewall.xml rule 2)" in error.message


@pytest.mark.parametrize(
    ("document", "field", "says"),
    [
        (b"", "firewall.xml", "not well-formed"),
        (b"<firewall", "firewall.xml", "not well-formed"),
        (b'<firewall version="2"><rules></firewall>', "firewall.xml", "not well-formed"),
        (b'<firewall version="3"><rules/></firewall>', "version", "expected 1 or 2"),
        (b"<firewall><rules/></firewall>", "firewall.xml", 'without version="2"'),
        (b'<fw version="2"><rules/></fw>', "firewall.xml", "unexpected <fw>"),
        (b'<firewall version="2" policy="drop"><rules/></firewall>', "firewall.xml", "attributes"),
        (b'<firewall version="2"/>', "firewall.xml", "exactly one <rules>, has 0"),
        (b'<firewall version="2"><rules/><rules/></firewall>', "firewall.xml", "exactly one"),
        (
            b'<firewall version="2"><rules/><extra/></firewall>',
            "firewall.xml",
            "unexpected <extra>",
        ),
        (b'<firewall version="2">text<rules/></firewall>', "firewall.xml", "holds text"),
        (b'<firewall version="2"><rules/>tail</firewall>', "firewall.xml", "holds text"),
        (b'<firewall version="2"><rules><rule/></rules></firewall>', "firewall.xml", "exactly one"),
        (
            b'<firewall version="2"><rules><rule><properties/><properties/></rule></rules>'
            b"</firewall>",
            "firewall.xml",
            "exactly one <properties>",
        ),
        (_v2('<property name="action" ref="x">accept</property>'), "firewall.xml", "attributes"),
        (_v2('<property name="action"><b>accept</b></property>'), "firewall.xml", "not elements"),
        (_v2("<prop name='action'>accept</prop>"), "firewall.xml", "unexpected <prop>"),
        (b'<QubesFirewallRules policy="maybe"/>', "policy", "expected allow or deny"),
        (b"<QubesFirewallRules/>", "policy", "expected allow or deny"),
        (
            b'<QubesFirewallRules policy="deny"><allow/></QubesFirewallRules>',
            "firewall.xml",
            "unexpected <allow>",
        ),
        (
            b'<QubesFirewallRules policy="deny"><rule><x/></rule></QubesFirewallRules>',
            "firewall.xml",
            "child elements",
        ),
        (
            b'<QubesFirewallRules policy="deny"><rule address="10.0.0.1" netmask="x"/>'
            b"</QubesFirewallRules>",
            "netmask",
            "is not a number",
        ),
        (
            b'<QubesFirewallRules policy="deny"><rule address="10.0.0.1" netmask="33"/>'
            b"</QubesFirewallRules>",
            "dsthost",
            "v1 rule 1",
        ),
        (
            b'<QubesFirewallRules policy="deny"><rule port="80" proto="any"/></QubesFirewallRules>',
            "dstports",
            "only with proto=tcp",
        ),
        (
            b'<QubesFirewallRules policy="deny"><rule address="x y"/></QubesFirewallRules>',
            "dsthost",
            "empty or bad value",
        ),
    ],
)
def test_malformed_documents_refused(document: bytes, field: str, says: str) -> None:
    error = _refusal(document)
    assert error.field == field
    assert says in str(error)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE firewall [
  <!ENTITY a "aaaaaaaaaa">
  <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
  <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
]>
<firewall version="2"><rules><rule><properties>
<property name="action">accept</property><property name="comment">&c;</property>
</properties></rule></rules></firewall>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE firewall [<!ENTITY secret SYSTEM "file:///etc/hostname">]>
<firewall version="2"><rules><rule><properties>
<property name="action">accept</property><property name="comment">&secret;</property>
</properties></rule></rules></firewall>"""
BARE_DTD = (
    b'<!DOCTYPE firewall SYSTEM "http://example.invalid/fw.dtd">'
    b'<firewall version="2"><rules/></firewall>'
)


@pytest.mark.parametrize("document", [BILLION_LAUGHS, EXTERNAL_ENTITY, BARE_DTD])
def test_dtds_and_entities_refused(document: bytes) -> None:
    error = _refusal(document)
    assert error.field == "firewall.xml"
    assert "DTDs and entities are not allowed" in error.message


def test_undeclared_entity_is_not_well_formed() -> None:
    assert "not well-formed" in str(_refusal(_v2(ACCEPT, _prop("comment", "&xxe;"))))


def test_oversized_document_refused_before_parsing() -> None:
    # Not even well-formed: the size check must come first.
    error = _refusal(b"<" * (MAX_FIREWALL_XML_BYTES + 1))
    assert error.field == "firewall.xml" and "larger than" in error.message
    big_but_fine = QUBES_V2.replace(
        b"<rules>", b"<rules>" + b" " * (MAX_FIREWALL_XML_BYTES - len(QUBES_V2) - 10)
    )
    assert parse_firewall_xml(big_but_fine) == QUBES_V2_RULES


def test_comments_and_processing_instructions_are_ignored() -> None:
    document = QUBES_V2.replace(b"<rules>", b"<rules><!-- by hand --><?pi x?>")
    assert parse_firewall_xml(document) == QUBES_V2_RULES
