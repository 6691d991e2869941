"""What `make packages` builds: each package's files, metadata and scripts, read back with
rpm and dpkg-deb; the product only (no lab, no tests); dist-info entry points as qubesd and
the console scripts find them; the systemd units as systemd reads them."""

import configparser
import importlib.metadata
import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT, TOOL_TIMEOUT, BuiltPackages, extract_deb, extract_rpm, run

DOM0_SITE = "/usr/lib/python3.13/site-packages"
FEDORA_SITE = "/usr/lib/python3.13/site-packages"
DEBIAN_SITE = "/usr/lib/python3/dist-packages"
DOM0_PROGRAMS = {
    "qvm-portfwd",
    "qubes-portfwd-settings",
    "qubes-portfwd-overview",
    "qubes-portfwd-prompt",
}
SERVICES = ("qubes-portfwd-agent", "qubes-portfwd-natd", "qubes-portfwd-tunnel")
UNITS = {f"{name}.service" for name in SERVICES}
POLICY = "/etc/qubes/policy.d/50-qubes-portfwd.policy"
NAT_SERVICE = "/etc/qubes-rpc/qubes.PortfwdNat"
LAB_PROGRAMS = {"qubes-lab", "qubes-lab-qubesd", "qvm-firewall", "qvm-prefs"}


def _project() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _product_modules(prefix: str) -> set[str]:
    source = ROOT / "src" / "qubes_portfwd"
    return {
        f"{prefix}/qubes_portfwd/{path.relative_to(source).as_posix()}"
        for path in source.rglob("*.py")
    }


def _rpm_query(package: Path, fmt: str) -> list[str]:
    return run(["rpm", "-qp", "--qf", fmt, str(package)]).splitlines()


def _rpm_files(package: Path) -> dict[str, tuple[str, str, str, str]]:
    """path -> (mode in octal, group, file flags as rpm names them, link target)."""
    rows = _rpm_query(
        package, "[%{FILENAMES}\t%{FILEMODES:octal}\t%{FILEGROUPNAME}\t%{FILEFLAGS:fflags}\t"
        "%{FILELINKTOS}\n]",
    )  # fmt: skip
    files = {}
    for row in rows:
        path, mode, group, flags, link = row.split("\t")
        files[path] = (mode, group, flags, link)
    return files


def _payload(files: dict[str, tuple[str, str, str, str]]) -> set[str]:
    """What the package writes (ghosts are only owned: the bytecode made at install)."""
    return {path for path, (_, _, flags, _) in files.items() if "g" not in flags}


def _deps(package: Path, option: str = "--requires") -> set[str]:
    """`rpm -qp --requires` (or --recommends): one dependency per line."""
    return {row.strip() for row in run(["rpm", "-qp", option, str(package)]).splitlines()}


def _no_lab_no_tests(paths: set[str]) -> None:
    for path in paths:
        parts = path.split("/")
        assert "qubes_lab" not in parts, path
        assert "tests" not in parts and "bench" not in parts, path
        assert not parts[-1].startswith("test_"), path
        assert parts[-1] not in LAB_PROGRAMS, path


def _entry_points(site: Path) -> dict[str, dict[str, str]]:
    """The entry points Python's importlib finds in `site` (as qubesd and scripts look)."""
    (dist,) = list(importlib.metadata.distributions(path=[str(site)]))
    assert dist.metadata["Name"] == _project()["name"]
    assert dist.version == _project()["version"]
    found: dict[str, dict[str, str]] = {}
    for point in dist.entry_points:
        found.setdefault(point.group, {})[point.name] = point.value
    return found


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment, method-assign]
    parser.read_string(path.read_text())
    return parser


# ---- dom0 RPM ----


def test_the_dom0_rpm_is_noarch_and_requires_dom0s_python_and_core_admin(
    built_packages: BuiltPackages,
) -> None:
    package = built_packages.dom0_rpm
    name, version, arch = _rpm_query(package, "%{NAME}\n%{VERSION}\n%{ARCH}\n")
    assert (name, version, arch) == ("qubes-portfwd-dom0", _project()["version"], "noarch")
    requires = _deps(package)
    assert {"python3", "python(abi) = 3.13", "qubes-core-dom0 >= 4.3"} <= requires
    assert _deps(package, "--recommends") == {"python3-pyside6"}


