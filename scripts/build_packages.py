"""`make packages`: qubes-portfwd's dom0 RPM, template deb and template RPM, built into dist/.

Each package is a staged tree: the product (src/qubes_portfwd only: never the lab, the tests
or the benchmarks) copied to the target's site-packages with a dist-info made from
pyproject.toml, its programs, and the files under packaging/. rpmbuild (Debian's `rpm`) packs
the RPMs from their specs, dpkg-deb the deb. Runs on Debian 12 as root; stdlib only.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
PRODUCT = "qubes_portfwd"
MAINTAINER = "qubes-portfwd maintainers <maintainers@users.noreply.r-seed-cc99bffb.example>"
DOM0_PROGRAMS = (
    "qvm-portfwd",
    "qubes-portfwd-settings",
    "qubes-portfwd-overview",
    "qubes-portfwd-prompt",
)
VM_PROGRAMS = ("qubes-portfwd-agent", "qubes-portfwd-natd", "qubes-portfwd-tunnel")
UNITS = tuple(f"{name}.service" for name in VM_PROGRAMS)
PRESET = "75-qubes-portfwd.preset"
EXTENSION_GROUP = "qubes.ext"
POLICY = PACKAGING / "dom0" / "policy" / "50-qubes-portfwd.policy"
POLICY_TARGET = "etc/qubes/policy.d/50-qubes-portfwd.policy"
NAT_SERVICE = "etc/qubes-rpc/qubes.PortfwdNat"
NAT_SOCKET = "/var/run/qubes-portfwd/nat.sock"  # served by the extension inside qubesd
# Dom0's front ends talk to stock qubesd and read the status document our extension writes
# there (the product's own defaults are the lab's paths).
DOM0_ENVIRONMENT = {
    "QUBESD_SOCKET": "/var/run/qubesd.sock",
    "QUBES_PORTFWD_STATUS": "/var/lib/qubes/portfwd/status.json",
    "QUBES_PORTFWD_PROMPT_SOCKET": "/var/run/qubes-portfwd/prompt.sock",
}
# Where each target's Python looks (overridable: another Fedora release, another Python).
DOM0_PYTHON = "3.13"
FEDORA_PYTHON = "3.13"
DEBIAN_SITE = "usr/lib/python3/dist-packages"
SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
COMMAND_TIMEOUT = 300


class BuildError(RuntimeError):
    """A package could not be made; the message says what is missing or what failed."""


@dataclass(frozen=True)
class Project:
    """What pyproject.toml says about the product."""

    name: str
    version: str
    summary: str
    requires_python: str
    scripts: Mapping[str, str]
    entry_points: Mapping[str, Mapping[str, str]]


def load_project(root: Path = ROOT) -> Project:
    data = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    return Project(
        name=data["name"],
        version=data["version"],
        summary=data.get("description", ""),
        requires_python=data.get("requires-python", ""),
        scripts=dict(data.get("scripts", {})),
        entry_points={g: dict(e) for g, e in data.get("entry-points", {}).items()},
    )


def _target_file(source: Path, target: str) -> Path:
    """The module file an entry point `pkg.mod:attr` names, checked to be the product's."""
    module = target.split(":", 1)[0]
    if not module.startswith(PRODUCT + "."):
        raise BuildError(f"entry point {target!r}: not in the product package {PRODUCT}")
    base = source.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    raise BuildError(f"entry point {target!r}: no module {module} under {source}")


def _programs(project: Project, names: Iterable[str], source: Path) -> dict[str, str]:
    found = {}
    for name in names:
        target = project.scripts.get(name)
        if target is None:
            raise BuildError(f"pyproject.toml [project.scripts] has no {name!r}")
        _target_file(source, target)
        found[name] = target
    return found


def _entry_points_text(groups: Mapping[str, Mapping[str, str]]) -> str:
    lines = []
    for group, entries in groups.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in sorted(entries.items())]
        lines.append("")
    return "\n".join(lines)


