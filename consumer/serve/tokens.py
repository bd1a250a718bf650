"""Tokens for the API, the dashboard's data and `/metrics`: who may read which accounts.

A tokens file holds one token a line as `<sha256 hex of the token> <scope> [expires=<time>]`,
where the scope is `*` (every account and the cross-tenant views) or comma-separated
account ids, and the time (UTC: `2027-03-01`, its 00:00, or `2027-03-01T12:00:00Z`) is
when the token stops being accepted; `#` starts a comment. Only hashes are stored:
`convmetrics token new` prints a fresh token and the line to add. A presented token is
hashed and compared with every stored hash in constant time. The file is read again when
it changes (an atomic rename, a chmod included) once the change has held for `RECHECK`
seconds (a file caught half-written is not taken); a bad line refuses the start naming
the line, and at a reload keeps the tokens in force, logs why and tries again.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from consumer.exceptions import ConfigError
from consumer.fold.state import I64_MAX, I64_MIN

log = logging.getLogger(__name__)

ENV_TOKENS_FILE = "CONVMETRICS_TOKENS_FILE"
#: seconds between checks of the file for a change
RECHECK = 2.0
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Scope:
    """What a token may read: everything (`accounts` None), or these accounts' rows only."""

    accounts: frozenset[int] | None

    @property
    def is_global(self) -> bool:
        return self.accounts is None

    def __str__(self) -> str:
        return "*" if self.accounts is None else ",".join(str(a) for a in sorted(self.accounts))


GLOBAL = Scope(None)


@dataclass(frozen=True)
class Expired:
    """A known token past its expiry time (epoch seconds): refused, and told so."""

    at: int

    def __str__(self) -> str:
        return f"token expired at {utc_text(self.at)}"


@dataclass(frozen=True)
class Entry:
    """One line of a tokens file: a token's hash, its scope and its expiry (None: never)."""

    hashed: str
    scope: Scope
    expires: int | None = None


