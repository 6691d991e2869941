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
    # The lab's entry store is the QubesDB stand-in: the platform adapter shells share.
    "agent": {"model", "nft", "lab"},
    "lab": {"model", "nft", "natpmp", "store", "admin"},
    "admin": {"model", "planner", "store", "lab"},
    "tunnel": {"model", "natpmp", "lab"},
    "natd": {"model", "natpmp", "client", "lab"},
    "client": {"model"},
    "cli": {"model", "client"},
    "gui": {"model", "client"},
}
PURE = {"model", "planner", "nft", "natpmp"}
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
    if layer not in ALLOWED:
        return
    for name, line in _imports(path):
        parts = name.split(".")
        if parts[0] == "qubes_portfwd" and len(parts) > 1:
            other = parts[1]
            assert other in ALLOWED[layer] | {layer, "defaults"}, (
                f"{path.relative_to(PACKAGE)}:{line} imports {name}: {layer} may not use {other}"
            )
        elif layer in PURE:
            assert parts[0] not in IMPURE_MODULES, (
                f"{path.relative_to(PACKAGE)}:{line}: the pure core imports {name}"
            )
