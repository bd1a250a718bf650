"""URLs as logs and errors may show them: a password in the user info or in a query
parameter (`?password=`, which libpq takes too) replaced by `***`."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: query parameters whose value is a secret (libpq's password and sslpassword, and the like)
_SECRET_PARAMS = ("password", "passwd", "secret", "token")


def redacted(url: str) -> str:
    """`url` without its secrets; a text that does not parse as a URL is shown as `***`."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # an unparseable port or netloc: it may hold anything
        return "***"
    netloc = parts.netloc
    if password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_secret(k) for k, _ in pairs):
            query = urlencode([(k, "***" if _secret(k) else v) for k, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url  # as given (urlunsplit would drop the empty host of sqlite:///)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _secret(name: str) -> bool:
    return any(s in name.lower() for s in _SECRET_PARAMS)