def stage_python(
    stage: Path,
    site: str,
    project: Project,
    programs: Mapping[str, str],
    groups: Mapping[str, Mapping[str, str]],
    installer: str,
    environment: Mapping[str, str],
) -> Path:
    """The product and its dist-info under `stage/site`, its programs in `stage/usr/bin`
    (each setting `environment` where the caller's environment leaves it unset)."""
    source = ROOT / "src" / PRODUCT
    site_dir = stage / site
    site_dir.mkdir(parents=True)
    shutil.copytree(source, site_dir / PRODUCT, ignore=SKIPPED)
    dist_info = site_dir / f"{PRODUCT}-{project.version}.dist-info"
    dist_info.mkdir()
    metadata = [
        "Metadata-Version: 2.1",
        f"Name: {project.name}",
        f"Version: {project.version}",
        f"Summary: {project.summary}",
    ]
    if project.requires_python:
        metadata.append(f"Requires-Python: {project.requires_python}")
    (dist_info / "METADATA").write_text("\n".join(metadata) + "\n")
    all_groups = {"console_scripts": dict(programs), **groups}
    (dist_info / "entry_points.txt").write_text(_entry_points_text(all_groups))
    (dist_info / "top_level.txt").write_text(PRODUCT + "\n")
    # No RECORD: the system package manager owns these files, not pip.
    (dist_info / "INSTALLER").write_text(installer + "\n")
    bin_dir = stage / "usr/bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    defaults = "".join(
        f"os.environ.setdefault({key!r}, {value!r})\n" for key, value in environment.items()
    )
    for name, target in programs.items():
        module, function = target.split(":", 1)
        script = bin_dir / name
        script.write_text(
            "#!/usr/bin/python3\n"
            f'"""{name}: installed by {project.name}."""\n'
            "import os\n"
            "import sys\n\n"
            f"{defaults}"
            f"from {module} import {function}\n\n"
            f"sys.exit({function}())\n"
        )
        script.chmod(0o755)
    return site_dir


def _install(source: Path, target: Path, mode: int = 0o644) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    target.chmod(mode)


PLACEHOLDER_POLICY = (
    "# PLACEHOLDER staged by scripts/build_packages.py: packaging/dom0/policy/ has no policy.\n"
    "qubes.PortfwdNat * @anyvm @anyvm deny\n"
)


def stage_policy(target: Path) -> bool:
    """The policy file from packaging/dom0/policy/; a deny-all placeholder (True) without it."""
    if POLICY.is_file():
        _install(POLICY, target)
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(PLACEHOLDER_POLICY)
    target.chmod(0o644)
    return True


def stage_dom0(stage: Path, project: Project, python: str) -> bool:
    """Dom0's tree; True when the policy is a placeholder."""
    extensions = project.entry_points.get(EXTENSION_GROUP)
    if not extensions:
        raise BuildError(
            f'pyproject.toml has no [project.entry-points."{EXTENSION_GROUP}"]: qubesd would '
            "not load the extension"
        )
    source = ROOT / "src"
    for target in extensions.values():
        _target_file(source, target)
    programs = _programs(project, DOM0_PROGRAMS, source)
    site = f"usr/lib/python{python}/site-packages"
    groups = {EXTENSION_GROUP: extensions}
    stage_python(stage, site, project, programs, groups, "rpm", DOM0_ENVIRONMENT)
    placeholder = stage_policy(stage / POLICY_TARGET)
    service = stage / NAT_SERVICE
    service.parent.mkdir(parents=True, exist_ok=True)
    service.symlink_to(NAT_SOCKET)
    return placeholder


def stage_vm(stage: Path, project: Project, site: str, lib: str, installer: str) -> None:
    programs = _programs(project, VM_PROGRAMS, ROOT / "src")
    stage_python(stage, site, project, programs, {}, installer, {})
    for unit in UNITS:
        _install(PACKAGING / "vm" / unit, stage / lib / "systemd/system" / unit)
    _install(PACKAGING / "vm" / PRESET, stage / lib / "systemd/system-preset" / PRESET)


def _run(argv: list[str]) -> None:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise BuildError(f"{' '.join(argv[:2])} failed:\n{done.stdout}{done.stderr}")


def ghost_list(stage: Path, site: str, python: str, out: Path) -> Path:
    """%ghost lines for the bytecode %post makes: rpm owns it, so removal takes it too."""
    tag = "cpython-" + python.replace(".", "")
    site_dir, prefix = stage / site, Path("/") / site
    lines = []
    for folder in sorted({p.parent for p in (site_dir / PRODUCT).rglob("*.py")}):
        cache = prefix / folder.relative_to(site_dir) / "__pycache__"
        lines.append(f"%ghost %dir {cache}")
        for module in sorted(folder.glob("*.py")):
            for suffix in ("pyc", "opt-1.pyc"):
                lines.append(f"%ghost {cache}/{module.stem}.{tag}.{suffix}")
    out.write_text("\n".join(lines) + "\n")
    return out


