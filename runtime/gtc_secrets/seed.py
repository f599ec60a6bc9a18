"""Operator side: ``gtc-secrets put``. The plaintext never leaves the operator's host.

Transit hands out a fresh data key (``transit/datakey/plaintext/<key>``: the key in clear plus its
wrapped form); the value is encrypted locally with AES-256-GCM, and only the envelope (version, wrapped
key, nonce, ciphertext) is written to KV-v2. hvac is used here, with the admin token from VAULT_TOKEN
passed explicitly.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import hvac
import hvac.exceptions
import requests

from gtc_secrets.constants import transit_key_name
from gtc_secrets.envelope import KEY_BYTES, seal
from gtc_secrets.refs import SecretRef
from gtc_secrets.settings import AdminSettings

log = logging.getLogger(__name__)

# Values are delivered in environment variables; Linux refuses a single env string above 128 KiB.
MAX_VALUE_BYTES = 64 * 1024


class SeedError(Exception):
    """``put`` failed; the message names the reference and Vault path, never the value."""


class AdminVault(Protocol):
    """The two operator calls ``put`` needs (a seam: hvac in production, a fake in unit tests)."""

    def generate_data_key(self, transit_mount: str, key: str) -> tuple[bytes, str]:
        """POST /v1/{transit_mount}/datakey/plaintext/{key}: (plaintext data key, wrapped key)."""

    def write_kv(self, kv_mount: str, path: str, data: Mapping[str, object]) -> int:
        """POST /v1/{kv_mount}/data/{path}: write a new KV-v2 version; returns its number."""


def check_value(value: bytes, ref: SecretRef) -> None:
    """Refuse what a worker could not use: empty, too big, not UTF-8 text, or with a NUL byte."""
    if not value:
        raise SeedError(f"{ref.uri}: refusing to store an empty value")
    if len(value) > MAX_VALUE_BYTES:
        raise SeedError(f"{ref.uri}: the value is larger than {MAX_VALUE_BYTES} bytes")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise SeedError(
            f"{ref.uri}: the value must be UTF-8 text (it is delivered in an environment variable)"
        ) from None
    if "\x00" in text:
        raise SeedError(f"{ref.uri}: the value must not contain a NUL byte")


def strip_one_newline(value: bytes) -> bytes:
    """Drop one trailing newline (``echo``, heredocs and editors add one; a token never ends with one)."""
    if value.endswith(b"\r\n"):
        return value[:-2]
    if value.endswith(b"\n"):
        return value[:-1]
    return value


def kv_location(settings: AdminSettings, ref: SecretRef) -> tuple[str, str]:
    """(path under the KV mount, full API path) of a reference's envelope."""
    sub = f"{settings.kv_prefix}/{ref.logical_path}"
    return sub, f"{settings.kv_mount}/data/{sub}"


@dataclass(frozen=True)
class Stored:
    """Where ``put`` wrote the envelope, and the KV-v2 version it became."""

    location: str
    version: int


def put_secret(admin: AdminVault, settings: AdminSettings, ref: SecretRef, value: bytes) -> Stored:
    """Seal ``value`` for ``ref`` and write the envelope; returns the KV path and the new version."""
    check_value(value, ref)
    key = transit_key_name(ref.env, ref.tenant)
    sub, location = kv_location(settings, ref)
    data_key, wrapped = admin.generate_data_key(settings.transit_mount, key)
    if len(data_key) != KEY_BYTES:
        raise SeedError(
            f"{settings.transit_mount}/datakey/plaintext/{key}: expected a {KEY_BYTES * 8}-bit data key"
        )
    envelope = seal(value, data_key, wrapped, ref, location)
    version = admin.write_kv(settings.kv_mount, sub, envelope)
    log.info("stored envelope for %s at %s, version %d (transit key %s)", ref.uri, location, version, key)
    return Stored(location, version)


class HvacAdminVault:
    """AdminVault over hvac, with the admin token given explicitly (never hvac's own env lookup)."""

    def __init__(self, settings: AdminSettings) -> None:
        verify: str | bool = str(settings.ca_cert) if settings.ca_cert else True
        self._client: Any = hvac.Client(url=settings.addr, token=settings.token, verify=verify)

    def generate_data_key(self, transit_mount: str, key: str) -> tuple[bytes, str]:
        where = f"POST /v1/{transit_mount}/datakey/plaintext/{key}"
        response = _call(
            where,
            lambda: self._client.secrets.transit.generate_data_key(
                name=key, key_type="plaintext", mount_point=transit_mount
            ),
        )
        data = response.get("data") if isinstance(response, Mapping) else None
        plaintext = data.get("plaintext") if isinstance(data, Mapping) else None
        wrapped = data.get("ciphertext") if isinstance(data, Mapping) else None
        if not isinstance(plaintext, str) or not isinstance(wrapped, str):
            raise SeedError(f"{where}: unexpected response (no data key)")
        try:
            return base64.b64decode(plaintext, validate=True), wrapped
        except (binascii.Error, ValueError):
            raise SeedError(f"{where}: the data key is not base64") from None

    def write_kv(self, kv_mount: str, path: str, data: Mapping[str, object]) -> int:
        where = f"POST /v1/{kv_mount}/data/{path}"
        response = _call(
            where,
            lambda: self._client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=dict(data), mount_point=kv_mount
            ),
        )
        written = response.get("data") if isinstance(response, Mapping) else None
        version = written.get("version") if isinstance(written, Mapping) else None
        if not isinstance(version, int) or isinstance(version, bool):
            # The write happened; only its number is unknown. Say so rather than guess one.
            raise SeedError(f"{where}: written, but Vault's answer has no version number")
        return version


def _call(where: str, operation: Any) -> Any:
    """Run one hvac call; map its errors to SeedError with the path and Vault's own message only."""
    try:
        return operation()
    except hvac.exceptions.VaultError as exc:
        errors = "; ".join(str(e) for e in (exc.errors or [])) if isinstance(exc.errors, list) else ""
        raise SeedError(f"{where}: {type(exc).__name__}" + (f" ({errors})" if errors else "")) from None
    except requests.RequestException as exc:
        raise SeedError(f"{where}: Vault unreachable ({type(exc).__name__})") from None
