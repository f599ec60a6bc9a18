"""The envelope stored in KV-v2, and the local AES-256-GCM that seals and opens it. Pure: no I/O.

A KV-v2 entry at ``{kv}/data/{prefix}/<env>/<tenant>/<team>/<category>/<name>`` holds exactly::

    {"gtc_envelope": 1,                  # format version (int)
     "alg": "AES-256-GCM",
     "wrapped_key": "vault:v1:...",      # the data key, encrypted by transit key gtc-<env>-<tenant>
     "nonce": "<base64, 12 bytes>",      # random per seal
     "ciphertext": "<base64>"}           # AES-256-GCM output, including the 16-byte tag

The additional authenticated data is ``AAD_PREFIX + logical path`` (see :func:`aad_for`), so an envelope
copied to another name, team, tenant or env does not decrypt. Plaintext lives only in :class:`SecretValue`,
whose ``repr``/``str`` never show it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gtc_secrets.refs import SecretRef

ENVELOPE_VERSION: Final = 1
ALG: Final = "AES-256-GCM"
FIELD_VERSION: Final = "gtc_envelope"
FIELD_ALG: Final = "alg"
FIELD_WRAPPED_KEY: Final = "wrapped_key"
FIELD_NONCE: Final = "nonce"
FIELD_CIPHERTEXT: Final = "ciphertext"
FIELDS: Final = frozenset({FIELD_VERSION, FIELD_ALG, FIELD_WRAPPED_KEY, FIELD_NONCE, FIELD_CIPHERTEXT})
# Versioned, so that a future format cannot be confused with this one even with the same key.
AAD_PREFIX: Final = b"gtc-secrets/envelope/v1\n"
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
WRAPPED_KEY_PREFIX: Final = "vault:v"


class SecretValue:
    """A secret's plaintext. It never shows itself in a repr, str, f-string, log line or traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = bytes(value)

    def reveal_bytes(self) -> bytes:
        return self._value

    def reveal_text(self, what: str) -> str:
        """The value as text for an environment variable; ``what`` names the reference in errors."""
        try:
            text = self._value.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(
                f"{what}: the value is not UTF-8 text, so it cannot go into an environment"
            ) from None
        if "\x00" in text:
            raise ValueError(f"{what}: the value contains a NUL byte, so it cannot go into an environment")
        return text

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SecretValue):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    __hash__ = None  # type: ignore[assignment]  # mutable-looking on purpose: no set/dict keys of secrets

    def __repr__(self) -> str:
        return "SecretValue(<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("a SecretValue cannot be pickled")


class EnvelopeError(ValueError):
    """A KV entry cannot be opened. The message names the reference and KV location, never a value."""

    def __init__(self, ref: SecretRef, location: str, reason: str) -> None:
        self.ref = ref
        self.location = location
        super().__init__(f"{ref.uri} (KV {location}): {reason}")


class NotAnEnvelope(EnvelopeError):
    """The entry is not an envelope at all (typically a plaintext written with a raw ``kv put``)."""

    def __init__(self, ref: SecretRef, location: str) -> None:
        super().__init__(
            ref,
            location,
            "the KV entry is not a gtc-secrets envelope (a plaintext written with a raw `kv put`?); "
            "it is refused. Re-seed it with: "
            f"gtc-secrets put {ref.uri} --from-file FILE  (or the value on stdin), "
            "which stores only an encrypted envelope",
        )


class MalformedEnvelope(EnvelopeError):
    """The entry claims to be an envelope but a field is missing or invalid."""


class EnvelopeMismatch(EnvelopeError):
    """The envelope does not decrypt for this path: copied from another path, or tampered with."""

    def __init__(self, ref: SecretRef, location: str) -> None:
        super().__init__(
            ref,
            location,
            "the envelope does not decrypt for this path (copied from another path or tampered with); "
            f"re-seed it with gtc-secrets put {ref.uri}",
        )


@dataclass(frozen=True)
class Envelope:
    """A parsed envelope. Nothing in it is secret: the data key is wrapped by transit."""

    wrapped_key: str
    nonce: bytes
    ciphertext: bytes


def aad_for(ref: SecretRef) -> bytes:
    """The additional authenticated data: version prefix + logical path (ASCII by the reference grammar)."""
    return AAD_PREFIX + ref.logical_path.encode("ascii")