def test_the_dom0_rpm_holds_the_product_its_programs_the_service_and_the_policy(
    built_packages: BuiltPackages,
) -> None:
    files = _rpm_files(built_packages.dom0_rpm)
    payload = _payload(files)
    python = {p for p in payload if p.startswith(DOM0_SITE + "/qubes_portfwd/")}
    assert {p for p in python if p.endswith(".py")} == _product_modules(DOM0_SITE)
    assert {p.rsplit("/", 1)[1] for p in payload if p.startswith("/usr/bin/")} == DOM0_PROGRAMS
    _no_lab_no_tests(set(files))
    mode, _group, _flags, link = files[NAT_SERVICE]
    assert stat.S_ISLNK(int(mode, 8))
    assert link == "/var/run/qubes-portfwd/nat.sock"
    mode, group, flags, _ = files[POLICY]
    assert (stat.S_IMODE(int(mode, 8)), group) == (0o664, "qubes")
    assert set(flags) == {"c", "n"}  # %config(noreplace): a changed policy is kept
    expected_policy = ROOT / "packaging" / "dom0" / "policy" / "50-qubes-portfwd.policy"
    assert expected_policy.is_file(), "the policy file is missing: the package has a placeholder"
    # Bytecode is made by %post for dom0's interpreter and owned (removal takes it).
    ghosts = {p for p, (_, _, f, _) in files.items() if "g" in f}
    assert f"{DOM0_SITE}/qubes_portfwd/__pycache__/defaults.cpython-313.pyc" in ghosts


def test_the_dom0_rpm_restarts_qubesd_after_install_upgrade_and_removal(
    built_packages: BuiltPackages,
) -> None:
    scripts = run(["rpm", "-qp", "--scripts", str(built_packages.dom0_rpm)])
    post = scripts.split("postinstall scriptlet")[1].split("postuninstall scriptlet")[0]
    postun = scripts.split("postuninstall scriptlet")[1]
    assert "systemctl try-restart qubesd.service" in post  # install and upgrade
    assert "compileall" in post and DOM0_SITE in post
    assert "systemctl try-restart qubesd.service" in postun
    assert '"$1" -eq 0' in postun  # removal only: an upgrade's %post restarted it


def test_the_dom0_dist_info_carries_the_extension_entry_point_and_only_dom0s_programs(
    built_packages: BuiltPackages, tmp_path: Path
) -> None:
    tree = extract_rpm(built_packages.dom0_rpm, tmp_path)
    points = _entry_points(tmp_path / DOM0_SITE.lstrip("/"))
    assert points["qubes.ext"] == _project()["entry-points"]["qubes.ext"]
    assert points["qubes.ext"] == {"qubes_portfwd": "qubes_portfwd.dom0.extension:PortfwdExtension"}
    assert set(points["console_scripts"]) == DOM0_PROGRAMS
    assert set(points) == {"qubes.ext", "console_scripts"}
    policy = (tree / POLICY.lstrip("/")).read_text()
    source = (ROOT / "packaging/dom0/policy/50-qubes-portfwd.policy").read_text()
    assert policy == source


def _dom0_python() -> str:
    """Dom0's Python version where this machine has it (pyenv's 3.13), else this one."""
    candidate = Path.home() / ".pyenv/versions/3.13.0/bin/python3.13"
    return str(candidate) if candidate.exists() else sys.executable


