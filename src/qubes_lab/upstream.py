"""Qubes' own sources, pinned: found beside the project or fetched, verified, unpacked once.

Tests run real Qubes code (core-admin, the qvm-* client, QubesDB, qrexec policy, the
qubes-firewall worker) from these trees. The archives come from `$QUBES_UPSTREAM_DIR`, else
`../shared/qubes-upstream` beside the repository (checked against its `SHA256SUMS`), else
GitHub's archive of the pinned commit. Either way the unpacked files must hash to the
content digest pinned here, so a fetched tree is the same code as the shared one.
"""

import hashlib
import io
import os
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
FETCH_TIMEOUT = 60.0


@dataclass(frozen=True)
class Component:
    name: str
    commit: str
    content_sha256: str  # over "path\0sha256(file)\n" lines, sorted, without the top folder


COMPONENTS = {
    c.name: c
    for c in (
        Component(
            "qubes-core-admin",
            "68fc8b6bb9176dafac77471efa8599f6dc04da70",
            "c6e39d0a51a6cde3fd0ecba428e9b48a1852747e96d193a3d8361ce544bcb276",
        ),
        Component(
            "qubes-core-admin-client",
            "4dc2cadfe17f25a0bf93c6b41bfea8cdc68adeff",
            "2abe243c18d5c65e20c67b0704a400218ed7cf4f25f4518d88f9e67e77491f7e",
        ),
        Component(
            "qubes-core-agent-linux",
            "35a5720b480026778884397e0eb81f607d3d7365",
            "b6b8e3ee6a3292fb34dc266813aec36807cc2a7de8d419bfa465f8ab9380e477",
        ),
        Component(
            "qubes-core-qubesdb",
            "aeb3c8d8486673636964bc3beb4819d981dd3920",
            "95cd54223d82212fd55a264c6c9e055e47dc62e18d8b92290b0e9ecf0cb52c26",
        ),
        Component(
            "qubes-core-vchan-socket",
            "e1da6dacf19056bfd4be4ecc43521bcba14e206d",
            "d3d6ecfedfbeb53c67211c2b38635cdf51ee910aca2303f69946139a1a4357d2",
        ),
        Component(
            "qubes-core-qrexec",
            "cc801b8f630a65dfb2855b829bfc070f6e82f26a",
            "432529e154f3095231dc57acbb26813b15f4294f712c20a5089b01a9afef6b8b",
        ),
        Component(
            "qubes-manager",
            "779b76c07e8314d9c47e502ad83d4fa635617e7e",
            "d5516c6f1d23cbb9c42e0eb84d35089273f720f341af195146ed10d298a9480c",
        ),
    )
}


class UpstreamUnavailable(RuntimeError):
    """Neither the shared archives nor Qubes' repositories gave verified sources."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("QUBES_UPSTREAM_CACHE", Path(base) / "qubes-portfwd" / "upstream"))


def shared_dir() -> Path:
    return Path(
        os.environ.get("QUBES_UPSTREAM_DIR", REPOSITORY_ROOT.parent / "shared" / "qubes-upstream")
    )


def _members(archive: tarfile.TarFile) -> list[tuple[str, tarfile.TarInfo]]:
    """(path without the top folder, member) of every file and symlink."""
    found = []
    for member in archive.getmembers():
        _, _, relative = member.name.partition("/")
        if relative and (member.isfile() or member.issym()):
            found.append((relative, member))
    return sorted(found, key=lambda item: item[0])


def content_digest(archive_bytes: bytes) -> str:
    digest = hashlib.sha256()
    with tarfile.open(fileobj=io.BytesIO(archive_bytes)) as archive:
        for relative, member in _members(archive):
            if member.issym():
                body = b"-> " + member.linkname.encode()
            else:
                handle = archive.extractfile(member)
                assert handle is not None
                body = handle.read()
            line = f"{relative}\0{hashlib.sha256(body).hexdigest()}\n"
            digest.update(line.encode())
    return digest.hexdigest()


def _shared_archive(component: Component) -> bytes | None:
    folder = shared_dir()
    archive = folder / f"{component.name}.tar.gz"
    sums = folder / "SHA256SUMS"
    if not archive.is_file() or not sums.is_file():
        return None
    data = archive.read_bytes()
    listed = {
        name.strip(): digest
        for digest, _, name in (line.partition("  ") for line in sums.read_text().splitlines())
    }
    if listed.get(archive.name) != hashlib.sha256(data).hexdigest():
        raise UpstreamUnavailable(f"{archive}: checksum differs from {sums}")
    return data


def _fetched_archive(component: Component) -> bytes:
    url = f"https://codeload.github.com/QubesOS/{component.name}/tar.gz/{component.commit}"
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as reply:
            return reply.read()
    except OSError as err:
        raise UpstreamUnavailable(
            f"{component.name}: no archive in {shared_dir()} and fetching {url} failed ({err})"
        ) from None


def source_tree(name: str) -> Path:
    """The unpacked, verified tree of one pinned component (unpacked once per cache)."""
    component = COMPONENTS[name]
    target = cache_root() / f"{name}-{component.content_sha256[:16]}"
    if (target / ".verified").exists():
        return target
    data = _shared_archive(component) or _fetched_archive(component)
    if content_digest(data) != component.content_sha256:
        raise UpstreamUnavailable(f"{name}: unpacked content differs from the pinned commit")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        staging = Path(scratch) / "tree"
        staging.mkdir()
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            for relative, member in _members(archive):
                member.name = relative
                archive.extract(member, staging, filter="tar")
        (staging / ".verified").write_text(component.commit + "\n")
        try:
            staging.rename(target)
        except OSError:  # another process unpacked it first
            if not (target / ".verified").exists():
                raise
    return target
