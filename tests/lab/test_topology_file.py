"""The topology file: the default lab, and errors that name the field and the allowed form."""

import ipaddress

import pytest

from qubes_lab.topology_file import default_topology_text, load_lab_spec, load_lab_spec_text
from qubes_portfwd.model.errors import ValidationError

MINIMAL = """
[qubes.sys-net]
qid = 2
provides_network = true
[qubes.work]
qid = 6
netvm = "sys-net"
"""


def test_default_topology_matches_the_brief() -> None:
    spec = load_lab_spec()
    qids = {name: q.qid for name, q in spec.topology.qubes.items()}
    assert qids == {
        "sys-net": 2, "sys-firewall": 3, "work": 6, "personal": 7, "sys-vpn": 8, "vpn-work": 9
    }  # fmt: skip
    assert spec.edge.name == "sys-net"
    assert [q.name for q in spec.tunnel_qubes] == ["sys-vpn"]
    assert spec.topology["sys-vpn"].uplink == "wg0"
    assert spec.topology.path("work") == ("sys-firewall", "sys-net")
    assert spec.topology.path("vpn-work") == ("sys-vpn",)
    for name in ("sys-net", "sys-firewall", "work", "personal"):
        assert spec.topology[name].address6 is not None
    assert spec.topology["work"].address4 == ipaddress.IPv4Address("10.137.0.6")
    assert spec.outside.lan4 == ipaddress.IPv4Network("192.0.2.0/24")


def test_the_shipped_file_is_the_default() -> None:
    assert load_lab_spec_text(default_topology_text()) == load_lab_spec()


def test_outside_defaults_apply_when_the_section_is_left_out() -> None:
    spec = load_lab_spec_text(MINIMAL)
    assert spec.outside.internet4 == ipaddress.IPv4Network("198.51.100.0/24")
    assert spec.tunnel_qubes == ()


@pytest.mark.parametrize(
    ("text", "field", "hint"),
    [
        ("[qubes]", "qubes", "at least one"),
        (MINIMAL + "colour = 'red'\n", "qubes.work.colour", "allowed keys"),
        (MINIMAL.replace("qid = 6", "qid = 'six'"), "qubes.work.qid", "integer"),
        (MINIMAL.replace("qid = 6", "qid = 300"), "qubes.work.qid", "1-254"),
        (MINIMAL.replace("qid = 6", "qid = 2"), "qubes.work.qid", "own qid"),
        (MINIMAL.replace('"sys-net"', '"nowhere"'), "qubes.work.netvm", "does not exist"),
        (MINIMAL.replace("provides_network = true", ""), "qubes", "exactly one"),
        (MINIMAL.replace("[qubes.work]", "[qubes.lan]"), "qubes.lan", "reserved"),
        (MINIMAL + "[outside]\nlan4 = '192.0.2.1/24'\n", "outside.lan4", "IPv4 network"),
        (MINIMAL + "[outside]\nlan6 = '192.0.2.0/24'\n", "outside.lan6", "IPv6 network"),
        (MINIMAL + "[outside]\ninternet4 = '198.51.100.0/28'\n", "outside.internet4", "/24"),
        (
            MINIMAL + "features = { portfwd-tunnel = '1' }\n",
            "qubes.work.features.portfwd-tunnel",
            "provide network",
        ),
        ("qubes = 3", "qubes", "table"),
        ("[qubes.work", "topology", "TOML"),
    ],
)
def test_errors_name_the_field_and_the_allowed_form(text: str, field: str, hint: str) -> None:
    with pytest.raises(ValidationError) as caught:
        load_lab_spec_text(text)
    assert caught.value.field == field
    assert hint in caught.value.message


def test_a_tunnel_needs_its_own_interface() -> None:
    text = MINIMAL.replace(
        '[qubes.work]\nqid = 6\nnetvm = "sys-net"',
        '[qubes.vpn]\nqid = 8\nnetvm = "sys-net"\nprovides_network = true\n'
        'features = { portfwd-tunnel = "1" }',
    )
    with pytest.raises(ValidationError) as caught:
        load_lab_spec_text(text)
    assert caught.value.field == "qubes.vpn.features.portfwd-uplink"
