"""A scope id names a link, not a host: no rule or entry may carry one."""

import pytest

from qubes_portfwd.model.entries import parse_hop
from qubes_portfwd.model.errors import ValidationError
from qubes_portfwd.model.hosts import parse_cidr, parse_dsthost


@pytest.mark.parametrize("value", ["fe80::1%eth0", "fe80::%eth0/64"])
def test_sources_and_destinations_refuse_scope_ids(value: str) -> None:
    with pytest.raises(ValidationError, match="srchost"):
        parse_cidr("srchost", value)
    with pytest.raises(ValidationError, match="dsthost"):
        parse_dsthost("dsthost", value)


def test_entries_refuse_scope_ids() -> None:
    value = (
        "role=dnat family=6 proto=tcp in=eth0 ports=80-80 to=fe80::1%eth0 toports=80-80 "
        "srchost=::/0"
    )
    with pytest.raises(ValidationError):
        parse_hop("/qubes-portfwd/0123456789ab/6", value)
