"""Unit tests for ``akkiosync.redact``: secrets in URLs are masked as written, raw ``@`` and all.

Each test uses its own password, never registered as a secret, so only the URL shapes mask it.
"""

from __future__ import annotations

import logging

import pytest

from akkiosync.redact import MASK, RedactingFilter, redact


class TestUrlPasswords:
    """Everything between the user's ``:`` and the token's last ``@`` is masked."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param(
                "postgresql://u:plainPw-r1@host/db",
                f"postgresql://u:{MASK}@host/db",
                id="plain",
            ),
            pytest.param(
                "postgresql://u:Pa@ssW0rd-r2@host/db",
                f"postgresql://u:{MASK}@host/db",
                id="raw-at",
            ),
            pytest.param(
                "mysql+pymysql://u:a@b@c@d-r3@db.internal:3306/shop",
                f"mysql+pymysql://u:{MASK}@db.internal:3306/shop",
                id="several-at",
            ),
            pytest.param(
                "postgresql://u:pa/ss:wd?x#y-r4@host:5432/db",
                f"postgresql://u:{MASK}@host:5432/db",
                id="slash-colon-query-chars",
            ),
            pytest.param(
                "postgresql+psycopg://me@corp:pw-r5@host/db",
                f"postgresql+psycopg://{MASK}@host/db",
                id="at-in-user-name",
            ),
        ],
    )
    def test_password_masked(self, text: str, expected: str) -> None:
        """The whole password is masked, however many raw special characters it holds."""
        assert redact(text) == expected

    def test_no_part_of_a_raw_at_password_left(self) -> None:
        """Neither half of a password split by a raw ``@`` survives, nor the host it polluted."""
        cleaned = redact("could not connect to postgresql://u:Pa@ssW0rd-r6@db.internal/shop: x")
        assert "ssW0rd" not in cleaned
        assert cleaned == f"could not connect to postgresql://u:{MASK}@db.internal/shop: x"

    def test_user_without_password_kept(self) -> None:
        """A user name without a password is not a secret: the URL stays as it is."""
        assert redact("mysql://root@127.0.0.1:3306/test") == "mysql://root@127.0.0.1:3306/test"

    def test_userinfo_without_colon_but_with_at_masked_whole(self) -> None:
        """``user@x@host`` cannot be split safely: the whole userinfo is masked."""
        assert redact("postgresql://tok@en-r7@host/db") == f"postgresql://{MASK}@host/db"

    def test_url_without_userinfo_untouched(self) -> None:
        """Plain URLs and SQLite paths pass unchanged."""
        for text in ("https://api.akkio.com/v1/datasets", "sqlite:///state/akkiosync.db"):
            assert redact(text) == text

    def test_several_urls_in_one_text(self) -> None:
        """Each URL of a message is masked on its own."""
        text = "from postgresql://a:pwA-r8@h1/db to mysql://b:p@wB-r8@h2/db."
        assert redact(text) == f"from postgresql://a:{MASK}@h1/db to mysql://b:{MASK}@h2/db."

    def test_urls_glued_together(self) -> None:
        """Two URLs with no space between them: neither userinfo survives in part."""
        cleaned = redact("a://tok@en-r16@h1,b://v:pw-r16@h2/db")
        assert "tok" not in cleaned
        assert "pw-r16" not in cleaned
        assert cleaned == f"a://{MASK}@h2/db"

    def test_url_in_quotes(self) -> None:
        """A URL inside quotes (a repr) loses its password too."""
        assert redact("url='postgresql://u:q@uoted-r9@h/db'") == f"url='postgresql://u:{MASK}@h/db'"

    def test_over_masking_a_query_with_at_is_accepted(self) -> None:
        """An ``@`` in the query widens the mask: more is hidden, never less."""
        cleaned = redact("postgresql://u:pw-r10@h/db?sslcert=/c@rt")
        assert "pw-r10" not in cleaned
        assert cleaned.startswith("postgresql://u:***@")


class TestOtherSecrets:
    """The API-key shapes keep being masked beside the URL rule."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("GET /v1/datasets?api_key=k-r11&id=1", f"GET /v1/datasets?api_key={MASK}&id=1"),
            ('{"api_key": "k-r12", "name": "x"}', f'{{"api_key": "{MASK}", "name": "x"}}'),
            (
                "https://api.akkio.com/v1/datasets?api_key=k-r13",
                f"https://api.akkio.com/v1/datasets?api_key={MASK}",
            ),
            (
                "http://u:pw-r14@h/v1?apikey=k-r14",
                f"http://u:{MASK}@h/v1?apikey={MASK}",
            ),
        ],
        ids=["query", "json", "https-query", "both"],
    )
    def test_api_key_masked(self, text: str, expected: str) -> None:
        """``api_key=`` and ``"api_key":`` values are masked, also inside a URL with a password."""
        assert redact(text) == expected

    def test_log_records_redacted(self) -> None:
        """The logging filter applies the same masking to a formatted record."""
        record = logging.LogRecord(
            "akkiosync", logging.ERROR, __file__, 1, "to %s", ("mysql://u:Pa@ss-r15@h/db",), None
        )
        assert RedactingFilter().filter(record)
        assert record.getMessage() == f"to mysql://u:{MASK}@h/db"
