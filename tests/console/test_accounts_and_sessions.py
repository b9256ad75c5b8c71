"""Accounts, session cookies, CSRF tokens, the sign-in limit and the UI language, without a server."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from punchgate.gateway.console.accounts import PERMISSIONS, AccountError, Accounts
from punchgate.gateway.console.i18n import EN, ZH, Words, language
from punchgate.gateway.console.keyfile import ensure_session_key
from punchgate.gateway.console.sessions import LoginLimiter, Signer

PASSWORD = "a long test password"


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_accounts_live_in_a_private_file_beside_the_buffer(tmp_path: Path) -> None:
    buffer = tmp_path / "state" / "buffer.db"
    accounts = Accounts.beside_buffer(buffer)
    accounts.add("Alice", "approver", PASSWORD)
    assert accounts.path == tmp_path / "state" / "console" / "accounts.db"
    assert _mode(accounts.path) == 0o600 and _mode(accounts.path.parent) == 0o700
    raw = accounts.path.read_bytes()
    assert PASSWORD.encode() not in raw and b"$argon2id$" in raw  # only the argon2id hash is stored
    assert accounts.get("alice") is not None  # names are unique without regard to case
    with pytest.raises(AccountError, match="exists already"):
        accounts.add("ALICE", "viewer", PASSWORD)


def test_verify_says_why_and_a_change_bumps_the_generation(tmp_path: Path) -> None:
    accounts = Accounts.beside_buffer(tmp_path / "buffer.db")
    first = accounts.add("bob", "clerk", PASSWORD)
    assert accounts.verify("bob", PASSWORD)[1] == "ok"
    assert accounts.verify("bob", "wrong password!")[1] == "wrong_password"
    assert accounts.verify("nobody", PASSWORD) == (None, "unknown")
    assert accounts.get("bob").last_login_at is not None  # type: ignore[union-attr]
    disabled = accounts.set_disabled("bob", True)
    assert accounts.verify("bob", PASSWORD)[1] == "disabled"
    assert disabled.generation == first.generation + 1 and not disabled.may("view")
    changed = accounts.set_password("bob", "another long password")
    assert changed.generation == first.generation + 2


@pytest.mark.parametrize(
    ("name", "role", "password", "message"),
    [
        ("bad name", "viewer", PASSWORD, "not an account name"),
        ("carol", "boss", PASSWORD, "unknown role"),
        ("carol", "viewer", "short", "at least 10"),
        ("carolcarol", "viewer", "CarolCarol", "must not be the account name"),
    ],
)
def test_bad_accounts_are_refused_with_a_sentence(
    tmp_path: Path, name: str, role: str, password: str, message: str
) -> None:
    with pytest.raises(AccountError, match=message):
        Accounts.beside_buffer(tmp_path / "buffer.db").add(name, role, password)


def test_roles_grow_from_viewer_to_admin() -> None:
    assert PERMISSIONS["viewer"] == {"view"}
    assert PERMISSIONS["viewer"] < PERMISSIONS["clerk"] < PERMISSIONS["approver"] < PERMISSIONS["admin"]
    assert "manual_decide" not in PERMISSIONS["clerk"] and "accounts" not in PERMISSIONS["approver"]


def test_the_session_key_is_private_and_kept(tmp_path: Path) -> None:
    buffer = tmp_path / "buffer.db"
    key = ensure_session_key(buffer)
    path = tmp_path / "console" / "session.key"
    assert len(key) == 32 and _mode(path) == 0o600
    assert ensure_session_key(buffer) == key  # kept across restarts
    path.chmod(0o644)
    assert ensure_session_key(buffer) != key  # one others could read is replaced


def test_session_cookies_are_signed_and_expire() -> None:
    signer = Signer(b"k" * 32)
    cookie, session = signer.session_cookie("alice", 3)
    assert signer.session(cookie) == session
    body, mac = cookie.split(".")
    assert signer.session(body + "." + mac[:-2] + "AA") is None  # a forged signature
    assert Signer(b"x" * 32).session(cookie) is None  # another gateway's key
    assert signer.session(cookie, now=time.time() + 13 * 3600) is None  # past SESSION_HOURS
    assert signer.session("garbage") is None and signer.session(None) is None


def test_csrf_tokens_belong_to_one_session() -> None:
    signer = Signer(b"k" * 32)
    _c1, one = signer.session_cookie("alice", 1)
    _c2, two = signer.session_cookie("alice", 1)
    assert signer.csrf_ok(one.nonce, signer.csrf_token(one.nonce))
    assert not signer.csrf_ok(one.nonce, signer.csrf_token(two.nonce))
    assert not signer.csrf_ok(one.nonce, None) and not signer.csrf_ok(one.nonce, "")
    login = signer.login_nonce_cookie()
    assert signer.login_nonce(login) is not None
    assert signer.login_nonce(login, now=time.time() + 7200) is None  # a sign-in form left open too long


def test_failed_sign_ins_are_limited_per_name_and_address() -> None:
    limiter = LoginLimiter(per_name=3, per_address=5, window=60)
    for _ in range(3):
        assert limiter.wait_seconds("alice", "10.0.0.1", now=100) == 0
        limiter.failed("alice", "10.0.0.1", now=100)
    assert 59 <= limiter.wait_seconds("ALICE", "10.0.0.2", now=101) <= 60  # the name, from anywhere
    assert limiter.wait_seconds("bob", "10.0.0.1", now=101) == 0
    for name in ("bob", "carol"):
        limiter.failed(name, "10.0.0.1", now=102)
    assert limiter.wait_seconds("dave", "10.0.0.1", now=103) > 0  # the address, whatever the name
    assert limiter.wait_seconds("alice", "10.0.0.2", now=161) == 0  # the window has passed


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
        ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        ("zh-TW", "zh"),
        ("fr-FR,de;q=0.5", "en"),
        ("", "en"),
        (None, "en"),
        ("en;q=0.2,zh;q=0.7", "zh"),
        ("zh;q=0", "en"),
    ],
)
def test_the_language_follows_accept_language(header: str | None, expected: str) -> None:
    assert language(header) == expected


def test_every_english_text_has_a_chinese_one() -> None:
    assert set(EN) <= set(ZH), sorted(set(EN) - set(ZH))
    for key, text in EN.items():  # the same placeholders in both
        assert sorted(part.split("}")[0] for part in text.split("{")[1:]) == sorted(
            part.split("}")[0] for part in ZH[key].split("{")[1:]
        ), key
    assert Words("zh")("overview.summary", offline=1, degraded=2, online=3) == "离线 1 · 异常 2 · 在线 3"
    assert Words("xx")("nav.overview") == "Overview"


def test_beyond_loopback_takes_tls_or_an_explicit_plain_http(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from punchgate.gateway.settings import Settings

    def http(**keys: object) -> Settings:
        return Settings.model_validate({"gateway_id": "gw", "http": keys})

    assert "loopback" in http(bind="127.0.0.1").http.serving()
    with pytest.raises(ValidationError, match="beyond loopback: set tls_cert_file and tls_key_file"):
        http(bind="0.0.0.0")
    assert "allow_plain_http" in http(bind="0.0.0.0", allow_plain_http=True).http.serving()
    tls = http(bind="192.0.2.10", tls_cert_file=str(tmp_path / "c.pem"), tls_key_file=str(tmp_path / "k.pem"))
    assert tls.http.serving().startswith("http: HTTPS on 192.0.2.10")
    with pytest.raises(ValidationError, match="needs both"):
        http(tls_cert_file=str(tmp_path / "c.pem"))
