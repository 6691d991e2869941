"""The extension's view of core-admin's qubes (AppHost over a stand-in app): a refresh parses
only forward features it has not seen, and reads the same forwards as parsing all of them."""

from pathlib import Path
from typing import Any

import pytest

from qubes_portfwd.dom0 import app_host
from qubes_portfwd.dom0.app_host import AppHost
from qubes_portfwd.model.forward_feature import feature_name
from qubes_portfwd.model.rule import ForwardRule, forward_id
from qubes_portfwd.model.rule_text import format_rule, parse_rule


class AppVM:
    def __init__(self, name: str, qid: int, netvm: "AppVM | None" = None) -> None:
        self.name, self.qid, self.netvm = name, qid, netvm
        self.provides_network = netvm is None
        self.features: dict[str, str] = {}

    def property_is_default(self, prop: str) -> bool:
        return True


class App:
    def __init__(self) -> None:
        net = AppVM("sys-net", 2)
        self.domains = [net, AppVM("work", 6, net)]

    def save(self) -> None:
        pass


def rule(port: int) -> ForwardRule:
    parsed = parse_rule(
        f"action=forward forwardtype=external proto=tcp srcports={port} srchost=0.0.0.0/0"
    )
    assert isinstance(parsed, ForwardRule)
    return parsed


def store(app: App, port: int) -> str:
    fid = forward_id("work", rule(port))
    app.domains[1].features[feature_name(fid)] = format_rule(rule(port))
    return fid


def run_now(call: Any) -> Any:
    return call()


def test_a_refresh_parses_only_new_values_and_reads_the_same_forwards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = App()
    first = store(app, 80)
    second = store(app, 81)
    host = AppHost(app, tmp_path, run_now)
    parsed: list[str] = []
    real_parse = app_host.parse_rule

    def counting_parse(text: str) -> Any:
        parsed.append(text)
        return real_parse(text)

    monkeypatch.setattr(app_host, "parse_rule", counting_parse)
    host.refresh()
    assert parsed == [] and host.rules_of("work") == (rule(80), rule(81))
    third = store(app, 82)
    app.domains[1].features[feature_name("0123456789ab")] = "action=forward nonsense"
    host.refresh()
    host.refresh()  # an invalid value is parsed (and ignored) again each time
    assert parsed == [format_rule(rule(82)), "action=forward nonsense", "action=forward nonsense"]
    assert host.rules_of("work") == (rule(80), rule(81), rule(82))
    assert host.order[first] < host.order[second] < host.order[third]
    del app.domains[1].features[feature_name(first)]
    host.refresh()
    assert host.rules_of("work") == (rule(81), rule(82)) and first not in host.order
