"""The pinned Qubes sources: verified before use, unpacked once, refused when they differ."""

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from qubes_lab import upstream


def _archive(files: dict[str, bytes], top: str = "qubes-core-qubesdb") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, body in files.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


def _shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes, listed: bytes) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "qubes-core-qubesdb.tar.gz").write_bytes(data)
    digest = hashlib.sha256(listed).hexdigest()
    (shared / "SHA256SUMS").write_text(f"{digest}  qubes-core-qubesdb.tar.gz\n")
    monkeypatch.setenv("QUBES_UPSTREAM_DIR", str(shared))
    monkeypatch.setenv("QUBES_UPSTREAM_CACHE", str(tmp_path / "cache"))


def test_the_content_digest_ignores_the_top_folder_and_compression() -> None:
    files = {"a.c": b"int a;\n", "python/qubesdb.c": b"x"}
    assert upstream.content_digest(_archive(files)) == upstream.content_digest(
        _archive(files, top="qubes-core-qubesdb-aeb3c8d")
    )
    assert upstream.content_digest(_archive(files)) != upstream.content_digest(
        _archive({**files, "a.c": b"int b;\n"})
    )


def test_an_archive_that_differs_from_its_checksum_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _archive({"a.c": b"int a;\n"})
    _shared(tmp_path, monkeypatch, data, listed=b"something else")

    with pytest.raises(upstream.UpstreamUnavailable, match="checksum"):
        upstream.source_tree("qubes-core-qubesdb")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_an_archive_of_other_code_is_refused_even_with_a_matching_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _archive({"a.c": b"int a;\n"})
    _shared(tmp_path, monkeypatch, data, listed=data)

    with pytest.raises(upstream.UpstreamUnavailable, match="differs from the pinned commit"):
        upstream.source_tree("qubes-core-qubesdb")


def test_the_shared_sources_unpack_once_and_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUBES_UPSTREAM_CACHE", str(tmp_path / "cache"))
    if not (upstream.shared_dir() / "SHA256SUMS").exists():
        pytest.skip(f"no pinned Qubes sources in {upstream.shared_dir()}")

    tree = upstream.source_tree("qubes-core-qubesdb")

    assert (tree / "python").is_dir() and (tree / "daemon").is_dir()
    assert (tree / ".verified").read_text().strip() == upstream.COMPONENTS[
        "qubes-core-qubesdb"
    ].commit
    assert upstream.source_tree("qubes-core-qubesdb") == tree
