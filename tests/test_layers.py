"""The layers of DESIGN.md §7, enforced: a package imports only from layers below it."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "src" / "qubes_portfwd"

# Each package and what it may import from this project (besides itself and `defaults`).
ALLOWED: dict[str, set[str]] = {
    "model": set(),
    "store": {"model"},
    "planner": {"model"},
    "nft": {"model"},
    "natpmp": {"model"},
    "ports": {"model"},
    "db": {"model", "ports"},
    "adapters": {"model", "ports", "client"},
    "netlink": {"nft"},  # the kernel: notifications read, nf_tables batches encoded
    "heap": set(),  # glibc's malloc_trim (ctypes only)
    "agent": {"model", "nft", "ports", "db", "adapters", "netlink", "heap"},
    "controller": {"model", "planner", "store", "ports", "db", "heap"},
    "qrexec": {"model", "controller"},  # our dom0 qrexec service, served inside qubesd
    "dom0": {"model", "planner", "store", "ports", "db", "controller", "adapters", "qrexec"},
    "tunnel": {"model", "natpmp", "ports", "db", "adapters"},
    "natd": {"model", "natpmp", "client", "ports", "adapters", "netlink"},
    "client": {"model"},
    "cli": {"model", "client"},
    "gui": {"model", "client"},
}
PURE = {"model", "planner", "nft", "natpmp", "ports"}
# What the product may never import: its emulator, its tests, its benchmarks.
FOREIGN = {"qubes_lab", "tests", "bench"}
# Adapters are chosen at a composition root only: a program's `__main__`, or the dom0
# extension's module (qubesd loads it by its entry point: it has no `__main__`).
ADAPTERS = "adapters"
EXTENSION_ROOT = "dom0/extension.py"
IMPURE_MODULES = {"subprocess", "socket", "asyncio", "time", "os", "shutil", "threading"}


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in one file of the package."""
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level + (1 if path.name == "__init__.py" else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((name, node.lineno))
    return found


def _files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down_the_layers(path: Path) -> None:
    layer = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    if layer in {"__init__", "defaults"}:
        layer = "model"  # the package's root modules may import nothing of ours but defaults
    assert layer in ALLOWED, f"{layer}: a package the layer table does not place"
    relative = str(path.relative_to(PACKAGE))
    for name, line in _imports(path):
        parts = name.split(".")
        assert parts[0] not in FOREIGN, f"{relative}:{line}: the product imports {name}"
        if parts[0] == "qubes_portfwd" and len(parts) == 1:
            raise AssertionError(f"{relative}:{line}: import a module, not the package root")
        if parts[0] == "qubes_portfwd" and len(parts) > 1:
            other = parts[1]
            if other == ADAPTERS and layer != ADAPTERS:
                assert path.name == "__main__.py" or relative == EXTENSION_ROOT, (
                    f"{relative}:{line} imports {name}: only a composition root picks an adapter"
                )
            assert other in ALLOWED[layer] | {layer, "defaults"}, (
                f"{path.relative_to(PACKAGE)}:{line} imports {name}: {layer} may not use {other}"
            )
        elif layer in PURE:
            assert parts[0] not in IMPURE_MODULES, (
                f"{path.relative_to(PACKAGE)}:{line}: the pure core imports {name}"
            )
