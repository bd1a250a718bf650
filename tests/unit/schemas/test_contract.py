"""`convmetrics schemas check`: pins, FULL_TRANSITIVE compatibility, clear failures."""

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from convmetrics.cli import main
from schemas.compat import incompatibilities
from schemas.registry import SCHEMA_DIR


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    dst = tmp_path / "schemas"
    dst.mkdir()
    shutil.copy(SCHEMA_DIR / "fingerprints.json", dst)
    for sub in SCHEMA_DIR.iterdir():
        if sub.is_dir() and any(sub.glob("*.avsc")):
            shutil.copytree(sub, dst / sub.name)
    return dst


def _latest(folder: Path) -> tuple[int, dict[str, Any]]:
    files = sorted(folder.glob("conversation_event/v*.avsc"), key=lambda p: int(p.stem[1:]))
    return int(files[-1].stem[1:]), json.loads(files[-1].read_text())


def _add_version(folder: Path, schema: dict[str, Any]) -> int:
    n, _ = _latest(folder)
    (folder / "conversation_event" / f"v{n + 1}.avsc").write_text(json.dumps(schema))
    assert main(["schemas", "pin", "--dir", str(folder)]) == 0
    return n + 1


def test_shipped_schemas_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schemas", "check"]) == 0
    assert "OK" in capsys.readouterr().out


