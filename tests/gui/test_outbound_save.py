"""The tab's save through a real admin service: stored over the list read, never over another."""

from collections.abc import Iterable

import pytest

from admin_service import RunningService
from qubes_portfwd.client import AdminClient
from qubes_portfwd.gui.outbound_save import RulesChangedElsewhere, save_rules

LIMITED = ["action=accept specialtarget=dns", "action=accept proto=icmp", "action=drop"]
OURS = "action=accept dsthost=www.example.com proto=tcp dstports=443-443"
THEIRS = "action=accept dsthost=other.example.org"


class _RacedClient(AdminClient):
    """Another writer's Set lands just before this client's first Set (after its read)."""

    def __init__(self, other: AdminClient, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.other = other
        self.raced = False

    def firewall_set(self, qube: str, lines: Iterable[str]) -> None:
        if not self.raced:
            self.raced = True
            self.other.firewall_set(qube, [THEIRS, *self.other.firewall_get(qube)])
        super().firewall_set(qube, lines)


def test_a_save_over_the_list_read_is_stored(service: RunningService) -> None:
    client = service.client()
    client.firewall_set("work", LIMITED)
    read = client.firewall_get("work")
    assert save_rules(client, "work", read, [OURS, *LIMITED]) == [OURS, *LIMITED]
    assert client.firewall_get("work") == [OURS, *LIMITED]


def test_a_change_after_the_window_read_is_reported_and_kept(service: RunningService) -> None:
    client = service.client()
    client.firewall_set("work", LIMITED)
    read = client.firewall_get("work")
    client.firewall_set("work", [THEIRS, *LIMITED])
    with pytest.raises(RulesChangedElsewhere, match="changed elsewhere since this window read"):
        save_rules(client, "work", read, [OURS, *LIMITED])
    assert client.firewall_get("work") == [THEIRS, *LIMITED]


def test_a_change_between_the_guarded_read_and_the_set_is_reported_and_kept(
    service: RunningService,
) -> None:
    client = service.client()
    client.firewall_set("work", LIMITED)
    read = client.firewall_get("work")
    raced = _RacedClient(client, client.socket_path, status_path=client.status_path)
    with pytest.raises(RulesChangedElsewhere):
        save_rules(raced, "work", read, [OURS, *LIMITED])
    assert raced.raced
    assert client.firewall_get("work") == [THEIRS, *LIMITED]
