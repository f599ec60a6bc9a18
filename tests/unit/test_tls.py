"""Certificate generation, the server SSL context and rotation, checked with in-memory TLS handshakes."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import logging
import ssl
import stat
import warnings
from pathlib import Path

import pytest
from cryptography import x509

from gtc_admission import tls


@pytest.fixture(scope="module")
def bundle() -> tls.CertificateBundle:
    """One CA + serving pair per module: key generation is the slow part."""
    return tls.generate_certificates(["localhost", "gtc-admission.gtc.svc"], ["127.0.0.1"])


@pytest.fixture(scope="module")
def other_bundle() -> tls.CertificateBundle:
    return tls.generate_certificates(["localhost"], ["127.0.0.1"])


def client_context(ca_pem: bytes, *, max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    if max_version is not None:
        with warnings.catch_warnings():
            # TLS < 1.2 is deprecated in Python too; the test needs a client that still offers it.
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = max_version
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str = "localhost") -> ssl.SSLObject:
    """A complete TLS handshake through memory buffers; returns the client side, raises ssl.SSLError."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client_obj = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    server_obj = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        finished = True
        for obj, outgoing, peer_incoming in ((client_obj, c_out, s_in), (server_obj, s_out, c_in)):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                finished = False
            data = outgoing.read()
            if data:
                peer_incoming.write(data)
        if finished:
            return client_obj
    raise AssertionError("handshake did not finish")


def serial_seen(server: ssl.SSLContext, ca_pem: bytes) -> int:
    peer = handshake(server, client_context(ca_pem)).getpeercert(binary_form=True)
    assert peer is not None
    return x509.load_der_x509_certificate(peer).serial_number