def test_new_field_without_default_is_rejected(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    n, schema = _latest(folder)
    candidate = copy.deepcopy(schema)
    candidate["fields"].append({"name": "priority", "type": "int"})
    new = _add_version(folder, candidate)
    assert main(["schemas", "check", "--dir", str(folder)]) == 1
    err = capsys.readouterr().err
    assert f"conversation_event: data written with v{n} cannot be read with v{new}" in err
    assert "ConversationEvent.priority" in err and "no default" in err


def test_optional_field_with_default_is_accepted(folder: Path) -> None:
    _, schema = _latest(folder)
    candidate = copy.deepcopy(schema)
    candidate["fields"].append({"name": "priority", "type": ["null", "int"], "default": None})
    _add_version(folder, candidate)
    assert main(["schemas", "check", "--dir", str(folder)]) == 0


def test_removing_a_required_field_breaks_backward_reading(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, schema = _latest(folder)
    candidate = copy.deepcopy(schema)
    candidate["fields"] = [f for f in candidate["fields"] if f["name"] != "account"]
    _add_version(folder, candidate)
    assert main(["schemas", "check", "--dir", str(folder)]) == 1
    assert "ConversationEvent.account" in capsys.readouterr().err


def test_changed_published_version_is_rejected(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = folder / "conversation_event" / "v1.avsc"
    schema = json.loads(path.read_text())
    path.write_text(json.dumps(schema, indent=4))  # the same schema, laid out otherwise
    assert main(["schemas", "check", "--dir", str(folder)]) == 0
    # a doc (or a default, an alias) is not in the fingerprint, but readers fill in defaults
    # and a registry takes another text as another version: the file's own pin says so
    schema["fields"][0]["doc"] = "docs do not change the canonical form"
    path.write_text(json.dumps(schema))
    assert main(["schemas", "check", "--dir", str(folder)]) == 1
    assert "conversation_event v1: published schema file changed" in capsys.readouterr().err
    schema["fields"].append({"name": "x", "type": ["null", "int"], "default": None})
    path.write_text(json.dumps(schema))
    assert main(["schemas", "check", "--dir", str(folder)]) == 1
    assert "conversation_event v1: published schema changed" in capsys.readouterr().err


def test_unpinned_version_is_rejected(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, schema = _latest(folder)
    candidate = copy.deepcopy(schema)
    candidate["fields"].append({"name": "p", "type": ["null", "int"], "default": None})
    n, _ = _latest(folder)
    (folder / "conversation_event" / f"v{n + 1}.avsc").write_text(json.dumps(candidate))
    assert main(["schemas", "check", "--dir", str(folder)]) == 1
    assert "not pinned" in capsys.readouterr().err


def test_a_version_that_does_not_load_is_named_and_its_subjects_pins_are_not_called_gone(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n = len(list(folder.glob("metric_rows/v*.avsc")))
    bad = {"type": "record", "name": "MetricRow", "fields": [{"name": "y", "type": "long", "default": "abc"}]}
    (folder / "metric_rows" / f"v{n + 1}.avsc").write_text(json.dumps(bad))
    assert main(["schemas", "check", "--dir", str(folder)]) == 1
    err = capsys.readouterr().err
    assert f"v{n + 1}" in err and "file is gone" not in err, err


@pytest.mark.parametrize(("branches", "default"), [(["long", "null"], None), (["null", "long"], 5)])
def test_a_union_default_not_of_its_first_branch_is_refused(
    folder: Path, capsys: pytest.CaptureFixture[str], branches: list[str], default: Any
) -> None:
    """The Avro spec's rule, which fastavro lets pass and Java readers (Kafka Connect,
    Flink) hold: a pipeline's reader would refuse the schema."""
    _, schema = _latest(folder)
    candidate = copy.deepcopy(schema)
    candidate["fields"].append({"name": "priority", "type": branches, "default": default})
    new = _add_version(folder, candidate)
    assert main(["schemas", "check", "--dir", str(folder)]) == 1
    err = capsys.readouterr().err
    assert (
        f"conversation_event v{new}: ConversationEvent.priority: default {default!r} is not of the union's "
        in err
    )


def _channel_record(schema: dict[str, Any]) -> dict[str, Any]:
    """The Channel record inside a conversation_event schema (defined once, in data)."""
    data = next(f for f in schema["fields"] if f["name"] == "data")
    channel = next(f for f in data["type"]["fields"] if f["name"] == "channel")
    found: dict[str, Any] = next(t for t in channel["type"] if isinstance(t, dict))
    assert found["name"] == "Channel"
    return found


@pytest.mark.parametrize("where", ["root", "nested"])
@pytest.mark.parametrize("alias", [None, "full", "relative"])
def test_a_named_types_new_namespace_is_refused_unless_its_old_name_is_an_alias(
    folder: Path, capsys: pytest.CaptureFixture[str], where: str, alias: str | None
) -> None:
    """Resolution compares unqualified names (the spec; Java too), so a new namespace is
    compatible data-wise; generated code and RecordNameStrategy registries know a type by
    its full name: the check asks for the old one as an alias. A relative alias is in the
    type's new namespace: not the old name."""
    _, schema = _latest(folder)
    candidate = copy.deepcopy(schema)
    named = candidate if where == "root" else _channel_record(candidate)
    old_full = f"io.convmetrics.events.{named['name']}"
    named["namespace"] = "io.convmetrics.moved"
    if alias is not None:
        named["aliases"] = [old_full if alias == "full" else named["name"]]
    new = _add_version(folder, candidate)
    code = main(["schemas", "check", "--dir", str(folder)])
    err = capsys.readouterr().err
    said = (
        f"conversation_event v{new}: {named['name']}: its full name changed from {old_full} to "
        f"io.convmetrics.moved.{named['name']}; keep it, or give the new one the alias '{old_full}'"
    )
    assert (said in err) == (alias != "full"), err
    # the root's namespace is its nested types' too: they moved with it, each named
    nested_moved = "Conversation: its full name changed from io.convmetrics.events.Conversation" in err
    assert nested_moved == (where == "root")
    assert code == (0 if alias == "full" and where == "nested" else 1)


@pytest.mark.parametrize("alias", ["io.convmetrics.events.ConversationEvent", "ConversationEvent", None])
def test_a_renamed_record_reads_its_old_name_by_an_alias_full_or_relative(alias: str | None) -> None:
    """A relative alias is in the type's namespace (the spec): here the old full name. (One
    direction: an old reader never reads the new name, so no subject may rename.)"""
    _, schema = _latest(SCHEMA_DIR)
    renamed = {**copy.deepcopy(schema), "name": "InboxEvent"}
    if alias is not None:
        renamed["aliases"] = [alias]
    problems = [str(p) for p in incompatibilities(schema, renamed)]
    if alias is None:
        assert problems == [
            "ConversationEvent: record io.convmetrics.events.ConversationEvent cannot be read as "
            "io.convmetrics.events.InboxEvent"
        ]
    else:
        assert problems == []


def test_compat_rules() -> None:
    rec = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]}
    promoted = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "long"}]}
    assert incompatibilities(rec, promoted) == []
    assert incompatibilities(promoted, rec)[0].path == "R.a"
    enum_w = {"type": "enum", "name": "E", "symbols": ["A", "B"]}
    enum_r = {"type": "enum", "name": "E", "symbols": ["A"]}
    assert incompatibilities(enum_w, enum_r)
    assert incompatibilities(enum_w, {**enum_r, "default": "A"}) == []
    assert incompatibilities("string", ["null", "string"]) == []
    assert incompatibilities(["null", "string"], "string")
