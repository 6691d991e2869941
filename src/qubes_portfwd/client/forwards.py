"""A forward as the feature `portfwd.<id>` of its target: add, rebind, remove (stock methods).

The service (like our extension in stock qubesd) may refuse a feature value but never rewrite
it, so the value is completed here: `via` from the status document's path of the qube (unless
the line has via or follow=yes) and `expire=boot` bound to the document's boot id. A document
older than a netvm change makes the service refuse that `via`: read it again and retry.
"""

import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from ..model.errors import ValidationError
from ..model.forward_feature import feature_name, forward_id_of, is_forward_feature
from ..model.rule import ForwardRule, ForwardType, UntilReboot, forward_id
from ..model.rule_text import format_rule, parse_rule
from ..model.status_document import StatusDocument
from .connection import QubesdError

if TYPE_CHECKING:
    from .admin_client import AdminClient

MAX_ATTEMPTS = 5
NEWER_WAIT = 2.0  # seconds to wait for a newer document before trying again anyway
POLL = 0.05
_ID_RE = re.compile(r"^[0-9a-f]{12}$")

Make = Callable[[StatusDocument], ForwardRule]


def path_now(qube: str, rule: ForwardRule, document: StatusDocument) -> tuple[str, ...]:
    """What `via=` of this forward records now: the netvm chain, or the netvm alone."""
    known = document.qubes.get(qube)
    if known is None:
        raise ValidationError("via", f"no network path to record (no qube {qube})")
    if rule.forwardtype == ForwardType.INTERNAL:
        if known.netvm is None:
            raise ValidationError("via", f"no network path to record ({qube} has no netvm)")
        return (known.netvm,)
    if known.path is None:
        raise ValidationError("via", f"no network path to record ({known.path_error})")
    return known.path


def completed(qube: str, rule: ForwardRule, document: StatusDocument) -> ForwardRule:
    """The rule as the service will store it: bound to this boot and to the path now."""
    if isinstance(rule.expire, UntilReboot) and rule.expire.boot_id is None:
        rule = replace(rule, expire=UntilReboot(document.boot_id))
    if rule.via is None and not rule.follow:
        rule = replace(rule, via=path_now(qube, rule, document))
    return rule


def _stale(err: QubesdError, fields: tuple[str, ...]) -> bool:
    """Refused for a field this client filled from the document (it may be out of date)."""
    return err.exc_type == "QubesValueError" and any(f": {f}: " in err.message for f in fields)


def _newer_status(client: "AdminClient", sequence: int) -> StatusDocument:
    """The next document after `sequence`, or the current one after a bounded wait."""
    deadline = time.monotonic() + NEWER_WAIT
    while True:
        document = client.status(with_forwards=False)
        if document.sequence != sequence or time.monotonic() >= deadline:
            return document
        time.sleep(POLL)


def _store(client: "AdminClient", qube: str, make: Make, filled: tuple[str, ...]) -> ForwardRule:
    """Set the feature of `make(document)`; retried on a fresh document while it is stale."""
    document = client.status(with_forwards=False)
    for attempt in range(MAX_ATTEMPTS):
        rule = make(document)
        try:
            client.set_feature(qube, feature_name(forward_id(qube, rule)), format_rule(rule))
        except QubesdError as err:
            if attempt + 1 == MAX_ATTEMPTS or not _stale(err, filled):
                raise
            document = _newer_status(client, document.sequence)
            continue
        return rule
    raise AssertionError("unreachable")


def add(client: "AdminClient", qube: str, line: str) -> str:
    rule = parse_rule(line)
    if not isinstance(rule, ForwardRule):
        raise ValidationError("action", "expected action=forward (accept/drop: qvm-firewall)")
    filled = []
    if rule.via is None and not rule.follow:
        filled.append("via")
    if isinstance(rule.expire, UntilReboot) and rule.expire.boot_id is None:
        filled.append("expire")
    stored = _store(client, qube, lambda document: completed(qube, rule, document), tuple(filled))
    return forward_id(qube, stored)


def _check_id(untrusted_id: str) -> str:
    if not _ID_RE.match(untrusted_id):
        raise ValidationError("forward id", "expected 12 lowercase hex digits")
    return untrusted_id


def stored_rule(client: "AdminClient", qube: str, forward_id: str) -> ForwardRule:
    try:
        value = client.get_feature(qube, feature_name(_check_id(forward_id)))
    except QubesdError as err:
        if err.exc_type == "QubesFeatureNotFoundError":
            raise ValidationError("forward id", f"no forward {forward_id} on {qube}") from None
        raise
    rule = parse_rule(value)
    if not isinstance(rule, ForwardRule):
        raise ValidationError("forward id", f"{feature_name(forward_id)} of {qube} is no forward")
    return rule


def rebind(client: "AdminClient", qube: str, forward_id: str) -> None:
    rule = stored_rule(client, qube, forward_id)

    def make(document: StatusDocument) -> ForwardRule:
        unbound = replace(rule, via=None, follow=False)
        return replace(unbound, via=path_now(qube, unbound, document))

    _store(client, qube, make, ("via",))


def stored_ids(feature_names: list[str]) -> list[str]:
    ids = []
    for name in feature_names:
        if is_forward_feature(name):
            with contextlib.suppress(ValidationError):  # not ours to judge: only listed
                ids.append(forward_id_of(name))
    return ids


def remove(client: "AdminClient", qube: str, forward_id: str) -> None:
    name = feature_name(_check_id(forward_id))
    try:
        client.remove_feature(qube, name)
    except QubesdError as err:
        if err.exc_type == "QubesFeatureNotFoundError":
            raise ValidationError("forward id", f"no forward {forward_id} on {qube}") from None
        raise


def replace_forward(client: "AdminClient", qube: str, old_id: str, line: str) -> str:
    """Store the edited forward `line` in place of `old_id`; returns the new id.

    An edit keeping the forward's identity sets the same feature again; one changing it
    stores the new forward before the old one goes, so the qube is never without either.
    """
    stored_rule(client, qube, old_id)  # gone meanwhile: say so instead of adding
    new_id = add(client, qube, line)
    if new_id != old_id:
        remove(client, qube, old_id)
    return new_id