def _installed(tree: Path, program: str, *args: str, env: dict[str, str]) -> Any:
    """Run an installed dom0 program with only the package's site-packages on the path."""
    site = tree / DOM0_SITE.lstrip("/")
    return subprocess.run(
        [_dom0_python(), str(tree / "usr/bin" / program), *args],
        env={**env, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"},
        capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False,
    )  # fmt: skip


def test_the_installed_qvm_portfwd_talks_to_the_socket_and_reads_the_status_it_is_given(
    built_packages: BuiltPackages, tmp_path: Path, admin_socket: Path
) -> None:
    tree = extract_rpm(built_packages.dom0_rpm, tmp_path / "root")
    helped = _installed(tree, "qvm-portfwd", "--help", env={"PATH": "/usr/bin:/bin"})
    assert helped.returncode == 0 and "usage: qvm-portfwd" in helped.stdout, helped.stderr
    # $QUBESD_SOCKET and $QUBES_PORTFWD_STATUS (set by the fixture) win over dom0's paths.
    listed = _installed(tree, "qvm-portfwd", "list", env=dict(os.environ))
    assert listed.returncode == 0, listed.stderr


def test_the_installed_qvm_portfwd_looks_where_stock_dom0_has_things(
    built_packages: BuiltPackages, tmp_path: Path
) -> None:
    tree = extract_rpm(built_packages.dom0_rpm, tmp_path / "root")
    listed = _installed(tree, "qvm-portfwd", "list", env={"PATH": "/usr/bin:/bin"})
    assert listed.returncode != 0
    assert "/var/lib/qubes/portfwd/status.json" in listed.stderr
    script = (tree / "usr/bin/qvm-portfwd").read_text()
    assert "os.environ.setdefault('QUBESD_SOCKET', '/var/run/qubesd.sock')" in script


# ---- template packages ----


def test_the_template_rpm_requires_what_the_agent_runs(built_packages: BuiltPackages) -> None:
    package = built_packages.vm_rpm
    name, arch = _rpm_query(package, "%{NAME}\n%{ARCH}\n")
    assert (name, arch) == ("qubes-portfwd-vm", "noarch")
    assert {
        "python(abi) = 3.13",
        "python3-qubesdb",
        "python3-nftables",
        "nftables",
        "conntrack-tools",
        "iproute",
        "qubes-core-agent-networking",
    } <= _deps(package)


def test_the_template_deb_depends_on_what_the_agent_runs(built_packages: BuiltPackages) -> None:
    fields = run(["dpkg-deb", "-f", str(built_packages.vm_deb)])
    control = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
    assert (control["Package"], control["Architecture"]) == ("qubes-portfwd-vm", "all")
    assert control["Version"] == f"{_project()['version']}-1"
    depends = {d.strip() for d in control["Depends"].split(",")}
    assert {
        "python3 (>= 3.11)",
        "python3-qubesdb",
        "python3-nftables",
        "nftables",
        "conntrack",
        "iproute2",
        "qubes-core-agent-networking",
    } <= depends


@pytest.mark.parametrize("kind", ["deb", "rpm"])
def test_each_template_package_holds_the_product_programs_units_and_preset(
    built_packages: BuiltPackages, kind: str, tmp_path: Path
) -> None:
    if kind == "deb":
        listing = run(["dpkg-deb", "-c", str(built_packages.vm_deb)]).splitlines()
        paths = {line.split()[-1].removeprefix(".") for line in listing}
        site, unit_dir = DEBIAN_SITE, "/lib/systemd/system"
        preset_dir = "/lib/systemd/system-preset"
        tree = extract_deb(built_packages.vm_deb, tmp_path)
    else:
        paths = _payload(_rpm_files(built_packages.vm_rpm))
        site, unit_dir = FEDORA_SITE, "/usr/lib/systemd/system"
        preset_dir = "/usr/lib/systemd/system-preset"
        tree = extract_rpm(built_packages.vm_rpm, tmp_path)
    python = {p for p in paths if p.startswith(site + "/qubes_portfwd/") and p.endswith(".py")}
    assert python == _product_modules(site)
    assert {p.rsplit("/", 1)[1] for p in paths if p.startswith("/usr/bin/") and p[9:]} == set(
        SERVICES
    )
    assert {p.rsplit("/", 1)[1] for p in paths if p.startswith(unit_dir + "/q")} == UNITS
    assert f"{preset_dir}/75-qubes-portfwd.preset" in paths
    _no_lab_no_tests(paths)
    points = _entry_points(tree / site.lstrip("/"))
    assert set(points) == {"console_scripts"}  # no qubes.ext outside dom0
    assert points["console_scripts"] == {s: _project()["scripts"][s] for s in SERVICES}
    preset = (tree / preset_dir.lstrip("/") / "75-qubes-portfwd.preset").read_text().split("\n")
    assert {f"enable {unit}" for unit in UNITS} <= set(preset)


def test_each_unit_runs_only_where_its_qubes_service_is_on(
    built_packages: BuiltPackages, tmp_path: Path
) -> None:
    tree = extract_deb(built_packages.vm_deb, tmp_path)
    for service in SERVICES:
        path = tree / "lib/systemd/system" / f"{service}.service"
        unit = _unit(path)
        assert unit["Unit"]["ConditionPathExists"] == f"/run/qubes-service/{service}"
        after = set(unit["Unit"]["After"].split())
        assert {"qubes-db.service", "qubes-network.service", "qubes-iptables.service"} <= after
        assert f"/usr/bin/{service} --qube" in unit["Service"]["ExecStart"]
        assert unit["Install"]["WantedBy"] == "multi-user.target"
        if service == "qubes-portfwd-agent":  # fail closed after a kill: its rules go
            assert "qubes-portfwd-agent --remove" in unit["Service"]["ExecStopPost"]
            assert unit["Service"]["RuntimeDirectoryPreserve"] == "yes"
        verified = subprocess.run(
            ["systemd-analyze", "verify", str(path)],
            capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False,
            env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
        )  # fmt: skip
        # Only our own unit's lines count: the host's other units are not ours to judge.
        ours = [line for line in verified.stderr.splitlines() if service in line]
        assert ours == [], verified.stderr


def test_the_template_packages_enable_units_on_install_and_stop_them_on_removal(
    built_packages: BuiltPackages, tmp_path: Path
) -> None:
    run(["dpkg-deb", "-e", str(built_packages.vm_deb), str(tmp_path / "DEBIAN")])
    postinst = (tmp_path / "DEBIAN/postinst").read_text()
    prerm = (tmp_path / "DEBIAN/prerm").read_text()
    assert "systemctl --no-reload preset $UNITS" in postinst
    assert "py3compile -p qubes-portfwd-vm" in postinst
    assert "systemctl stop $UNITS" in prerm and "py3clean -p qubes-portfwd-vm" in prerm
    assert "/usr/bin/qubes-portfwd-agent --remove" in prerm  # what a crashed agent left
    for script in ("postinst", "prerm", "postrm"):
        assert os.access(tmp_path / "DEBIAN" / script, os.X_OK)
        checked = subprocess.run(["sh", "-n", str(tmp_path / "DEBIAN" / script)], check=False)
        assert checked.returncode == 0, script
    scripts = run(["rpm", "-qp", "--scripts", str(built_packages.vm_rpm)])
    assert "systemctl --no-reload preset qubes-portfwd-agent.service" in scripts
    assert "systemctl --no-reload disable --now qubes-portfwd-agent.service" in scripts
    assert "/usr/bin/qubes-portfwd-agent --remove" in scripts


def test_the_build_reports_each_package_and_its_size(built_packages: BuiltPackages) -> None:
    for package in (built_packages.dom0_rpm, built_packages.vm_rpm, built_packages.vm_deb):
        assert f"{package}  {package.stat().st_size} bytes" in built_packages.output
    assert "placeholder" not in built_packages.output


def test_real_core_admin_loads_the_extension_from_the_installed_dom0_package(
    built_packages: BuiltPackages, tmp_path: Path
) -> None:
    """Qubes' own `qubes.ext.get_extensions()` (pinned core-admin), with the package's
    site-packages first and no checkout on the path, finds and builds our extension."""
    from qubes_lab import upstream

    try:
        core = upstream.source_tree("qubes-core-admin")
        qrexec = upstream.source_tree("qubes-core-qrexec")
    except upstream.UpstreamUnavailable as err:
        pytest.skip(f"Qubes' core-admin sources not available: {err}")
    tree = extract_rpm(built_packages.dom0_rpm, tmp_path / "root")
    site = tree / DOM0_SITE.lstrip("/")
    # core-admin's own dependencies (lxml, jinja2, ...) from this interpreter's site-packages;
    # -S keeps its .pth files (the checkout's editable install) from running.
    libraries = [p for p in sys.path if p.endswith("site-packages")]
    path = [str(site), str(core), str(qrexec), str(core / "test-packages"), *libraries]
    code = (
        "import json, qubes.ext, qubes_portfwd\n"
        "extensions = qubes.ext.get_extensions()\n"
        "found = [type(e).__module__ + ':' + type(e).__name__ for e in extensions]\n"
        "print(json.dumps({'found': found, 'product': qubes_portfwd.__file__}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-c", code],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(path), "QUBES_TEST": "1"},
        capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["found"] == ["qubes_portfwd.dom0.extension:PortfwdExtension"]
    assert answer["product"] == str(site / "qubes_portfwd" / "__init__.py")


