"""`qubes.ext` entry point: the controller inside stock qubesd (its composition root).

Checks our features before qubesd stores them (`domain-feature-pre-set`), and re-plans and
publishes on every change a forward depends on: our features, `ipv6`, netvm and addresses,
qubes starting (`domain-qdb-create`) and stopping (`domain-shutdown`), qubesd loading.
"""

import logging
from typing import Any

import qubes.exc
import qubes.ext

from ..adapters.qubesdb_binding import QubesDbBinding
from ..controller.errors import AdminError
from ..controller.firewall_guard import check_guarded_set
from ..model.db_layout import HANDLED
from ..model.errors import ValidationError
from ..model.firewall_revision import FEATURE_PREFIX as GUARD_PREFIX
from ..model.firewall_revision import canonical_text
from .feature_checks import check_feature
from .runtime import Runtime, Settings

log = logging.getLogger(__name__)


class PortfwdValueError(qubes.exc.QubesValueError):
    """A feature of ours refused: the message names the field and the allowed form."""


class PortfwdRulesChanged(qubes.exc.QubesException):
    """A guarded rule-list write read another list than the current one: nothing stored.
    Front ends read again and retry (`client/guarded_update.py` knows this name)."""


def _rules_text(rules: Any) -> str:
    """A rule list as `admin.vm.firewall.Get` answers it, canonically spelled."""
    return canonical_text(r.api_rule for r in rules if r.api_rule is not None)


class PortfwdExtension(qubes.ext.Extension):
    def __init__(self) -> None:
        super().__init__()
        self.runtimes: dict[int, Runtime] = getattr(self, "runtimes", {})

    def runtime(self, app: Any) -> Runtime:
        runtime = self.runtimes.get(id(app))
        if runtime is None:
            runtime = Runtime(app, Settings.from_environment(), QubesDbBinding)
            self.runtimes[id(app)] = runtime
        return runtime

    @qubes.ext.handler("domain-feature-pre-set:portfwd*")
    def on_feature_pre_set(
        self, vm: Any, event: str, feature: str, value: str, oldvalue: str | None = None
    ) -> None:
        runtime = self.runtime(vm.app)
        runtime.host.refresh()
        try:
            check_feature(
                runtime.host,
                vm.name,
                feature,
                value,
                runtime.controller.clock(),
                runtime.controller.boot_id,
            )
        except ValidationError as err:
            raise PortfwdValueError(f"{feature}: {err}") from None

    @qubes.ext.handler("admin-permission:admin.vm.firewall.Set")
    def on_firewall_set(
        self, subject: Any, event: str, dest: Any, arg: str, rules: Any, **kwargs: Any
    ) -> None:
        """A Set guarded by a front end goes through only over the list that front end read;
        a Set without a guard (a stock writer's) passes as on stock Qubes."""
        try:
            check_guarded_set(
                dict(dest.features.items()), _rules_text(rules), _rules_text(dest.firewall.rules)
            )
        except AdminError as err:
            raise PortfwdRulesChanged(err.message) from None

    @qubes.ext.handler(
        "domain-feature-set:portfwd*",
        "domain-feature-delete:portfwd*",
        "domain-feature-set:ipv6",
        "domain-feature-delete:ipv6",
    )
    def on_feature_change(self, vm: Any, event: str, feature: str, **kwargs: Any) -> None:
        if feature.startswith(GUARD_PREFIX):
            return  # a front end's note on what it read: no forward depends on it
        self.runtime(vm.app).kick()

    @qubes.ext.handler(
        "property-set:netvm",
        "property-reset:netvm",
        "property-set:ip",
        "property-reset:ip",
        "property-set:ip6",
        "property-reset:ip6",
        "property-set:provides_network",
        "property-reset:provides_network",
    )
    def on_address_change(self, vm: Any, event: str, **kwargs: Any) -> None:
        self.runtime(vm.app).kick()

    @qubes.ext.handler("domain-init", "domain-load")
    def on_init_or_load(self, vm: Any, event: str, **kwargs: Any) -> None:
        """Hear each agent's reports (core-admin's own watch connection, as it advises:
        set at init or load); at load (qubesd starting) publish what qubes.xml holds."""
        vm.watch_qdb_path(HANDLED)
        if event == "domain-load":
            self.runtime(vm.app).kick()

    @qubes.ext.handler("domain-add", "domain-delete", system=True)
    def on_domains_change(self, app: Any, event: str, vm: Any, **kwargs: Any) -> None:
        self.runtime(app).kick()

    @qubes.ext.handler("domain-qdb-create")
    def on_qdb_create(self, vm: Any, event: str) -> None:
        """The qube started with a fresh QubesDB: reconnect and publish its entries."""
        runtime = self.runtime(vm.app)
        runtime.started(vm.name)
        runtime.kick()

    @qubes.ext.handler("domain-qdb-change:" + HANDLED)
    def on_agent_report(self, vm: Any, event: str, **kwargs: Any) -> None:
        # An agent's report after the publisher's wait (a repair, a late agent): the status
        # document follows.
        self.runtime(vm.app).kick()

    @qubes.ext.handler("domain-shutdown")
    def on_shutdown(self, vm: Any, event: str, **kwargs: Any) -> None:
        runtime = self.runtime(vm.app)
        runtime.stopped(vm.name)
        runtime.kick()
