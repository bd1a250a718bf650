"""`convmetrics.localregistry` without starting a JVM: the configured registry wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from convmetrics import localregistry
from convmetrics.localregistry import CCOMPAT_PATH, LocalRegistry, schema_registry_url


def test_a_configured_registry_is_used_and_nothing_started(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVMETRICS_SCHEMA_REGISTRY_URL", " http://registry:8081 ")

    def boom(*_: object, **__: object) -> None:
        raise AssertionError("started a registry although one is configured")

    monkeypatch.setattr(localregistry.server.LocalRegistry, "start", boom)
    with schema_registry_url() as url:
        assert url == "http://registry:8081"


def test_the_local_url_is_the_confluent_compatible_api() -> None:
    registry = LocalRegistry(port=18081)
    try:
        assert registry.url == f"http://127.0.0.1:18081{CCOMPAT_PATH}" and CCOMPAT_PATH == "/apis/ccompat/v7"
        assert not registry.running
    finally:
        registry.close()


def test_no_maven_and_no_cache_says_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONVMETRICS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(localregistry.server.shutil, "which", lambda _: None)
    with pytest.raises(localregistry.LocalRegistryError, match=r"install Maven.*SCHEMA_REGISTRY_URL"):
        localregistry.apicurio_home()