@pytest.mark.parametrize("kind", ["deb", "rpm"])
def test_systemd_enables_the_units_by_the_packages_preset_where_all_else_is_disabled(
    built_packages: BuiltPackages, kind: str, tmp_path: Path
) -> None:
    """`systemctl --root` on the unpacked package, under a Fedora-like `disable *` default:
    our preset file alone enables the units (what the packages' install scripts run)."""
    if kind == "deb":
        root = extract_deb(built_packages.vm_deb, tmp_path / "root")
    else:
        root = extract_rpm(built_packages.vm_rpm, tmp_path / "root")
    defaults = root / "usr/lib/systemd/system-preset/99-default-disable.preset"
    defaults.parent.mkdir(parents=True, exist_ok=True)
    defaults.write_text("disable *\n")
    wants = root / "etc/systemd/system/multi-user.target.wants"

    def preset() -> set[str]:
        run(["systemctl", f"--root={root}", "preset", *sorted(UNITS)])
        return {p.name for p in wants.iterdir()} if wants.exists() else set()

    assert preset() == UNITS
    preset_dir = "lib/systemd/system-preset" if kind == "deb" else "usr/lib/systemd/system-preset"
    (root / preset_dir / "75-qubes-portfwd.preset").unlink()
    assert preset() == set()  # without it the default disables them again
