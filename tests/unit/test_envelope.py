"""The envelope: seal/open round trip, AAD binding to the logical path, refusals, no plaintext in reprs."""

from __future__ import annotations

import base64
import os
import pickle
from dataclasses import replace

import pytest

from gtc_secrets.envelope import (
    AAD_PREFIX,
    ALG,
    ENVELOPE_VERSION,
    EnvelopeMismatch,
    MalformedEnvelope,
    NotAnEnvelope,
    SecretValue,
    aad_for,
    open_envelope,
    parse_envelope,
    seal,
)
from gtc_secrets.refs import SecretRef

CANARY = b"canary-7f3a9c-do-not-leak"
REF = SecretRef("prod", "acme", "core", "llm", "openai_key")
LOCATION = "secret/data/greentic/prod/acme/core/llm/openai_key"
WRAPPED = "vault:v1:d3JhcHBlZA=="


@pytest.fixture
def key() -> bytes:
    return os.urandom(32)


def test_round_trip(key: bytes) -> None:
    """A sealed value opens with the same key for the same path."""
    sealed = seal(CANARY, key, WRAPPED, REF, LOCATION)
    envelope = parse_envelope(sealed, REF, LOCATION)
    assert envelope.wrapped_key == WRAPPED
    assert open_envelope(envelope, key, REF, LOCATION).reveal_bytes() == CANARY


def test_stored_fields_are_exactly_the_documented_ones(key: bytes) -> None:
    """version, alg, wrapped key, nonce, ciphertext: nothing else, and no plaintext."""
    sealed = seal(CANARY, key, WRAPPED, REF, LOCATION)
    assert set(sealed) == {"gtc_envelope", "alg", "wrapped_key", "nonce", "ciphertext"}
    assert sealed["gtc_envelope"] == ENVELOPE_VERSION == 1
    assert sealed["alg"] == ALG == "AES-256-GCM"
    assert len(base64.b64decode(str(sealed["nonce"]))) == 12
    assert len(base64.b64decode(str(sealed["ciphertext"]))) == len(CANARY) + 16
    assert CANARY.decode() not in repr(sealed)


def test_nonce_is_fresh_for_every_seal(key: bytes) -> None:
    """96-bit random nonces: two seals of the same value differ."""
    assert (
        seal(CANARY, key, WRAPPED, REF, LOCATION)["nonce"]
        != seal(CANARY, key, WRAPPED, REF, LOCATION)["nonce"]
    )


def test_aad_is_the_versioned_logical_path() -> None:
    """The AAD is documented: prefix + <env>/<tenant>/<team>/<category>/<name>."""
    assert aad_for(REF) == AAD_PREFIX + b"prod/acme/core/llm/openai_key"


@pytest.mark.parametrize(
    "other",
    [
        replace(REF, name="other_key"),
        replace(REF, category="telegram"),
        replace(REF, team="default"),
        replace(REF, tenant="globex"),
        replace(REF, env="dev"),
    ],
    ids=["name", "category", "team", "tenant", "env"],
)
def test_envelope_copied_to_another_path_does_not_decrypt(key: bytes, other: SecretRef) -> None:
    """Even with the right data key, another path fails, and the error names that path, not the value."""
    envelope = parse_envelope(seal(CANARY, key, WRAPPED, REF, LOCATION), other, "somewhere")
    with pytest.raises(EnvelopeMismatch) as info:
        open_envelope(envelope, key, other, "somewhere")
    assert other.uri in str(info.value)
    assert CANARY.decode() not in str(info.value)


def test_wrong_key_or_tampering_fails_the_same_way(key: bytes) -> None:
    """A wrong data key and a flipped ciphertext bit are both EnvelopeMismatch."""
    sealed = seal(CANARY, key, WRAPPED, REF, LOCATION)
    with pytest.raises(EnvelopeMismatch):
        open_envelope(parse_envelope(sealed, REF, LOCATION), os.urandom(32), REF, LOCATION)
    raw = bytearray(base64.b64decode(str(sealed["ciphertext"])))
    raw[0] ^= 1
    tampered = {**sealed, "ciphertext": base64.b64encode(bytes(raw)).decode()}
    with pytest.raises(EnvelopeMismatch):
        open_envelope(parse_envelope(tampered, REF, LOCATION), key, REF, LOCATION)


