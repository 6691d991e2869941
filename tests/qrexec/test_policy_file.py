"""Our qrexec policy file, read by Qubes' own policy parser and evaluator (qubes-core-qrexec at
the pinned commit), beside dom0's default policy from qubes-core-admin. The parser runs in a
child interpreter, so its `qrexec` package never meets this suite's modules."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qubes_lab import upstream

POLICY_FILE = Path(__file__).parents[2] / "packaging/dom0/policy/50-qubes-portfwd.policy"
CALLERS = ("sys-net", "sys-firewall", "work")
OTHER_SERVICES = (
    "qubes.Filecopy",
    "qubes.VMShell",
    "qubes.FeaturesRequest",
    "qubes.GetDate",
    "admin.vm.List",
    "qubes.PortfwdNatX",
    "qubes.Portfwd",
)

# Runs in the child: evaluates requests with the real parser and prints what it decided.
EVALUATE = textwrap.dedent(
    """
    import asyncio, json, sys, uuid
    from pathlib import Path
    import qrexec
    from qrexec.exc import AccessDenied
    from qrexec.policy import parser

    policy_dir, ours, callers, others = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    kinds = {"dom0": "AdminVM", "sys-net": "AppVM", "sys-firewall": "AppVM", "work": "AppVM"}
    domains = {}
    for name, kind in kinds.items():
        vm_id = "00000000-0000-0000-0000-000000000000" if name == "dom0" else str(uuid.uuid4())
        info = {"name": name, "type": kind, "tags": (), "uuid": vm_id, "icon": "",
                "default_dispvm": None, "template_for_dispvms": False,
                "power_state": "Running"}
        domains[name] = domains["uuid:" + vm_id] = info
    system = {"domains": domains}
    policies = {"installed": parser.FilePolicy(policy_path=policy_dir),
                "ours alone": parser.StringPolicy(policy={
                    "__main__": f"!include {Path(ours).name}",
                    Path(ours).name: Path(ours).read_text()})}

    def decide(policy, service, argument, source, target):
        request = parser.Request(service, argument, source, target, system_info=system)
        try:
            rule = policy.find_matching_rule(request)
        except AccessDenied as err:
            return {"rule": None, "action": "no match", "detail": str(err)}
        name = Path(str(rule.filepath)).name.removesuffix("[in-memory]")
        where = f"{name}:{rule.lineno}"
        try:
            resolution = policy.evaluate(request)
        except AccessDenied as err:
            return {"rule": where, "action": "deny", "detail": str(err)}
        allowed = isinstance(resolution, parser.AllowResolution)
        detail = asyncio.run(resolution.execute()) if allowed else ""
        return {"rule": where, "action": type(resolution).__name__, "detail": detail}

    out = {"qrexec": qrexec.__file__, "calls": {}}
    for label, policy in policies.items():
        for source in callers.split(","):
            for service, argument, target in [
                ("qubes.PortfwdNat", "+Request", "@adminvm"),
                ("qubes.PortfwdNat", "+Address", "@adminvm"),
                ("qubes.PortfwdNat", "+Request", "dom0"),
                ("qubes.PortfwdNat", "+Grant", "@adminvm"),
                ("qubes.PortfwdNat", "+", "@adminvm"),
                ("qubes.PortfwdNat", "+Request", "work" if source != "work" else "sys-net"),
            ] + [(s, "+", t) for s in others.split(",") for t in ("@adminvm", "sys-net")]:
                key = f"{label}|{source}|{service}{argument}|{target}"
                out["calls"][key] = decide(policy, service, argument, source, target)
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def decisions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    try:
        qrexec_tree = upstream.source_tree("qubes-core-qrexec")
        admin_tree = upstream.source_tree("qubes-core-admin")
    except upstream.UpstreamUnavailable as err:
        pytest.skip(f"Qubes' qrexec policy parser not available: {err}")  # CI fails on it
    policy_dir = tmp_path_factory.mktemp("policy.d")
    shutil.copy(POLICY_FILE, policy_dir)
    shutil.copy(admin_tree / "qubes-rpc-policy" / "90-default.policy", policy_dir)
    argv = [sys.executable, "-c", EVALUATE, str(policy_dir), str(POLICY_FILE)]
    argv += [",".join(CALLERS), ",".join(OTHER_SERVICES)]
    env = {**os.environ, "PYTHONPATH": str(qrexec_tree)}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert Path(result["qrexec"]).is_relative_to(qrexec_tree)
    return result["calls"]


OURS = POLICY_FILE.name


@pytest.mark.parametrize("policy", ["installed", "ours alone"])
@pytest.mark.parametrize("source", CALLERS)
@pytest.mark.parametrize("argument", ["+Request", "+Address"])
def test_natd_calls_from_any_qube_reach_the_service_in_dom0(
    decisions: dict[str, dict[str, str]], policy: str, source: str, argument: str
) -> None:
    decided = decisions[f"{policy}|{source}|qubes.PortfwdNat{argument}|@adminvm"]

    assert decided["rule"] is not None and decided["rule"].startswith(f"{OURS}:")
    assert decided["action"] == "AllowResolution"
    answer = dict(line.split("=", 1) for line in decided["detail"].splitlines())
    assert answer["result"] == "allow" and answer["target"] == "dom0"
    assert answer["requested_target"] == "@adminvm"  # what qrexec sends: "keyword adminvm"


@pytest.mark.parametrize("source", CALLERS)
def test_dom0_by_name_is_allowed_too(decisions: dict[str, dict[str, str]], source: str) -> None:
    decided = decisions[f"installed|{source}|qubes.PortfwdNat+Request|dom0"]
    assert decided["rule"].startswith(f"{OURS}:") and decided["action"] == "AllowResolution"


@pytest.mark.parametrize("policy", ["installed", "ours alone"])
@pytest.mark.parametrize("source", CALLERS)
def test_other_arguments_and_other_targets_are_denied_by_our_file(
    decisions: dict[str, dict[str, str]], policy: str, source: str
) -> None:
    other_vm = "work" if source != "work" else "sys-net"
    for call in ("+Grant|@adminvm", "+|@adminvm", f"+Request|{other_vm}"):
        decided = decisions[f"{policy}|{source}|qubes.PortfwdNat{call}"]
        assert decided["action"] == "deny", call
        assert decided["rule"].startswith(f"{OURS}:"), call


@pytest.mark.parametrize("policy", ["installed", "ours alone"])
@pytest.mark.parametrize("source", CALLERS)
@pytest.mark.parametrize("service", OTHER_SERVICES)
def test_our_file_matches_no_other_service(
    decisions: dict[str, dict[str, str]], policy: str, source: str, service: str
) -> None:
    for target in ("@adminvm", "sys-net"):
        decided = decisions[f"{policy}|{source}|{service}+|{target}"]
        assert decided["rule"] is None or not decided["rule"].startswith(f"{OURS}:")
        if policy == "ours alone":
            assert decided["action"] == "no match"
