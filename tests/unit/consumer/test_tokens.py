"""API tokens: the tokens file, its reloads, and what each scope may read over HTTP."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from consumer.exceptions import ConfigError
from consumer.serve.api import create_app
from consumer.serve.tokens import (
    GLOBAL,
    Expired,
    Scope,
    Tokens,
    digest,
    expiry_from,
    new_token,
    parse_tokens,
)
from consumer.store.sqlite import SqliteStore
from unit.consumer.test_api import EVENTS, fill  # accounts 7 and 8

GLOBAL_TOKEN, SCOPED_TOKEN, OTHER_TOKEN = "global-token-1", "scoped-token-7", "scoped-token-99"


def write(path: Path, text: str) -> None:
    """Replace the file atomically (write, then rename over it), as deployments do."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    write(
        path,
        f"# who reads what\n{digest(GLOBAL_TOKEN)} *\n\n{digest(SCOPED_TOKEN)} 7  # tenant 7\n"
        f"{digest(OTHER_TOKEN)} 99,100\n",
    )
    return path


def test_the_file_maps_hashes_to_scopes(tokens_file: Path) -> None:
    tokens = Tokens(tokens_file)
    assert tokens.scope_of(GLOBAL_TOKEN) == GLOBAL
    assert tokens.scope_of(SCOPED_TOKEN) == Scope(frozenset({7}))
    assert tokens.scope_of(OTHER_TOKEN) == Scope(frozenset({99, 100}))
    assert tokens.scope_of("nope") is None and tokens.scope_of(digest(GLOBAL_TOKEN)) is None  # not the hash


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("plaintext-token *", "64 lower-case hex"),
        (f"{digest('x').upper()} *", "64 lower-case hex"),
        (f"{digest('x')}", "1 field"),
        (f"{digest('x')} 7 8", "third field must be expires="),
        (f"{digest('x')} 7 expires=2027-03-01 8", "4 field"),
        (f"{digest('x')} 7 expires=2027-03-01T12:00", "a time with Z or an offset"),  # no zone: whose noon?
        (f"{digest('x')} 7 expires=next-week", "expires must be a UTC date"),
        (f"{digest('x')} 7,acme", "scope must be"),
        (f"{digest('x')} **", "scope must be"),
    ],
)
def test_a_bad_line_refuses_the_start_naming_it(tmp_path: Path, line: str, says: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# ok\n{digest('fine')} *\n{line}\n")
    with pytest.raises(ConfigError, match=f"line 3: .*{says}"):
        Tokens(path)


def test_a_changed_file_takes_effect_and_a_bad_one_keeps_the_tokens_in_force(
    tokens_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = Tokens(tokens_file, recheck=0)
    write(tokens_file, f"{digest('fresh')} 7\n")  # the global token revoked, a new one granted
    assert tokens.scope_of(GLOBAL_TOKEN) == GLOBAL  # the first check sees the change, ...
    assert tokens.scope_of(GLOBAL_TOKEN) is None  # ... the next, with the file as it was, takes it
    assert tokens.scope_of("fresh") == Scope(frozenset({7}))
    with caplog.at_level(logging.ERROR, "consumer.serve.tokens"):
        write(tokens_file, f"{digest('fresh')} 7\nbroken line here\n")
        for _ in range(3):
            assert tokens.scope_of("fresh") == Scope(frozenset({7}))  # kept
    assert "line 2" in caplog.text and "stay" in caplog.text


def test_a_file_caught_half_written_is_not_taken(tokens_file: Path) -> None:
    """Rewritten in place (`>`: emptied, then written), a check between the two sees no
    token, or an account id cut short: a change is taken once it held for a whole check."""
    tokens = Tokens(tokens_file, recheck=0)
    final = f"{digest(SCOPED_TOKEN)} 1234\n"
    tokens_file.write_text(final[:-3])  # "<hash> 12": cut short
    assert tokens.scope_of(SCOPED_TOKEN) == Scope(frozenset({7}))  # not taken: still changing?
    tokens_file.write_text(final)  # the rest written (another size)
    assert tokens.scope_of(SCOPED_TOKEN) == Scope(frozenset({7}))  # changed again: waits again
    assert tokens.scope_of(SCOPED_TOKEN) == Scope(frozenset({1234}))  # held: taken, whole


def test_a_reload_that_failed_is_tried_again_until_it_reads(
    tokens_file: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revocation installed as a file the service cannot read yet (root's, 0600): once it
    can (a chown changes no content), the revocation takes effect; the refusal is said once."""
    tokens = Tokens(tokens_file, recheck=0)
    read = Tokens._read
    refusals = iter([True, True])

    def unreadable_for_a_while(self: Tokens) -> list[Any]:
        if next(refusals, False):
            raise ConfigError(f"tokens file {self.path}: cannot read it: [Errno 13] Permission denied")
        return read(self)

    monkeypatch.setattr(Tokens, "_read", unreadable_for_a_while)
    with caplog.at_level(logging.ERROR, "consumer.serve.tokens"):
        write(tokens_file, f"{digest(SCOPED_TOKEN)} 7\n")  # the global token revoked
        for _ in range(3):  # the change seen, then two reads refused
            assert tokens.scope_of(GLOBAL_TOKEN) == GLOBAL  # kept while it cannot be read
    assert caplog.text.count("Permission denied") == 1
    assert tokens.scope_of(GLOBAL_TOKEN) is None and tokens.scope_of(SCOPED_TOKEN) == Scope(frozenset({7}))


def test_a_chmod_or_chown_is_a_change_to_read_again(tokens_file: Path) -> None:
    before = Tokens(tokens_file)._stat()
    tokens_file.chmod(0o640)
    assert Tokens(tokens_file)._stat() != before


def test_token_new_prints_a_line_that_grants_it(tmp_path: Path) -> None:
    token, line = new_token("42,43")
    assert token not in line and line.endswith(" 42,43")
    path = tmp_path / "tokens"
    path.write_text(line + "\n")
    assert Tokens(path).scope_of(token) == Scope(frozenset({42, 43}))
    with pytest.raises(ValueError, match="scope must be"):
        new_token("acme")


def test_token_new_add_to_appends_a_line_that_grants_it_and_json_says_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`token new --add-to FILE`: a new file is made 0600, an existing one keeps its mode and
    lines (one without a final newline too); `--json` is one object a script reads."""
    from convmetrics.cli import main

    path = tmp_path / "tokens"
    assert main(["token", "new", "--accounts", "42", "--add-to", str(path), "--note", "tenant 42"]) == 0
    first = capsys.readouterr().out.split("stored nowhere): ")[1].split()[0]
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_text().endswith("  # tenant 42\n")
    path.write_text(path.read_text().rstrip("\n"))  # edited by hand: no final newline
    path.chmod(0o640)
    assert main(["token", "new", "--json", "--add-to", str(path)]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["scope"] == "*" and made["line"] == f"{made['sha256']} *" and made["added_to"] == str(path)
    assert made["sha256"] == digest(made["token"])
    tokens = Tokens(path)
    assert tokens.scope_of(first) == Scope(frozenset({42})) and tokens.scope_of(made["token"]) == GLOBAL
    assert path.stat().st_mode & 0o777 == 0o640 and len(path.read_text().splitlines()) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["tokens"]  # no temporary file left


def test_token_new_add_to_writes_the_file_in_place_through_a_symlink(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same inode (so its owner, a service user's, and its mode stay), and a symlink's
    target is the file written, the link left a link."""
    from convmetrics.cli import main

    real = tmp_path / "real"
    real.write_text(f"{digest(GLOBAL_TOKEN)} *\n")
    link = tmp_path / "tokens"
    link.symlink_to(real)
    inode = real.stat().st_ino
    assert main(["token", "new", "--accounts", "7", "--add-to", str(link)]) == 0
    assert link.is_symlink() and real.stat().st_ino == inode
    assert len(real.read_text().splitlines()) == 2
    token = capsys.readouterr().out.split("stored nowhere): ")[1].split()[0]
    assert Tokens(link).scope_of(token) == Scope(frozenset({7}))


MARCH = 1_803_859_200  # 2027-03-01T00:00:00Z


def test_a_token_is_accepted_until_its_expiry_and_refused_from_it_on(tmp_path: Path) -> None:
    """`expires=` a date is its 00:00 UTC, a time with Z or an offset that instant; at the
    instant itself the token is refused, saying when it expired."""
    path = tmp_path / "tokens"
    path.write_text(
        f"{digest('dated')} 7 expires=2027-03-01  # tenant 7, a quarter\n"
        f"{digest('timed')} * expires=2027-03-01T01:00:00+01:00\n"
        f"{digest('forever')} 8\n"
    )
    tokens = Tokens(path)
    for token in ("dated", "timed"):  # the same instant, written two ways
        assert tokens.scope_of(token, now=MARCH - 1) in (Scope(frozenset({7})), GLOBAL)
        assert tokens.scope_of(token, now=MARCH) == Expired(MARCH)
    assert str(Expired(MARCH)) == "token expired at 2027-03-01T00:00:00Z"
    assert tokens.scope_of("forever", now=MARCH * 10) == Scope(frozenset({8}))
    assert tokens.scope_of("unknown", now=0) is None


def test_expires_takes_a_lifetime_or_a_utc_time_in_the_future() -> None:
    now = MARCH - 86400
    assert expiry_from("1d", now) == MARCH and expiry_from("24h", now) == MARCH
    assert expiry_from("2027-03-01", now) == MARCH and expiry_from("2027-03-01T00:00:00Z", now) == MARCH
    for bad, says in (
        ("2027-02-28", "not in the future"),
        ("2027-02-28T00:00:00Z", "not in the future"),  # now itself
        ("0d", "not in the future"),
        ("90", "a lifetime (90d, 12h)"),
        ("2w", "a lifetime (90d, 12h)"),
        ("2027-03-01T12:00", "a lifetime (90d, 12h)"),
    ):
        with pytest.raises(ValueError, match=re.escape(says)):
            expiry_from(bad, now)


def test_token_new_expires_writes_the_time_on_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from convmetrics.cli import main

    path = tmp_path / "tokens"
    assert (
        main(["token", "new", "--accounts", "42", "--expires", "2099-01-01", "--json", "--add-to", str(path)])
        == 0
    )
    made = json.loads(capsys.readouterr().out)
    assert made["expires"] == "2099-01-01T00:00:00Z" and made["scope"] == "42"
    assert made["line"] == f"{made['sha256']} 42 expires=2099-01-01T00:00:00Z"
    tokens = Tokens(path)
    assert tokens.scope_of(made["token"]) == Scope(frozenset({42}))
    assert tokens.scope_of(made["token"], now=4_070_908_800) == Expired(4_070_908_800)  # 2099-01-01
    assert main(["token", "new", "--expires", "2020-01-01"]) == 2
    assert "--expires: '2020-01-01' is not in the future" in capsys.readouterr().err
    assert main(["token", "new", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["expires"] is None


def test_a_token_on_two_lines_is_refused_naming_both() -> None:
    """Which scope would hold? A line added to narrow a token kept its wider one."""
    text = f"{digest('t')} *\n# narrowed\n{digest('t')} 3\n"
    with pytest.raises(ConfigError, match="tokens line 3: the same token as line 1; a token has one scope"):
        parse_tokens(text, "tokens")


def test_token_new_add_to_refuses_a_file_that_is_already_bad(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from convmetrics.cli import main

    path = tmp_path / "tokens"
    path.write_text("plaintext-token *\n")
    assert main(["token", "new", "--add-to", str(path)]) == 2
    assert f"tokens file {path} line 1: the first field must be" in capsys.readouterr().err
    assert path.read_text() == "plaintext-token *\n"


@pytest.fixture
def api(tmp_path: Path, tokens_file: Path) -> TestClient:
    db = tmp_path / "m.db"
    fill(db, EVENTS)
    return TestClient(create_app(lambda: SqliteStore(str(db)), tokens=Tokens(tokens_file)))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic dXNlcjpwdw=="}, {"Authorization": "Bearer"}, bearer("unknown")],
)
def test_no_known_bearer_token_is_a_401_with_the_challenge(api: TestClient, headers: dict[str, str]) -> None:
    for path in ("/v1/closures?by=account&window=all", "/v1/summary", "/metrics"):
        r = api.get(path, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), path


def test_an_expired_token_is_a_401_that_says_so(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    fill(db, EVENTS)
    path = tmp_path / "tokens"
    path.write_text(f"{digest('old')} * expires=2020-01-01\n{digest('new')} * expires=2099-01-01\n")
    api = TestClient(create_app(lambda: SqliteStore(str(db)), tokens=Tokens(path)))
    r = api.get("/v1/summary", headers=bearer("old"))
    assert r.status_code == 401 and r.json()["reason"] == "token expired at 2020-01-01T00:00:00Z"
    assert r.json()["error"].startswith("token expired at 2020-01-01T00:00:00Z: this API needs a token")
    assert (
        'error="invalid_token", error_description="token expired at 2020-01-01T00:00:00Z"'
        in (r.headers["www-authenticate"])
    )
    assert api.get("/v1/summary", headers=bearer("new")).status_code == 200
    assert api.get("/v1/summary", headers=bearer("nope")).json()["reason"] == "unknown token"


def test_pages_without_data_stay_open(api: TestClient) -> None:
    for path in ("/", "/static/dashboard.js", "/healthz", "/readyz"):
        assert api.get(path).status_code == 200, path


def test_a_global_token_reads_everything(api: TestClient) -> None:
    h = bearer(GLOBAL_TOKEN)
    rows = api.get("/v1/closures", params={"by": "account", "window": "all"}, headers=h).json()["rows"]
    assert [r["key"] for r in rows] == ["7", "8"]
    assert (
        api.get("/v1/closures", params={"by": "channel_type", "window": "all"}, headers=h).status_code == 200
    )
    assert api.get("/v1/summary", headers=h).status_code == 200
    assert "convmetrics_closures_total" in api.get("/metrics", headers=h).text


def test_a_scoped_token_reads_its_accounts_rows_only(api: TestClient) -> None:
    h = bearer(SCOPED_TOKEN)
    for params in (
        {"by": "account", "window": "all"},
        {"by": "account", "window": "1h"},
        {"by": "account", "window": "all", "sort": "-closures"},
        {"by": "account", "window": "all", "key": "7"},
    ):
        r = api.get("/v1/closures", params=params, headers=h)
        assert r.status_code == 200 and {row["key"] for row in r.json()["rows"]} == {"7"}, params
    ranked = api.get("/v1/closures", params={"by": "account", "window": "all", "sort": "key"}, headers=h)
    assert ranked.json()["total"] == 1
    forbidden = (
        ("/v1/closures", {"by": "account", "window": "all", "key": "8"}),
        ("/v1/closures", {"by": "channel_type", "window": "all"}),
        ("/v1/summary", {}),
        ("/metrics", {}),
    )
    for path, params in forbidden:
        r = api.get(path, params=params, headers=h)
        assert r.status_code == 403 and "scope" in r.json()["error"], (path, params)
    nothing = api.get("/v1/closures", params={"by": "account", "window": "all"}, headers=bearer(OTHER_TOKEN))
    assert nothing.status_code == 200 and nothing.json()["rows"] == []  # 99 and 100 have no rows


def test_a_file_without_tokens_starts_and_says_every_request_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "tokens"
    empty.write_text("# no token yet\n")
    with caplog.at_level(logging.WARNING, logger="consumer.serve.tokens"):
        tokens = Tokens(empty)
    assert tokens.scope_of("anything") is None
    assert f"tokens file {empty} holds no token: every request is refused (401)" in caplog.text
    caplog.clear()
    empty.write_text(f"{new_token('*')[1]}\n")
    with caplog.at_level(logging.WARNING, logger="consumer.serve.tokens"):
        Tokens(empty)
    assert "holds no token" not in caplog.text