def build_rpm(spec: Path, work: Path, out: Path, defines: Mapping[str, str]) -> Path:
    topdir = work / "rpmbuild"
    argv = ["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {topdir}"]
    for key, value in defines.items():
        argv += ["--define", f"{key} {value}"]
    _run([*argv, str(spec)])
    built = sorted((topdir / "RPMS" / "noarch").glob("*.rpm"))
    if len(built) != 1:
        raise BuildError(f"rpmbuild of {spec.name} left {[p.name for p in built]}")
    target = out / built[0].name
    shutil.move(built[0], target)
    return target


def build_deb(stage: Path, project: Project, out: Path) -> Path:
    control_dir = stage / "DEBIAN"
    control_dir.mkdir()
    size_kib = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file()) // 1024 + 1
    control = (PACKAGING / "deb" / "control.in").read_text()
    for key, value in {
        "@VERSION@": project.version,
        "@MAINTAINER@": MAINTAINER,
        "@INSTALLED_SIZE@": str(size_kib),
    }.items():
        control = control.replace(key, value)
    (control_dir / "control").write_text(control)
    for script in ("postinst", "prerm", "postrm"):
        _install(PACKAGING / "deb" / script, control_dir / script, 0o755)
    target = out / f"qubes-portfwd-vm_{project.version}-1_all.deb"
    _run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(stage), str(target)])
    return target


@dataclass(frozen=True)
class Built:
    packages: tuple[Path, ...]
    placeholder_policy: bool


def build_all(out: Path, *, dom0_python: str, fedora_python: str) -> Built:
    for tool in ("rpmbuild", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} not found: apt-get install rpm dpkg-dev")
    project = load_project()
    out.mkdir(parents=True, exist_ok=True)
    built = []
    with tempfile.TemporaryDirectory(prefix="qubes-portfwd-packages-") as scratch:
        work = Path(scratch)
        stage = work / "dom0"
        placeholder = stage_dom0(stage, project, dom0_python)
        site_rel = f"usr/lib/python{dom0_python}/site-packages"
        defines = {
            "pf_version": project.version,
            "stagedir": str(stage),
            "python3_version": dom0_python,
            "ghostlist": str(ghost_list(stage, site_rel, dom0_python, work / "dom0.ghosts")),
        }
        spec = PACKAGING / "rpm" / "qubes-portfwd-dom0.spec"
        built.append(build_rpm(spec, work / "dom0-rpm", out, defines))

        stage = work / "fedora"
        site_rel = f"usr/lib/python{fedora_python}/site-packages"
        stage_vm(stage, project, site_rel, "usr/lib", "rpm")
        defines = {
            "pf_version": project.version,
            "stagedir": str(stage),
            "python3_version": fedora_python,
            "ghostlist": str(ghost_list(stage, site_rel, fedora_python, work / "vm.ghosts")),
        }
        spec = PACKAGING / "rpm" / "qubes-portfwd-vm.spec"
        built.append(build_rpm(spec, work / "vm-rpm", out, defines))

        stage = work / "debian"
        # Debian 12 keeps units in /lib (merged /usr: the same place); Qubes' debs use /lib.
        stage_vm(stage, project, DEBIAN_SITE, "lib", "dpkg")
        built.append(build_deb(stage, project, out))
    return Built(tuple(built), placeholder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="where packages go")
    parser.add_argument("--dom0-python", default=DOM0_PYTHON, help="dom0's Python (X.Y)")
    parser.add_argument("--fedora-python", default=FEDORA_PYTHON, help="Fedora template's")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        built = build_all(args.out, dom0_python=args.dom0_python, fedora_python=args.fedora_python)
    except BuildError as err:
        print(f"build_packages: {err}", file=sys.stderr)
        return 1
    if built.placeholder_policy:
        print(f"build_packages: WARNING: no {POLICY.relative_to(ROOT)}: deny-all placeholder")
    for path in built.packages:
        print(f"{path}  {os.path.getsize(path)} bytes")
    print(f"built {len(built.packages)} packages in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
