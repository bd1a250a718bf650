"""Jar lookup and cache logic of convmetrics.localkafka.jars, without Maven."""

from __future__ import annotations

from pathlib import Path

import pytest

from convmetrics.localkafka import jars
from convmetrics.localkafka.exceptions import JavaNotFoundError, KafkaJarsError


def test_pom_pins_the_kafka_version() -> None:
    pom = jars.render_pom()
    assert f"<artifactId>kafka_2.13</artifactId>\n      <version>{jars.KAFKA_VERSION}<" in pom
    assert "log4j-slf4j-impl" in pom


def test_kafka_home_libs_are_used(tmp_path: Path) -> None:
    (tmp_path / "libs").mkdir()
    (tmp_path / "libs" / "kafka_2.13-4.1.1.jar").write_bytes(b"")
    assert jars.kafka_libs(tmp_path) == tmp_path / "libs"


def test_kafka_home_without_jars_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KafkaJarsError, match="KAFKA_HOME"):
        jars.kafka_libs(tmp_path)


def test_complete_cache_is_reused_without_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_HOME", raising=False)
    monkeypatch.setenv("CONVMETRICS_CACHE_DIR", str(tmp_path))
    root = tmp_path / f"kafka-{jars.KAFKA_VERSION}"
    root.mkdir()
    (root / ".complete").write_text("done")
    monkeypatch.setattr("convmetrics.localkafka.jars.shutil.which", lambda name: None)  # no mvn needed
    assert jars.kafka_libs() == root / "libs"


def test_missing_maven_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_HOME", raising=False)
    monkeypatch.setenv("CONVMETRICS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("convmetrics.localkafka.jars.shutil.which", lambda name: None)
    notices: list[str] = []
    with pytest.raises(KafkaJarsError, match="install Maven"):
        jars.kafka_libs(on_download=notices.append)
    assert notices and "downloading" in notices[0]
    assert not (tmp_path / f"kafka-{jars.KAFKA_VERSION}" / ".complete").exists()


def test_missing_java_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr("convmetrics.localkafka.jars.shutil.which", lambda name: None)
    with pytest.raises(JavaNotFoundError, match="Java 17"):
        jars.find_java()