def test_plaintext_kv_entry_is_refused_with_a_reseed_hint() -> None:
    """A raw `kv put` is not an envelope: refused, with the command to re-seed, without the value."""
    with pytest.raises(NotAnEnvelope) as info:
        parse_envelope({"value": CANARY.decode()}, REF, LOCATION)
    message = str(info.value)
    assert f"gtc-secrets put {REF.uri}" in message
    assert LOCATION in message
    assert CANARY.decode() not in message


def _sealed(key: bytes) -> dict[str, object]:
    return seal(CANARY, key, WRAPPED, REF, LOCATION)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"gtc_envelope": 2}, "unsupported envelope version 2"),
        ({"gtc_envelope": "1"}, "must be an integer"),
        ({"gtc_envelope": True}, "must be an integer"),
        ({"alg": "AES-128-CBC"}, "'alg' must be"),
        ({"alg": None}, "'alg' must be"),
        ({"wrapped_key": "plain"}, "transit ciphertext"),
        ({"wrapped_key": 3}, "transit ciphertext"),
        ({"nonce": "!!!"}, "not valid base64"),
        ({"nonce": base64.b64encode(b"short").decode()}, "12 bytes"),
        ({"nonce": None}, "missing or not a string"),
        ({"ciphertext": base64.b64encode(b"x" * 16).decode()}, "too short"),
        ({"ciphertext": CANARY.decode()}, "not valid base64"),
        ({"extra": "x"}, "unknown envelope field 'extra'"),
    ],
)
def test_malformed_envelopes_are_refused(key: bytes, change: dict[str, object], reason: str) -> None:
    """Each invalid field is named; no field value is echoed."""
    data = {**_sealed(key), **change}
    with pytest.raises(MalformedEnvelope, match=reason) as info:
        parse_envelope(data, REF, LOCATION)
    assert CANARY.decode() not in str(info.value)


def test_seal_refuses_empty_value_and_bad_key(key: bytes) -> None:
    """Empty values and keys of the wrong size never produce an envelope."""
    with pytest.raises(ValueError, match="empty"):
        seal(b"", key, WRAPPED, REF, LOCATION)
    with pytest.raises(MalformedEnvelope, match="32 bytes"):
        seal(CANARY, key[:16], WRAPPED, REF, LOCATION)
    with pytest.raises(MalformedEnvelope, match="transit ciphertext"):
        seal(CANARY, key, "not-wrapped", REF, LOCATION)


def test_secret_value_never_shows_itself() -> None:
    """repr, str, f-strings, %-formatting and pickling never reveal the plaintext."""
    value = SecretValue(CANARY)
    rendered = [repr(value), str(value), f"{value}", "%s" % (value,), repr([value]), repr({"k": value})]  # noqa: UP031
    for text in rendered:
        assert CANARY.decode() not in text
        assert "redacted" in text
    with pytest.raises(TypeError):
        pickle.dumps(value)
    assert value == SecretValue(CANARY)
    assert value != SecretValue(b"other")
    assert len(value) == len(CANARY)


def test_secret_value_as_environment_text() -> None:
    """Only UTF-8 text without NUL can go into an environment; errors name the reference only."""
    assert SecretValue("héllo".encode()).reveal_text("X") == "héllo"
    with pytest.raises(ValueError, match="not UTF-8") as info:
        SecretValue(b"\xff" + CANARY).reveal_text("API_KEY=secret://llm/key")
    assert "API_KEY" in str(info.value)
    assert CANARY.decode() not in str(info.value)
    with pytest.raises(ValueError, match="NUL"):
        SecretValue(CANARY + b"\x00").reveal_text("X")
