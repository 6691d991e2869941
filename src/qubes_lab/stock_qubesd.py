"""Child program: Qubes' real core-admin (pinned sources) as qubesd, with our extension.

Run by `qubes_lab.core_admin` in dom0's mount namespace of real QubesDB, with core-admin,
its metadata, qrexec and the real `qubesdb` binding on the path. Builds `qubes.Qubes`
offline with the VM manager mocked as Qubes' own tests do, makes the qubes of `--spec`,
marks them running, serves the Admin API (`qubes.api.create_servers`) on `--socket`, and
answers one JSON command per stdin line (start/stop a qube, read state) on stdout.
"""

import argparse
import asyncio
import grp
import json
import logging
import os
import subprocess
import sys
import time
import traceback
import unittest.mock
from pathlib import Path
from typing import Any

RUNNING, SHUTOFF = 1, 5  # libvirt's domain states
GROUP = "qubes"
RUNNING_QUBES: set[str] = set()  # create_servers gives its socket to this group


def _ensure_group(workdir: Path) -> None:
    """Give this mount namespace (dom0's sandbox, never the host) a `qubes` group."""
    try:
        grp.getgrnam(GROUP)
        return
    except KeyError:
        pass
    copy = workdir / "group"
    copy.write_text(Path("/etc/group").read_text() + f"{GROUP}:x:64999:\n")
    subprocess.run(["mount", "--bind", str(copy), "/etc/group"], check=True, timeout=10)


def _configure(workdir: Path) -> None:
    import qubes.config

    base = str(workdir / "qubes")
    qubes.config.system_path["qubes_base_dir"] = base
    qubes.config.qubes_base_dir = base
    qubes.config.defaults["pool_configs"]["varlibqubes"]["dir_path"] = base
    import qubes.app

    # As Qubes' own tests do: there is no /var/lib/qubes/vm-kernels here.
    qubes.app.validate_kernel = lambda obj, key, value: None


def _app(workdir: Path) -> Any:
    """An offline app whose VM manager is a mock, as in Qubes' own tests."""
    import jinja2
    import qubes
    import qubes.app

    app = qubes.Qubes(str(workdir / "qubes.xml"), load=False, offline_mode=True)
    app.vmm = unittest.mock.Mock(spec=qubes.app.VMMConnection)
    # Core-admin's libvirt templates from its own tree (a host has them in /usr/share/qubes).
    templates = Path(qubes.__file__).resolve().parents[1] / "templates"
    app.env.loader = jinja2.FileSystemLoader([str(templates)])
    return app


def _load(workdir: Path) -> Any:
    """qubesd's start on an existing qubes.xml: every qube fires `domain-load`."""
    app = _app(workdir)
    app.load()
    return app


async def _build(workdir: Path, spec: list[dict[str, Any]]) -> Any:
    app = _app(workdir)
    app.load_initial_values()
    await app.setup_pools()
    app.default_kernel = "1.0"  # checked against dom0's kernel folder: patched out below
    app.default_netvm = None
    app.add_new_vm("TemplateVM", label="black", name="stock-template")
    app.default_template = "stock-template"
    app.default_pool = "varlibqubes"
    for qube in spec:
        vm = app.add_new_vm("AppVM", label="red", name=qube["name"])
        vm.maxmem = 0  # no qmemman here: core-admin then writes nothing into xenstore
        if qube.get("provides_network"):
            vm.provides_network = True
        if qube.get("netvm"):
            vm.netvm = qube["netvm"]
        # What create_on_disk makes first: the qube's folder (its firewall.xml goes there).
        Path(vm.dir_path).mkdir(parents=True, exist_ok=True)
    app.save()
    return app


def _mark(vm: Any, running: bool, domid: int) -> None:
    # Core-admin asks is_running() and the domain's id and state from libvirt on a real host;
    # the VM manager is a mock here. The id is the one its QubesDB daemons were started with.
    (RUNNING_QUBES.add if running else RUNNING_QUBES.discard)(vm.name)
    state = RUNNING if running else SHUTOFF
    vm._libvirt_domain = unittest.mock.Mock(
        **{"ID.return_value": domid, "state.return_value": [state, 0]},
        **{"isActive.return_value": running, "XMLDesc.return_value": "<domain/>"},
    )


