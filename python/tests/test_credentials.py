"""Credentials: the operator's Secret layout, the environment, and a token that never shows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diloco import ConfigurationError, Credentials


def operator_bundle(root: Path, *, client: bool = False, token: bool = True) -> Path:
    """A directory as the kubelet mounts the operator's worker credential Secret."""
    root.mkdir(parents=True, exist_ok=True)
    if token:
        (root / "token").write_text("secret-token-value\n")
    (root / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n")
    (root / "endpoints.json").write_text(
        json.dumps(
            {"control": "https://llm-control.ml.svc:8512", "bulk": "http://llm-bulk.ml.svc:8513"},
            indent=2,
        )
        + "\n"
    )
    if client:
        (root / "tls.crt").write_text("cert")
        (root / "tls.key").write_text("key")
    return root


def test_from_dir_reads_the_operator_worker_bundle(tmp_path: Path) -> None:
    root = operator_bundle(tmp_path / "creds", client=True)
    credentials = Credentials.from_dir(root)
    assert credentials.url == "https://llm-control.ml.svc:8512"
    assert credentials.bulk_url == "http://llm-bulk.ml.svc:8513"
    assert credentials.token_file == root / "token"
    assert credentials.read_token() == "secret-token-value"
    assert credentials.ca_file == root / "ca.crt"
    assert (credentials.client_cert, credentials.client_key) == (root / "tls.crt", root / "tls.key")
    assert "secret-token-value" not in repr(credentials)


def test_a_named_client_bundle_has_no_token_and_authenticates_by_its_certificate(
    tmp_path: Path,
) -> None:
    root = operator_bundle(tmp_path / "creds", client=True, token=False)
    credentials = Credentials.from_dir(root)
    assert not credentials.has_token and credentials.read_token() is None
    assert (credentials.client_cert, credentials.client_key) == (root / "tls.crt", root / "tls.key")
    assert credentials.describe_token() == "client certificate"


def test_the_token_file_is_read_again_on_every_call(tmp_path: Path) -> None:
    credentials = Credentials.from_dir(operator_bundle(tmp_path / "creds"))
    (tmp_path / "creds" / "token").write_text("rotated")
    assert credentials.read_token() == "rotated"
    (tmp_path / "creds" / "token").write_text("  \n")
    with pytest.raises(ConfigurationError, match="is empty"):
        credentials.read_token()


def test_from_dir_without_endpoints_needs_a_url_and_without_a_token_has_none(
    tmp_path: Path,
) -> None:
    (tmp_path / "bare").mkdir()
    with pytest.raises(ConfigurationError, match="endpoints.json"):
        Credentials.from_dir(tmp_path / "bare")
    credentials = Credentials.from_dir(tmp_path / "bare", url="http://127.0.0.1:8512/")
    assert credentials.url == "http://127.0.0.1:8512"
    assert credentials.read_token() is None and not credentials.has_token


def test_half_a_client_certificate_is_refused(tmp_path: Path) -> None:
    root = operator_bundle(tmp_path / "creds")
    (root / "tls.crt").write_text("cert")
    with pytest.raises(ConfigurationError, match="tls.key"):
        Credentials.from_dir(root)


def test_from_env_reads_a_directory_and_lets_variables_override_it(tmp_path: Path) -> None:
    root = operator_bundle(tmp_path / "creds")
    env = {"DILOCO_CREDENTIALS_DIR": str(root), "DILOCO_URL": "https://10.0.0.5:8512"}
    credentials = Credentials.from_env(env)
    assert credentials.url == "https://10.0.0.5:8512"
    assert credentials.token_file == root / "token"
    literal = Credentials.from_env({"DILOCO_URL": "http://127.0.0.1:8512", "DILOCO_TOKEN": " t0k "})
    assert literal.read_token() == "t0k" and literal.token_file is None
    assert "t0k" not in repr(literal)
    with pytest.raises(ConfigurationError, match="DILOCO_URL"):
        Credentials.from_env({})


def test_urls_must_be_http_or_https() -> None:
    with pytest.raises(ConfigurationError, match="http"):
        Credentials(url="ftp://example.org")
