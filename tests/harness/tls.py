"""Throwaway TLS material for tests, made at test time with the ``openssl`` command.

``make_pki(directory)`` writes a CA, a server certificate for 127.0.0.1 (IP SAN, also
``localhost``) and a client certificate signed by that CA, plus a second CA nobody
trusts with a client certificate of its own (a "stranger" the server must refuse), and
an "impostor": a server certificate of the trusted CA for another host name, which a
client must refuse when it checks the name.
Keys are EC P-256 (PKCS#8 PEM): quick to generate, accepted by etcd (Go), gRPC,
Python's ssl (kazoo) and ZooKeeper's PEM key and trust stores.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
DAYS = "2"


@dataclass(frozen=True)
class CertKey:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA every party trusts
    server: CertKey  # for 127.0.0.1
    client: CertKey  # signed by ``ca``: a legitimate client
    stranger: CertKey  # signed by another CA: a client the server must refuse
    impostor: CertKey  # signed by ``ca`` for impostor.invalid: not a server for 127.0.0.1


def _openssl(*args: str) -> None:
    proc = subprocess.run([OPENSSL, *args], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


def _key(path: Path) -> Path:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
             str(path))  # fmt: skip
    path.chmod(0o600)
    return path


def _ca(directory: Path, name: str) -> CertKey:
    key = _key(directory / f"{name}.key")
    cert = directory / f"{name}.crt"
    _openssl("req", "-x509", "-new", "-key", str(key), "-out", str(cert), "-days", DAYS,
             "-subj", f"/CN=idstore test {name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    return CertKey(cert, key)


def _leaf(directory: Path, name: str, ca: CertKey, usage: str, san: str | None) -> CertKey:
    key = _key(directory / f"{name}.key")
    csr = directory / f"{name}.csr"
    cert = directory / f"{name}.crt"
    ext = directory / f"{name}.ext"
    lines = [
        "basicConstraints=CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
    ]
    if san:
        lines.append(f"subjectAltName={san}")
    ext.write_text("\n".join(lines) + "\n")
    _openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
             "-CAcreateserial", "-out", str(cert), "-days", DAYS, "-extfile", str(ext))  # fmt: skip
    return CertKey(cert, key)


def make_pki(directory: Path) -> Pki:
    """A fresh CA, server and client certificates (and a stranger) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "ca")
    other = _ca(directory, "other-ca")
    return Pki(
        ca=ca.cert,
        server=_leaf(
            directory, "server", ca, "serverAuth,clientAuth", "IP:127.0.0.1,DNS:localhost"
        ),
        client=_leaf(directory, "idstore", ca, "clientAuth", None),
        stranger=_leaf(directory, "stranger", other, "clientAuth", None),
        impostor=_leaf(directory, "impostor", ca, "serverAuth", "DNS:impostor.invalid"),
    )