def _patch_is_running() -> None:
    """Every qube answers from RUNNING_QUBES, from the first event on (qubes.xml loading)."""
    import qubes.vm.qubesvm

    qubes.vm.qubesvm.QubesVM.is_running = lambda self: self.name in RUNNING_QUBES


def _start(vm: Any, domid: int) -> None:
    """What core-admin's start does for QubesDB once the qube's daemon serves."""
    _mark(vm, True, domid)
    vm._qdb_connection = None
    vm.start_qdb_watch()
    vm.create_qdb_entries()  # fires domain-qdb-create


async def _stop(vm: Any, domid: int) -> None:
    await vm.fire_event_async("domain-shutdown")
    _mark(vm, False, domid)
    if vm._qdb_connection is not None:
        vm._qdb_connection.close()
        vm._qdb_connection = None


def _state(app: Any) -> dict[str, Any]:
    return {
        vm.name: {
            "qid": vm.qid,
            "ip": str(getattr(vm, "ip", "") or ""),
            "netvm": getattr(getattr(vm, "netvm", None), "name", None),
            "features": dict(vm.features.items()),
            "running": vm.is_running(),
        }
        for vm in app.domains
    }


async def _answer(app: Any, domids: dict[str, int], untrusted_line: str) -> dict[str, Any]:
    command = json.loads(untrusted_line)
    verb = command["verb"]
    if verb == "extensions":
        return {"extensions": sorted(type(e).__module__ + "." + type(e).__name__
                                     for e in app._extensions)}  # fmt: skip
    if verb == "state":
        return {"state": _state(app)}
    vm = app.domains[command["qube"]]
    if verb == "stop":
        await _stop(vm, domids[vm.name])
    elif verb == "start":
        _start(vm, domids[vm.name])
    else:
        raise ValueError(f"unknown verb {verb!r}")
    return {}


async def _serve(args: argparse.Namespace) -> None:
    try:
        await _serve_app(args)
    except BaseException:
        # Ended now: asyncio.run's shutdown would wait on the extension's threads first.
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)


async def _serve_app(args: argparse.Namespace) -> None:
    import qubes.api
    import qubes.api.admin

    workdir = Path(args.workdir)
    began = time.monotonic()
    spec = json.loads(args.spec)
    _patch_is_running()
    if args.load:  # qubesd restarting: the qubes run already while qubes.xml loads
        RUNNING_QUBES.update(args.running)
    app = _load(workdir) if args.load else await _build(workdir, spec)
    loaded = time.monotonic() - began
    domids = {qube["name"]: position for position, qube in enumerate(spec, start=1)}
    for vm in app.domains:
        if vm.name in args.running:
            _mark(vm, True, domids[vm.name])
    qubes.api.admin.QubesAdminAPI.SOCKNAME = args.socket
    servers = await qubes.api.create_servers(qubes.api.admin.QubesAdminAPI, app=app)
    for vm in app.domains:
        if vm.name not in args.running:
            continue
        if args.load:
            vm.start_qdb_watch()  # what core-admin does at load for a running qube
        else:
            _start(vm, domids[vm.name])
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()
    loop.add_reader(sys.stdin.fileno(), lambda: lines.put_nowait(sys.stdin.readline()))
    _reply({"ready": True, "build_seconds": loaded})
    while True:
        line = await lines.get()
        if not line:
            break
        try:
            _reply({"ok": True, **await _answer(app, domids, line)})
        except Exception as err:
            _reply({"ok": False, "error": f"{type(err).__name__}: {err}"})
    for server in servers:
        server.close()


def _reply(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument(
        "--spec", required=True, help="JSON list of {name, netvm, provides_network}"
    )
    parser.add_argument("--running", nargs="*", default=[])
    parser.add_argument("--load", action="store_true", help="load --workdir's qubes.xml")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(name)s %(levelname)s %(message)s"
    )
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("QUBES_PORTFWD_STATE_DIR", str(workdir / "portfwd"))
    _ensure_group(workdir)
    _configure(workdir)
    try:
        asyncio.run(_serve(args))
    except BaseException:
        code = 1
    else:
        code = 0
    sys.stdout.flush()
    sys.stderr.flush()
    # Not waiting for the extension's worker threads (each in a bounded wait on a QubesDB
    # that may be gone by now): the harness ends this process when its test ends.
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
