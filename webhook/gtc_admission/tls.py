"""TLS at the edge: certificate generation, the server's SSL context, and certificate rotation.

The API server only talks to admission webhooks over TLS, so the webhook always serves HTTPS: with the
certificate files it is given (a mounted Secret in the cluster), or with a self-signed CA and serving
certificate generated at start (``make run``). ``gtc-admission certs`` writes the same material to a folder
for the in-cluster Service, plus the base64 ``caBundle`` that the webhook configurations need.

Rotation: mounted Secrets are updated by swapping a symlink, which sends no inotify event on the file we
read, so the ``CertReloader`` polls the content hash of the certificate and key files and loads a changed
pair into the *live* ``SSLContext``: new handshakes use the new certificate, connections already open keep
theirs, and nothing restarts.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import ipaddress
import logging
import os
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)

CA_CERT_FILE = "ca.crt"
TLS_CERT_FILE = "tls.crt"
TLS_KEY_FILE = "tls.key"
CA_BUNDLE_FILE = "ca-bundle.b64"

# Names the self-signed serving certificate of `serve` covers when no certificate is given.
LOCAL_DNS_NAMES: tuple[str, ...] = ("localhost",)
LOCAL_IP_ADDRESSES: tuple[str, ...] = ("127.0.0.1",)

CA_VALIDITY = dt.timedelta(days=3650)
SERVING_VALIDITY = dt.timedelta(days=365)
# Tolerate clocks that are a little behind ours (API server nodes, CI runners).
CLOCK_SKEW = dt.timedelta(minutes=5)

DEFAULT_RELOAD_INTERVAL_SECONDS = 10.0


@dataclass(frozen=True)
class CertificateBundle:
    """PEM material: the CA certificate, and the serving certificate and key it signed."""

    ca_cert_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    @property
    def ca_bundle_b64(self) -> str:
        """The CA certificate as the webhook configurations' ``caBundle`` expects it (base64 of the PEM)."""
        return base64.b64encode(self.ca_cert_pem).decode("ascii")


@dataclass(frozen=True)
class CertificatePaths:
    ca_cert: Path
    cert: Path
    key: Path
    ca_bundle: Path


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: small, fast handshakes, accepted by every Kubernetes API server version.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def generate_certificates(
    dns_names: Sequence[str],
    ip_addresses: Sequence[str] = (),
    *,
    now: dt.datetime | None = None,
) -> CertificateBundle:
    """A new CA, and a serving certificate for ``dns_names`` / ``ip_addresses`` signed by it."""
    if not dns_names and not ip_addresses:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    now = now or dt.datetime.now(dt.UTC)
    not_before = now - CLOCK_SKEW

    ca_key = _new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gtc-admission CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = _new_key()
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    common_name = dns_names[0] if dns_names else ip_addresses[0]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(now + SERVING_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    # The CA key is not kept: nothing else is ever signed with it, so a new pair means a new CA.
    return CertificateBundle(
        ca_cert_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=_key_pem(key),
    )


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the start (not chmod afterwards), so the key is never readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to a file that already existed


def write_certificates(bundle: CertificateBundle, out_dir: Path) -> CertificatePaths:
    """Write ca.crt, tls.crt, tls.key (0600) and ca-bundle.b64 into ``out_dir`` (created if missing)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = CertificatePaths(
        ca_cert=out_dir / CA_CERT_FILE,
        cert=out_dir / TLS_CERT_FILE,
        key=out_dir / TLS_KEY_FILE,
        ca_bundle=out_dir / CA_BUNDLE_FILE,
    )
    _write_private(paths.key, bundle.key_pem)
    paths.cert.write_bytes(bundle.cert_pem)
    paths.ca_cert.write_bytes(bundle.ca_cert_pem)
    paths.ca_bundle.write_text(bundle.ca_bundle_b64 + "\n", encoding="ascii")
    return paths


def new_server_context() -> ssl.SSLContext:
    """A server SSLContext that refuses anything below TLS 1.2 (no certificate loaded yet)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _digest(cert: bytes, key: bytes) -> str:
    h = hashlib.sha256()
    for part in (cert, key):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


class CertReloader:
    """Loads a changed certificate/key pair into a live SSLContext.

    The files are read once per check; that exact content is validated on a scratch context first and
    only then loaded into the live one, so a half-written pair (new certificate, old key) never reaches
    the serving context: it is logged, the old certificate keeps serving, and the next check retries.
    """

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        """Load the pair into a new server context; raises OSError / ssl.SSLError if it does not load."""
        self._context = new_server_context()
        self._cert_file = cert_file
        self._key_file = key_file
        self._failed: str | None = None
        cert, key = cert_file.read_bytes(), key_file.read_bytes()
        self._load(cert, key)
        # The digest of exactly what was loaded: a change between the read and now is seen next check.
        self._loaded = _digest(cert, key)

    @property
    def context(self) -> ssl.SSLContext:
        return self._context

    def check(self) -> bool:
        """Reload when the files changed; True when a new pair was loaded."""
        try:
            cert = self._cert_file.read_bytes()
            key = self._key_file.read_bytes()
        except OSError as exc:
            log.warning(
                "cannot read TLS certificate files (%s); keeping the current certificate", exc.strerror
            )
            return False
        digest = _digest(cert, key)
        if digest == self._loaded:
            return False
        try:
            self._load(cert, key)
        except (ssl.SSLError, OSError, ValueError) as exc:
            if digest != self._failed:
                # Logged once per content: a pair that stays broken does not flood the log.
                log.warning(
                    "TLS certificate files changed but do not load (%s); keeping the current certificate "
                    "and retrying when they change again",
                    type(exc).__name__,
                )
                self._failed = digest
            return False
        self._loaded = digest
        self._failed = None
        log.info("TLS certificate reloaded from %s", self._cert_file)
        return True

    def _load(self, cert: bytes, key: bytes) -> None:
        # load_cert_chain only reads files: give it private copies of exactly the bytes we hashed.
        with tempfile.TemporaryDirectory(prefix="gtc-admission-tls-") as tmp:
            cert_copy, key_copy = Path(tmp) / TLS_CERT_FILE, Path(tmp) / TLS_KEY_FILE
            _write_private(cert_copy, cert)
            _write_private(key_copy, key)
            scratch = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            scratch.load_cert_chain(cert_copy, key_copy)  # raises on a mismatched or partial pair
            self._context.load_cert_chain(cert_copy, key_copy)

    async def run(self, interval: float) -> None:
        """Check every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            # On the event loop thread on purpose: handshakes run there too, and OpenSSL does not promise
            # that a context may be changed by one thread while another creates connections from it.
            # Reading two small files and loading them takes a few milliseconds.
            self.check()