def serial_of(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


def write_pair(directory: Path, b: tls.CertificateBundle) -> tls.CertificatePaths:
    return tls.write_certificates(b, directory)


def test_serving_certificate_names_and_chain(bundle: tls.CertificateBundle) -> None:
    """The serving certificate carries the requested SANs and is issued by the generated CA."""
    cert = x509.load_pem_x509_certificate(bundle.cert_pem)
    ca = x509.load_pem_x509_certificate(bundle.ca_cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "gtc-admission.gtc.svc"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    now = dt.datetime.now(dt.UTC)
    assert cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def test_generate_needs_a_name() -> None:
    """A certificate without any name would be useless: refused."""
    with pytest.raises(ValueError, match="at least one"):
        tls.generate_certificates([])


def test_ca_bundle_is_base64_of_the_ca_pem(bundle: tls.CertificateBundle) -> None:
    """caBundle is the base64 of the CA certificate's PEM, as the webhook configurations expect."""
    assert base64.b64decode(bundle.ca_bundle_b64) == bundle.ca_cert_pem


def test_write_certificates_files_and_modes(tmp_path: Path, bundle: tls.CertificateBundle) -> None:
    """The four files are written; the key is readable by its owner only."""
    paths = tls.write_certificates(bundle, tmp_path / "out")
    assert paths.ca_cert.read_bytes() == bundle.ca_cert_pem
    assert paths.cert.read_bytes() == bundle.cert_pem
    assert paths.key.read_bytes() == bundle.key_pem
    assert paths.ca_bundle.read_text().strip() == bundle.ca_bundle_b64
    assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600


def test_write_certificates_tightens_an_existing_key_file(
    tmp_path: Path, bundle: tls.CertificateBundle
) -> None:
    """An existing world-readable tls.key is made private when overwritten."""
    key = tmp_path / tls.TLS_KEY_FILE
    key.write_text("old")
    key.chmod(0o644)
    tls.write_certificates(bundle, tmp_path)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1", "gtc-admission.gtc.svc"])
def test_handshake_verifies_against_the_ca(
    tmp_path: Path, bundle: tls.CertificateBundle, hostname: str
) -> None:
    """A client trusting only the CA verifies the server for each of its names."""
    paths = write_pair(tmp_path, bundle)
    reloader = tls.CertReloader(paths.cert, paths.key)
    client = handshake(reloader.context, client_context(bundle.ca_cert_pem), hostname)
    assert client.version() in {"TLSv1.2", "TLSv1.3"}


def test_wrong_hostname_is_refused(tmp_path: Path, bundle: tls.CertificateBundle) -> None:
    """A name not in the SANs fails verification (the SANs are really what the client checks)."""
    paths = write_pair(tmp_path, bundle)
    reloader = tls.CertReloader(paths.cert, paths.key)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(reloader.context, client_context(bundle.ca_cert_pem), "evil.example")


def test_tls_1_1_is_refused(tmp_path: Path, bundle: tls.CertificateBundle) -> None:
    """The server context refuses TLS 1.1, while the same client does get TLS 1.1 from a lax server."""
    paths = write_pair(tmp_path, bundle)
    old_client = client_context(bundle.ca_cert_pem, max_version=ssl.TLSVersion.TLSv1_1)

    # Control: the client really can speak TLS 1.1, so the refusal below is the server's doing.
    lax = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        lax.minimum_version = ssl.TLSVersion.TLSv1
    lax.set_ciphers("DEFAULT:@SECLEVEL=0")
    lax.load_cert_chain(paths.cert, paths.key)
    assert handshake(lax, old_client).version() == "TLSv1.1"

    reloader = tls.CertReloader(paths.cert, paths.key)
    assert reloader.context.minimum_version == ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        handshake(reloader.context, old_client)


def test_reloader_refuses_to_start_without_a_valid_pair(
    tmp_path: Path, bundle: tls.CertificateBundle
) -> None:
    """Missing files or a key that does not match the certificate stop the start."""
    with pytest.raises(OSError):
        tls.CertReloader(tmp_path / "nope.crt", tmp_path / "nope.key")
    paths = write_pair(tmp_path, bundle)
    mismatched = tls.generate_certificates(["localhost"])
    paths.key.write_bytes(mismatched.key_pem)
    with pytest.raises(ssl.SSLError):
        tls.CertReloader(paths.cert, paths.key)


def test_unchanged_files_are_not_reloaded(tmp_path: Path, bundle: tls.CertificateBundle) -> None:
    """A check without a change loads nothing."""
    paths = write_pair(tmp_path, bundle)
    reloader = tls.CertReloader(paths.cert, paths.key)
    assert reloader.check() is False
    assert serial_seen(reloader.context, bundle.ca_cert_pem) == serial_of(bundle.cert_pem)


def test_rotation_serves_the_new_certificate_on_the_same_context(
    tmp_path: Path, bundle: tls.CertificateBundle, other_bundle: tls.CertificateBundle
) -> None:
    """After the files change, new handshakes on the same live context present the new certificate."""
    paths = write_pair(tmp_path, bundle)
    reloader = tls.CertReloader(paths.cert, paths.key)
    context = reloader.context
    assert serial_seen(context, bundle.ca_cert_pem) == serial_of(bundle.cert_pem)

    write_pair(tmp_path, other_bundle)
    assert reloader.check() is True
    assert reloader.context is context
    assert serial_seen(context, other_bundle.ca_cert_pem) == serial_of(other_bundle.cert_pem)
    assert reloader.check() is False


def test_half_written_pair_keeps_the_old_certificate(
    tmp_path: Path,
    bundle: tls.CertificateBundle,
    other_bundle: tls.CertificateBundle,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """New certificate with the old key: logged once, the old certificate keeps serving, retried later."""
    paths = write_pair(tmp_path, bundle)
    reloader = tls.CertReloader(paths.cert, paths.key)

    paths.cert.write_bytes(other_bundle.cert_pem)  # the key has not been written yet
    with caplog.at_level(logging.WARNING, logger="gtc_admission.tls"):
        assert reloader.check() is False
        assert reloader.check() is False
    warnings_logged = [r for r in caplog.records if "do not load" in r.getMessage()]
    assert len(warnings_logged) == 1
    assert serial_seen(reloader.context, bundle.ca_cert_pem) == serial_of(bundle.cert_pem)

    paths.key.write_bytes(other_bundle.key_pem)
    assert reloader.check() is True
    assert serial_seen(reloader.context, other_bundle.ca_cert_pem) == serial_of(other_bundle.cert_pem)


def test_unreadable_files_keep_the_old_certificate(tmp_path: Path, bundle: tls.CertificateBundle) -> None:
    """A file that vanished (a Secret being re-mounted) is not a reason to stop serving."""
    paths = write_pair(tmp_path, bundle)
    reloader = tls.CertReloader(paths.cert, paths.key)
    paths.key.unlink()
    assert reloader.check() is False
    assert serial_seen(reloader.context, bundle.ca_cert_pem) == serial_of(bundle.cert_pem)


def test_key_material_never_logged(
    tmp_path: Path,
    bundle: tls.CertificateBundle,
    other_bundle: tls.CertificateBundle,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Neither the key nor the certificate bytes appear in the reloader's log lines."""
    paths = write_pair(tmp_path, bundle)
    reloader = tls.CertReloader(paths.cert, paths.key)
    with caplog.at_level(logging.DEBUG, logger="gtc_admission.tls"):
        paths.cert.write_bytes(other_bundle.cert_pem)
        reloader.check()
        paths.key.write_bytes(other_bundle.key_pem)
        reloader.check()
    key_body = other_bundle.key_pem.decode().splitlines()[1]
    assert caplog.records
    assert all(key_body not in r.getMessage() for r in caplog.records)


async def test_run_polls_and_reloads(
    tmp_path: Path, bundle: tls.CertificateBundle, other_bundle: tls.CertificateBundle
) -> None:
    """The polling task picks up a change without being asked."""
    paths = write_pair(tmp_path, bundle)
    reloader = tls.CertReloader(paths.cert, paths.key)
    task = asyncio.create_task(reloader.run(0.01))
    try:
        write_pair(tmp_path, other_bundle)
        for _ in range(500):
            try:
                if serial_seen(reloader.context, other_bundle.ca_cert_pem) == serial_of(
                    other_bundle.cert_pem
                ):
                    break
            except ssl.SSLCertVerificationError:
                pass  # still the old certificate, which the new CA did not sign
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the reloader did not pick up the new certificate")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