def _b64(data: Mapping[str, object], field: str, ref: SecretRef, location: str) -> bytes:
    raw = data.get(field)
    if not isinstance(raw, str):
        raise MalformedEnvelope(ref, location, f"envelope field {field!r} is missing or not a string")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedEnvelope(ref, location, f"envelope field {field!r} is not valid base64") from None


def parse_envelope(data: Mapping[str, object], ref: SecretRef, location: str) -> Envelope:
    """Validate the KV data of one entry as an envelope; ``location`` is the KV path for messages."""
    if FIELD_VERSION not in data:
        raise NotAnEnvelope(ref, location)
    version = data[FIELD_VERSION]
    if isinstance(version, bool) or not isinstance(version, int):
        raise MalformedEnvelope(ref, location, f"envelope field {FIELD_VERSION!r} must be an integer")
    if version != ENVELOPE_VERSION:
        raise MalformedEnvelope(
            ref, location, f"unsupported envelope version {version} (this runtime reads {ENVELOPE_VERSION})"
        )
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise MalformedEnvelope(ref, location, f"unknown envelope field {unknown[0]!r}")
    if data.get(FIELD_ALG) != ALG:
        raise MalformedEnvelope(ref, location, f"envelope field {FIELD_ALG!r} must be {ALG!r}")
    wrapped = data.get(FIELD_WRAPPED_KEY)
    if not isinstance(wrapped, str) or not wrapped.startswith(WRAPPED_KEY_PREFIX):
        raise MalformedEnvelope(
            ref,
            location,
            f"envelope field {FIELD_WRAPPED_KEY!r} must be a transit ciphertext ({WRAPPED_KEY_PREFIX}...)",
        )
    nonce = _b64(data, FIELD_NONCE, ref, location)
    if len(nonce) != NONCE_BYTES:
        raise MalformedEnvelope(ref, location, f"envelope field {FIELD_NONCE!r} must be {NONCE_BYTES} bytes")
    ciphertext = _b64(data, FIELD_CIPHERTEXT, ref, location)
    if len(ciphertext) <= TAG_BYTES:
        raise MalformedEnvelope(ref, location, f"envelope field {FIELD_CIPHERTEXT!r} is too short")
    return Envelope(wrapped_key=wrapped, nonce=nonce, ciphertext=ciphertext)


def _check_key(data_key: bytes, ref: SecretRef, location: str) -> None:
    if len(data_key) != KEY_BYTES:
        raise MalformedEnvelope(ref, location, f"the data key must be {KEY_BYTES} bytes for {ALG}")


def seal(
    value: bytes,
    data_key: bytes,
    wrapped_key: str,
    ref: SecretRef,
    location: str,
    *,
    nonce: bytes | None = None,
) -> dict[str, object]:
    """Encrypt ``value`` for ``ref`` with a plaintext data key whose transit-wrapped form is ``wrapped_key``.

    ``nonce`` is for tests only; by default a fresh random 96-bit nonce is drawn (a data key is used once).
    """
    if not value:
        raise ValueError(f"{ref.uri}: refusing to seal an empty value")
    _check_key(data_key, ref, location)
    if not wrapped_key.startswith(WRAPPED_KEY_PREFIX):
        raise MalformedEnvelope(ref, location, "the wrapped key is not a transit ciphertext")
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    ciphertext = AESGCM(data_key).encrypt(nonce, value, aad_for(ref))
    return {
        FIELD_VERSION: ENVELOPE_VERSION,
        FIELD_ALG: ALG,
        FIELD_WRAPPED_KEY: wrapped_key,
        FIELD_NONCE: base64.b64encode(nonce).decode("ascii"),
        FIELD_CIPHERTEXT: base64.b64encode(ciphertext).decode("ascii"),
    }


def open_envelope(envelope: Envelope, data_key: bytes, ref: SecretRef, location: str) -> SecretValue:
    """Decrypt locally; a wrong path (AAD), key or tampered byte all fail the same way: EnvelopeMismatch."""
    _check_key(data_key, ref, location)
    try:
        return SecretValue(AESGCM(data_key).decrypt(envelope.nonce, envelope.ciphertext, aad_for(ref)))
    except InvalidTag:
        raise EnvelopeMismatch(ref, location) from None
