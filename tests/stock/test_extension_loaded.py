"""Real core-admin loads our extension by its `qubes.ext` entry point and checks our features
in its Admin API handlers: a bad forward is refused with our message and nothing stored."""

import pytest

from qubes_lab.core_admin import StockQubesd

pytestmark = pytest.mark.lab

BAD_FEATURE = "portfwd.000000000000"


def test_core_admin_loads_the_extension_by_its_entry_point(stock_qubesd: StockQubesd) -> None:
    loaded = stock_qubesd.command("extensions")["extensions"]

    assert "qubes_portfwd.dom0.extension.PortfwdExtension" in loaded
    assert "qubes.ext.services.ServicesExtension" in loaded  # core-admin's own, beside ours


def test_stock_qvm_features_shows_our_refusal_and_nothing_is_stored(
    stock_qubesd: StockQubesd, stock_tool
) -> None:
    xml = stock_qubesd.workdir / "core" / "qubes.xml"
    before = xml.read_bytes()

    refused = stock_tool(
        "qvm-features",
        ["work", BAD_FEATURE, "action=forward forwardtype=external proto=tcp dstports=80"],
        stock_qubesd.socket_path,
    )

    assert refused.returncode != 0
    # Our message: the feature, the field and the allowed form.
    assert f"{BAD_FEATURE}: srcports: required: the outside port N or range N-M" in (refused.stderr)
    features = stock_qubesd.command("state")["state"]["work"]["features"]
    assert not [name for name in features if name.startswith("portfwd.")]
    assert xml.read_bytes() == before


def test_a_value_missing_its_path_is_refused_naming_via(
    stock_qubesd: StockQubesd, stock_tool
) -> None:
    from qubes_portfwd.model.rule import forward_id
    from qubes_portfwd.model.rule_text import parse_rule

    value = (
        "action=forward forwardtype=external proto=tcp srcports=80 dstports=8080"
        " srchost=192.168.1.0/24"
    )
    name = f"portfwd.{forward_id('work', parse_rule(value))}"

    refused = stock_tool("qvm-features", ["work", name, value], stock_qubesd.socket_path)

    assert refused.returncode != 0
    assert f"{name}: via: required: via=sys-firewall,sys-net" in refused.stderr
    assert name not in stock_qubesd.command("state")["state"]["work"]["features"]


def test_a_bad_nat_policy_is_refused_naming_the_feature(
    stock_qubesd: StockQubesd, stock_tool
) -> None:
    refused = stock_tool(
        "qvm-features", ["sys-net", "portfwd-nat-policy", "maybe 1-2"], stock_qubesd.socket_path
    )

    assert refused.returncode != 0
    assert "portfwd-nat-policy: portfwd-nat-policy:" in refused.stderr
    assert "portfwd-nat-policy" not in stock_qubesd.command("state")["state"]["sys-net"]["features"]


def test_a_forward_taking_a_port_already_forwarded_is_refused(
    stock_qubesd: StockQubesd,
) -> None:
    from qubes_portfwd.client import QubesdError
    from qubes_portfwd.client.admin_client import AdminClient

    client = AdminClient(stock_qubesd.socket_path, status_path=stock_qubesd.status_file)
    line = (
        "action=forward forwardtype=external proto=tcp srcports=8000 dstports=80 srchost=0.0.0.0/0"
    )
    first = client.add_forward("work", line)
    try:
        with pytest.raises(QubesdError, match="conflicts"):
            client.add_forward("personal", line)
        features = stock_qubesd.command("state")["state"]["personal"]["features"]
        assert not [name for name in features if name.startswith("portfwd.")]
    finally:
        client.remove_forward("work", first)
