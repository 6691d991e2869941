"""Front ends' guarded rule-list writes on real core-admin: our extension refuses a Set
whose guard was written from another list than the current one (no lost update), and a Set
without a guard passes as on stock Qubes."""

import time

import pytest

from qubes_lab.core_admin import StockQubesd
from qubes_portfwd.client.admin_client import AdminClient
from qubes_portfwd.client.connection import QubesdError
from qubes_portfwd.client.guarded_update import update_rules
from qubes_portfwd.model.firewall_revision import BaseRevision, canonical_text, digest, feature_name

pytestmark = pytest.mark.lab

QUBE = "personal"
OTHERS = ["action=accept dsthost=10.9.9.9", "action=drop"]


def client(stock: StockQubesd) -> AdminClient:
    return AdminClient(stock.socket_path, status_path=stock.status_file)


def test_a_set_over_a_list_that_changed_meanwhile_is_refused(stock_qubesd: StockQubesd) -> None:
    admin = client(stock_qubesd)
    admin.firewall_set(QUBE, ["action=accept"])
    read = admin.firewall_get(QUBE)
    admin.firewall_set(QUBE, OTHERS)  # another writer
    mine = ["action=accept proto=tcp dstports=443", *read]
    guard = feature_name(canonical_text(mine), "0badc0de")
    admin.set_feature(QUBE, guard, BaseRevision(digest(canonical_text(read)), time.time()).format())
    try:
        with pytest.raises(QubesdError) as refused:
            admin.firewall_set(QUBE, mine)
    finally:
        admin.remove_feature(QUBE, guard)

    assert refused.value.exc_type == "PortfwdRulesChanged"
    assert "nothing was stored" in str(refused.value)
    assert canonical_text(admin.firewall_get(QUBE)) == canonical_text(OTHERS)


def test_the_guarded_update_stores_on_top_of_the_current_list(stock_qubesd: StockQubesd) -> None:
    admin = client(stock_qubesd)
    admin.firewall_set(QUBE, OTHERS)

    ssh = "action=accept proto=tcp dstports=22"
    stored = update_rules(admin, QUBE, lambda lines: [ssh, *lines])

    assert canonical_text(admin.firewall_get(QUBE)) == canonical_text(stored)
    assert canonical_text(stored[1:]) == canonical_text(OTHERS)
    assert not [f for f in admin.list_features(QUBE) if f.startswith("portfwd-firewall-base.")]
