"""Building real QubesDB: once per pin and interpreter; refused with the reason, never guessed."""

import hashlib
from pathlib import Path

import pytest

from qubes_lab import qubesdb_build, upstream


def test_the_build_key_follows_both_pins() -> None:
    key = qubesdb_build.build_key()
    pinned = upstream.COMPONENTS[qubesdb_build.VCHAN]
    try:
        upstream.COMPONENTS[qubesdb_build.VCHAN] = upstream.Component(
            pinned.name, pinned.commit, "0" * 64
        )
        assert qubesdb_build.build_key() != key
    finally:
        upstream.COMPONENTS[qubesdb_build.VCHAN] = pinned
    assert qubesdb_build.build_key() == key


def test_missing_build_tools_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUBES_UPSTREAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    with pytest.raises(upstream.UpstreamUnavailable, match="needs gcc, make, pkg-config"):
        qubesdb_build.build()
    assert not (tmp_path / "cache").exists()


def test_unverified_sources_are_reported_as_not_run_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "qubes-core-qubesdb.tar.gz").write_bytes(b"not the pinned archive")
    listed = hashlib.sha256(b"something else").hexdigest()
    (shared / "SHA256SUMS").write_text(f"{listed}  qubes-core-qubesdb.tar.gz\n")
    monkeypatch.setenv("QUBES_UPSTREAM_DIR", str(shared))
    monkeypatch.setenv("QUBES_UPSTREAM_CACHE", str(tmp_path / "cache"))

    with pytest.raises(pytest.skip.Exception, match=r"real QubesDB not available: .*checksum"):
        request.getfixturevalue("real_qubesdb")
    assert not list((tmp_path / "cache").glob("build-qubesdb-*"))


def test_a_build_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Shares the pinned sources' cache when they are there; the build itself is in tmp_path.
    sources = upstream.cache_root()
    if not (upstream.shared_dir() / "SHA256SUMS").exists() and not any(sources.glob("qubes-*")):
        pytest.skip(f"no pinned Qubes sources in {upstream.shared_dir()}")
    for name in (qubesdb_build.QUBESDB, qubesdb_build.VCHAN):
        upstream.source_tree(name)
    cache = tmp_path / "cache"
    cache.mkdir()
    for tree in sources.glob("qubes-core-*"):
        (cache / tree.name).symlink_to(tree)
    monkeypatch.setenv("QUBES_UPSTREAM_CACHE", str(cache))

    first = qubesdb_build.build()
    stamp = (first.root / ".built").stat().st_mtime_ns
    again = qubesdb_build.build()

    assert again == first and (first.root / ".built").stat().st_mtime_ns == stamp
    assert first.daemon.is_file() and (first.bin_dir / "qubesdb-read").exists()
    assert list(first.python_dir.glob("qubesdb*.so"))
    assert [p.name for p in cache.iterdir() if p.name.startswith("build-qubesdb")] == [
        first.root.name
    ]
