"""Store the tab's outbound rules only over the list the window read (no lost update).

The write is the guarded rule-list write (client/guarded_update.py): a Set over a list that
changed after the guard's read is refused by the service and read again; a list that differs
from the one the window showed is never overwritten: the user sees the change instead.
"""

from collections.abc import Sequence

from ..client import AdminClient
from ..client.guarded_update import update_rules
from ..model.errors import ValidationError
from ..model.firewall_revision import rules_text

CHANGED_FIELD = "rules"


class RulesChangedElsewhere(ValidationError):
    """The list is no longer the one the window read; nothing was stored."""

    def __init__(self, qube: str) -> None:
        super().__init__(
            CHANGED_FIELD,
            f"{qube}'s rules were changed elsewhere since this window read them; nothing was"
            " stored: review the current rules (Discard) and make your change again",
        )


def save_rules(
    client: AdminClient, qube: str, read_lines: Sequence[str], new_lines: Sequence[str]
) -> list[str]:
    """Set `new_lines` if the list is still `read_lines`; answers the list stored."""
    read_text = rules_text(read_lines)

    def edit(current: list[str]) -> list[str]:
        if rules_text(current) != read_text:
            raise RulesChangedElsewhere(qube)
        return list(new_lines)

    return update_rules(client, qube, edit)
