"""URLs as logs and errors show them: no password, wherever the URL holds one."""

from __future__ import annotations

import pytest

from schemas.urls import redacted


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:S3cret@db:5432/m", "postgresql://u:***@db:5432/m"),
        ("postgresql://u@db/m", "postgresql://u@db/m"),
        (
            "postgresql://db/m?password=S3cret&sslmode=require",
            "postgresql://db/m?password=***&sslmode=require",
        ),
        ("postgresql://db/m?sslpassword=S3cret", "postgresql://db/m?sslpassword=***"),
        ("https://svc:S3cret@registry:8081", "https://svc:***@registry:8081"),
        ("https://registry:8081", "https://registry:8081"),
        ("postgresql://u:S3cret@db:port/m", "postgresql://u:***@db:port/m"),  # a bad port too
        ("postgresql://u:S3cret@[db/m", "***"),  # a netloc that does not parse: nothing shown
        ("sqlite:///metrics.db", "sqlite:///metrics.db"),
    ],
)
def test_secrets_are_replaced(url: str, shown: str) -> None:
    assert redacted(url) == shown
    assert "S3cret" not in redacted(url)