def utc_text(t: int) -> str:
    """Epoch seconds as the tokens file writes them: `2027-03-01T00:00:00Z`."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_expiry(text: str) -> int:
    """A UTC date (its 00:00) or time with `Z` or an offset, as epoch seconds; ValueError
    says what is accepted."""
    try:
        if len(text) == 10:
            return int(datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC).timestamp())
        when = datetime.fromisoformat(text)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise ValueError(
            f"expires must be a UTC date (2027-03-01) or a time with Z or an offset "
            f"(2027-03-01T12:00:00Z), got {text!r}"
        )
    return int(when.timestamp())


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_scope(text: str) -> Scope:
    if text == "*":
        return GLOBAL
    accounts = set()
    for part in text.split(","):
        part = part.strip()
        if not part.lstrip("-").isdigit() or not I64_MIN <= int(part) <= I64_MAX:
            raise ValueError(f"scope must be * or comma-separated account ids, got {text!r}")
        accounts.add(int(part))
    return Scope(frozenset(accounts))


def expiry_from(text: str, now: float) -> int:
    """`--expires`: a lifetime (`90d`, `12h`) from `now`, or a UTC time as the file takes it;
    ValueError for anything else or a time not after `now`."""
    unit = {"d": 86400, "h": 3600}.get(text[-1:])
    if unit is not None and text[:-1].isdigit():
        at = int(now) + int(text[:-1]) * unit
    else:
        try:
            at = parse_expiry(text)
        except ValueError:
            raise ValueError(
                f"expected a lifetime (90d, 12h), a UTC date (2027-03-01) or a time with Z "
                f"(2027-03-01T12:00:00Z), got {text!r}"
            ) from None
    if at <= now:
        raise ValueError(f"{text!r} is not in the future ({utc_text(at)})")
    return at


def parse_tokens(text: str, source: str) -> list[Entry]:
    """The lines of a tokens file; ConfigError names the first bad line (a token on two
    lines included)."""
    found = []
    lines: dict[str, int] = {}  # hash -> its line number
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        where = f"{source} line {number}"
        if len(parts) not in (2, 3):
            raise ConfigError(
                f"{where}: expected '<sha256 hex of the token> <scope> [expires=<UTC time>]', "
                f"got {len(parts)} field(s)"
            )
        hashed, scope = parts[:2]
        if len(hashed) != 64 or not set(hashed) <= _HEX:
            raise ConfigError(
                f"{where}: the first field must be the token's SHA-256 as 64 lower-case hex digits "
                "(`convmetrics token new` prints the line); a plaintext token is never stored"
            )
        if hashed in lines:  # which scope would hold? (a line added to narrow one kept the wider)
            raise ConfigError(
                f"{where}: the same token as line {lines[hashed]}; a token has one scope: keep one line"
            )
        lines[hashed] = number
        expires = None
        try:
            if len(parts) == 3:
                name, _, value = parts[2].partition("=")
                if name != "expires":
                    raise ValueError(f"the third field must be expires=<UTC time>, got {parts[2]!r}")
                expires = parse_expiry(value)
            found.append(Entry(hashed, parse_scope(scope), expires))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return found


class Tokens:
    """The tokens of a file, re-read when it changes; `scope_of(token)` for each request."""

    def __init__(self, path: str | Path, *, recheck: float = RECHECK) -> None:
        self.path = Path(path)
        self.recheck = recheck
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._refused: tuple[int, int, int, int] | None = None  # the stamp of a file that did not read
        #: a changed file's stamp, read once it holds for a whole check: a file rewritten in
        #: place (`>`: emptied, then written) and caught between is never taken (no token,
        #: or an account id cut short, for a moment)
        self._settling: tuple[int, int, int, int] | None = None
        self._entries = self._read()  # at start a bad file is an error
        self._checked = time.monotonic()
        if not self._entries:  # allowed (tokens may be added while it runs), but said
            log.warning(
                "tokens file %s holds no token: every request is refused (401) until one is added", self.path
            )

    def _stat(self) -> tuple[int, int, int, int] | None:
        """What changes with the file: a rename over it, a write, and (ctime) a chmod or
        chown, which can make an unreadable file readable."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)

    def _read(self) -> list[Entry]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"tokens file {self.path}: cannot read it: {exc}") from None
        return parse_tokens(text, f"tokens file {self.path}")

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.recheck:
            return
        with self._lock:
            if now - self._checked < self.recheck:
                return
            self._checked = now
            stamp = self._stat()
            if stamp == self._stamp:
                return
            if stamp != self._settling:  # changed since the last check: maybe mid-write
                self._settling = stamp
                return
            try:
                entries = self._read()
            except ConfigError as exc:
                if stamp != self._refused:  # read again every check until it reads; said once
                    log.error("%s; the tokens in force stay", exc)
                    self._refused = stamp
                return
            self._stamp, self._refused = stamp, None
            self._entries = entries
            log.info("tokens file %s read again: %d token(s)", self.path, len(entries))

    def scope_of(self, token: str, now: float | None = None) -> Scope | Expired | None:
        """The scope of a presented token, `Expired` for one past its expiry at `now` (epoch
        seconds; default the clock), or None for an unknown one. Every stored hash is
        compared, in constant time each."""
        self._refresh()
        presented = digest(token)
        found: Entry | None = None
        for entry in self._entries:
            if hmac.compare_digest(entry.hashed, presented):
                found = entry
        if found is None:
            return None
        if found.expires is not None and found.expires <= (time.time() if now is None else now):
            return Expired(found.expires)
        return found.scope


def new_token(accounts: str | None = None, expires: int | None = None) -> tuple[str, str]:
    """A fresh random token and the tokens-file line that grants it `accounts` (None: all)
    until `expires` (epoch seconds; None: never)."""
    scope = GLOBAL if accounts is None else parse_scope(accounts)
    token = "cmt_" + secrets.token_urlsafe(32)
    line = f"{digest(token)} {scope}"
    return token, line if expires is None else f"{line} expires={utc_text(expires)}"


def add_line(path: Path, line: str) -> None:
    """Append a line to a tokens file, in place: its owner, mode, links and a symlink's
    target stay as they are (a service user keeps reading it); a new file is made 0600.
    One write (a missing final newline first): a reload that catches it half-written keeps
    the tokens in force and reads the file again once the write changed it. ConfigError
    names the file when it cannot be read or written, or would no longer parse."""
    try:
        old = path.read_text(encoding="utf-8") if path.exists() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"tokens file {path}: cannot read it: {exc}") from None
    added = ("\n" if old and not old.endswith("\n") else "") + line + "\n"
    parse_tokens(old + added, f"tokens file {path}")  # a bad file is not made worse
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, added.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ConfigError(f"tokens file {path}: cannot write it: {exc}") from None
