"""localplane.dynamodb without running anything: the cache entry's pins and the file-set digest."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsrace import settings as settings_mod
from dnsrace.localplane import binaries, dynamodb


def test_build_is_pinned_by_version_and_digests() -> None:
    build = dynamodb.dynamodb_build()
    assert build.version == dynamodb.VERSION
    assert f"lib-sha256:{dynamodb.LIB_DIGEST}" in build.packages
    assert f"jar-sha256:{dynamodb.JAR_SHA256}" in build.packages
    assert build.checks[dynamodb.LAUNCHER].expect == dynamodb.VERSION
    assert build.install_dir(Path("/c")).name.startswith(f"dynamodb-local-{dynamodb.VERSION}-")


def test_lib_digest_covers_names_and_contents(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "native").mkdir()
    (tmp_path / "lib" / "a.jar").write_bytes(b"a")
    first = dynamodb.lib_digest(tmp_path)
    (tmp_path / "lib" / "a.jar").write_bytes(b"b")
    assert dynamodb.lib_digest(tmp_path) != first
    (tmp_path / "lib" / "a.jar").rename(tmp_path / "lib" / "c.jar")
    assert dynamodb.lib_digest(tmp_path) not in (first,)


def test_locate_says_what_to_run_when_missing(tmp_path: Path) -> None:
    cfg = settings_mod.Settings(paths=settings_mod.Paths(cache_dir=tmp_path))
    with pytest.raises(binaries.SetupError, match="make setup"):
        dynamodb.locate(cfg)
