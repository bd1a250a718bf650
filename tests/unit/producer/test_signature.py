"""Signatures made by the reference `standardwebhooks` package, checked by ours."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook as Reference

from producer.exceptions import SettingsError, SignatureError
from producer.signature import parse_secret, sign, verify_signature

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
OTHER = "whsec_" + base64.b64encode(b"another-secret-another-secret!!").decode()
BODY = b'{"event":"conversation.closed","id":"e1"}'


def signed_headers(
    secret: str, body: bytes = BODY, *, at: float | None = None, msg_id: str = "msg_1"
) -> dict[str, str]:
    stamp = datetime.fromtimestamp(time.time() if at is None else at, tz=UTC)
    signature = Reference(secret).sign(msg_id, stamp, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": signature,
    }


def test_valid_reference_signature_is_accepted() -> None:
    assert verify_signature([parse_secret(SECRET)], signed_headers(SECRET), BODY) == "msg_1"


def test_wrong_secret_is_rejected() -> None:
    with pytest.raises(SignatureError, match="no webhook-signature matches"):
        verify_signature([parse_secret(SECRET)], signed_headers(OTHER), BODY)


def test_tampered_body_is_rejected() -> None:
    with pytest.raises(SignatureError):
        verify_signature([parse_secret(SECRET)], signed_headers(SECRET), BODY + b" ")


@pytest.mark.parametrize("offset", [-301, 301, -3600])
def test_timestamp_outside_five_minutes_is_rejected(offset: int) -> None:
    headers = signed_headers(SECRET, at=time.time() + offset)
    with pytest.raises(SignatureError, match="300 s"):
        verify_signature([parse_secret(SECRET)], headers, BODY)


def test_timestamp_inside_tolerance_is_accepted() -> None:
    headers = signed_headers(SECRET, at=time.time() - 250)
    verify_signature([parse_secret(SECRET)], headers, BODY)


@pytest.mark.parametrize(
    "signature",
    ["", "garbage", "v1", "v1,", "v1,not base64!!", ",abc", "v2,abc", "v1a,AAAA"],
)
def test_malformed_signature_header_is_rejected(signature: str) -> None:
    headers = {**signed_headers(SECRET), "webhook-signature": signature}
    with pytest.raises(SignatureError):
        verify_signature([parse_secret(SECRET)], headers, BODY)


@pytest.mark.parametrize("stamp", ["", "soon", "1.5", "-5", "١٢٣", "9" * 40])
def test_malformed_timestamp_is_rejected(stamp: str) -> None:
    headers = {**signed_headers(SECRET), "webhook-timestamp": stamp}
    with pytest.raises(SignatureError):
        verify_signature([parse_secret(SECRET)], headers, BODY)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_rejected(missing: str) -> None:
    headers = signed_headers(SECRET)
    del headers[missing]
    with pytest.raises(SignatureError, match=missing):
        verify_signature([parse_secret(SECRET)], headers, BODY)


def test_rotated_secrets_either_one_verifies() -> None:
    keys = [parse_secret(OTHER), parse_secret(SECRET)]
    verify_signature(keys, signed_headers(SECRET), BODY)
    verify_signature(keys, signed_headers(OTHER), BODY)


def test_several_signatures_in_one_header_any_may_match() -> None:
    good = signed_headers(SECRET)
    wrong = signed_headers(OTHER)["webhook-signature"]
    headers = {**good, "webhook-signature": f"v2,whatever {wrong} {good['webhook-signature']}"}
    verify_signature([parse_secret(SECRET)], headers, BODY)


def test_our_sign_matches_the_reference_and_its_verify_accepts_it() -> None:
    now = int(time.time())
    ours = sign(parse_secret(SECRET), "m", now, BODY)
    theirs = Reference(SECRET).sign("m", datetime.fromtimestamp(now, tz=UTC), BODY.decode())
    assert ours == theirs
    Reference(SECRET).verify(
        BODY, {"webhook-id": "m", "webhook-timestamp": str(now), "webhook-signature": ours}
    )


def test_secret_without_prefix_and_unpadded_is_the_same_key() -> None:
    raw = SECRET.removeprefix("whsec_")
    assert parse_secret(raw) == parse_secret(SECRET) == parse_secret(SECRET.rstrip("="))


@pytest.mark.parametrize("bad", ["whsec_", "whsec_!!!not-base64", ""])
def test_unusable_secret_is_a_settings_error(bad: str) -> None:
    with pytest.raises(SettingsError):
        parse_secret(bad)
