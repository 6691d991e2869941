"""dom0 tells a qube that its netvm runs natd: exactly where the lab starts natd."""

from qubes_lab.qubesdb_keys import NATD_GATEWAY_SERVICE_KEY, serves_app_qubes, static_keys
from qubes_lab.topology_file import load_lab_spec

TOPO = load_lab_spec().topology


def test_qubes_behind_a_natd_gateway_get_the_service_key() -> None:
    told = {q.name for q in TOPO.qubes.values() if NATD_GATEWAY_SERVICE_KEY in static_keys(TOPO, q)}
    running_natd = {q.name for q in TOPO.qubes.values() if serves_app_qubes(TOPO, q)}
    assert running_natd == {"sys-firewall", "sys-vpn"}
    assert told == {q.name for q in TOPO.qubes.values() if q.netvm in running_natd}
    assert told == {"work", "personal", "sys-vpn", "vpn-work"}
    assert static_keys(TOPO, TOPO["work"])[NATD_GATEWAY_SERVICE_KEY] == "1"
