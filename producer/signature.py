"""Standard Webhooks signature verification over the raw body: pure, no I/O.

``webhook-signature`` holds space-separated ``v1,<base64 HMAC-SHA256>`` entries over
``"<webhook-id>.<webhook-timestamp>.<body>"``; any configured secret may match any
entry (rotation). Same rules as the reference ``standardwebhooks`` package, constant-time
comparison included; any failure, a malformed header included, is a `SignatureError`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence

from producer.exceptions import SettingsError, SignatureError

SECRET_PREFIX = "whsec_"
TOLERANCE_SECONDS = 5 * 60
HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"


def parse_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (the prefix is optional).

    Raises:
        SettingsError: the part after the prefix is not base64.
    """
    text = secret.strip()
    text = text.removeprefix(SECRET_PREFIX).rstrip("=")
    try:  # unpadded base64 is accepted, as the reference package does
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SettingsError(
            "a webhook secret is not base64 (expected whsec_<base64>, as Standard Webhooks issues)"
        ) from None
    if not key:
        raise SettingsError("a webhook secret is empty")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one message (for tests and tools)."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def verify_signature(
    keys: Sequence[bytes],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> str:
    """Check the Standard Webhooks headers of one request; return its ``webhook-id``.

    Args:
        keys: HMAC keys (see `parse_secret`); any one may match.
        headers: request headers, looked up by lower-case name.
        body: the raw body bytes, exactly as received.
        now: current unix time (default: the clock).
        tolerance: accepted distance between ``webhook-timestamp`` and now, in seconds.

    Raises:
        SignatureError: a header is missing or malformed, the timestamp is outside the
            tolerance, or no signature matches any key.
    """
    msg_id = headers.get(HEADER_ID)
    stamp = headers.get(HEADER_TIMESTAMP)
    header = headers.get(HEADER_SIGNATURE)
    if not msg_id or not stamp or not header:
        missing = [
            h
            for h, v in ((HEADER_ID, msg_id), (HEADER_TIMESTAMP, stamp), (HEADER_SIGNATURE, header))
            if not v
        ]
        raise SignatureError(f"missing signature header(s): {', '.join(missing)}")
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise SignatureError(f"{HEADER_TIMESTAMP} is not a unix time in seconds")
    timestamp = int(stamp)
    clock = time.time() if now is None else now
    if abs(clock - timestamp) > tolerance:
        raise SignatureError(
            f"{HEADER_TIMESTAMP} is {int(clock - timestamp)} s from now; more than {tolerance} s apart"
        )
    candidates = _v1_signatures(header)
    signed = f"{msg_id}.{timestamp}.".encode() + body
    matched = False
    for key in keys:
        expected = hmac.new(key, signed, hashlib.sha256).digest()
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("no webhook-signature matches a configured secret")
    return msg_id


def _v1_signatures(header: str) -> list[bytes]:
    """Decoded ``v1`` signatures; other versions are skipped, garbage is an error."""
    out: list[bytes] = []
    for entry in header.split():
        version, sep, value = entry.partition(",")
        if not sep or not version or not value:
            raise SignatureError(f"malformed {HEADER_SIGNATURE} entry (expected v1,<base64>)")
        if version != "v1":
            continue
        try:
            out.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            raise SignatureError(f"malformed {HEADER_SIGNATURE}: v1 signature is not base64") from None
    if not out:
        raise SignatureError(f"{HEADER_SIGNATURE} has no v1 signature")
    return out
