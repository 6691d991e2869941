"""What a feature of ours must be before qubesd stores it: the controller's own checks.

Called from the extension's `domain-feature-pre-set` handler with the host as it is now;
raises `ValidationError` (field and allowed form) and never rewrites the value.
"""

from collections.abc import Callable

from ..controller.forward_binding import check_forward_feature
from ..controller.nat_policy import FEATURE_POLICY, parse_policy_feature
from ..model.errors import ValidationError
from ..model.firewall_revision import FEATURE_PREFIX as GUARD_PREFIX
from ..model.firewall_revision import BaseRevision
from ..model.forward_feature import forward_id_of, is_forward_feature
from ..model.rule import ForwardRule, Rule, forward_id
from ..planner import conflicts_for
from ..ports.dom0_host import Dom0Host


def check_feature(
    host: Dom0Host,
    qube: str,
    name: str,
    untrusted_value: str,
    now: float,
    boot_id: Callable[[], str],
) -> None:
    """Refuse `name=untrusted_value` on `qube` as the lab's qubesd refuses it at Set."""
    if is_forward_feature(name):
        _check_forward(host, qube, name, untrusted_value, now, boot_id())
    elif name == FEATURE_POLICY:
        parse_policy_feature(untrusted_value)
    elif name.startswith(GUARD_PREFIX):
        BaseRevision.parse(untrusted_value)


def _check_forward(
    host: Dom0Host, qube: str, name: str, untrusted_value: str, now: float, boot_id: str
) -> None:
    wanted = forward_id_of(name)
    current = host.rules_of(qube)
    stored = next((r for r in current if _is_forward(qube, r, wanted)), None)
    assert stored is None or isinstance(stored, ForwardRule)
    rule = check_forward_feature(wanted, untrusted_value, qube, host.topology, boot_id, now, stored)
    if stored is None:
        rules = [*current, rule]
    else:
        rules = [rule if _is_forward(qube, r, wanted) else r for r in current]
    conflicts = conflicts_for(qube, rules, host.rules, host.topology, now, boot_id, host.order)
    if conflicts:
        raise ValidationError("forward", "; ".join(conflicts))


def _is_forward(qube: str, rule: Rule, wanted: str) -> bool:
    return isinstance(rule, ForwardRule) and forward_id(qube, rule) == wanted
