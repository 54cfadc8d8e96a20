"""Throwaway certificate authorities and certificates for TLS tests, made with the ``openssl``
command (ECDSA P-256, as the operator's PKI)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key (PEM files)."""

    cert: Path
    key: Path


def _openssl(args: Sequence[str], cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _key(path: Path) -> None:
    _openssl(
        ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path)],
        path.parent,
    )


class TestCa:
    """A self-signed CA in ``directory`` that signs server and client certificates."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str = "diloco test CA") -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = directory / "ca.key"
        self.cert = directory / "ca.crt"
        _key(self.key)
        _openssl(
            [
                "req",
                "-x509",
                "-new",
                "-key",
                str(self.key),
                "-out",
                str(self.cert),
                "-days",
                "2",
                "-subj",
                f"/CN={name}",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            directory,
        )

    def _sign(self, stem: str, subject: str, extensions: str) -> KeyPair:
        key, csr, cert = (
            self.dir / f"{stem}.key",
            self.dir / f"{stem}.csr",
            self.dir / f"{stem}.crt",
        )
        extfile = self.dir / f"{stem}.ext"
        extfile.write_text(extensions)
        _key(key)
        _openssl(["req", "-new", "-key", str(key), "-out", str(csr), "-subj", subject], self.dir)
        _openssl(
            [
                "x509",
                "-req",
                "-in",
                str(csr),
                "-CA",
                str(self.cert),
                "-CAkey",
                str(self.key),
                "-CAcreateserial",
                "-out",
                str(cert),
                "-days",
                "2",
                "-extfile",
                str(extfile),
            ],
            self.dir,
        )
        return KeyPair(cert, key)

    def server(self, stem: str = "server") -> KeyPair:
        """A server certificate for 127.0.0.1 and localhost."""
        return self._sign(
            stem,
            "/CN=127.0.0.1",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )

    def client(self, common_name: str) -> KeyPair:
        """A client certificate with common name ``common_name``."""
        return self._sign(
            f"client-{common_name}",
            f"/CN={common_name}",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=clientAuth\n",
        )
