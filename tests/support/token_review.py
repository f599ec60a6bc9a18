"""A stand-in for the Kubernetes API server's TokenReview API, and nothing else.

There is no Kubernetes API server in the integration tests. OpenBao's Kubernetes auth method validates a
login by POSTing the ServiceAccount JWT to ``/apis/authentication.k8s.io/v1/tokenreviews`` of the host it is
configured with; this module serves exactly that one endpoint, over real TLS on 127.0.0.1 (its own
self-signed CA), and answers the way the API server does:

- the caller must present ``Authorization: Bearer <reviewer JWT>`` issued here for the token-reviewer
  ServiceAccount: a missing, forged or expired bearer, or one whose audience is not the API server's, gets
  a 401 ``Unauthorized`` Status (that includes a worker's own JWT, which Vault sends as bearer when its
  ``token_reviewer_jwt`` was dropped); a valid API-server token of another identity gets 403 ``Forbidden``;
- the reviewed JWT is really verified: RS256 signature with the test key, ``exp``/``nbf``, issuer, the
  ServiceAccount subject, and audiences (``spec.audiences`` must intersect the token's ``aud``; the
  intersection is answered in ``status.audiences``; no ``spec.audiences`` means the API server's own);
- the answer is a ``TokenReview`` with ``status.authenticated``, ``status.user`` (username
  ``system:serviceaccount:<ns>:<sa>``, the ServiceAccount's uid, its groups) and ``status.audiences``,
  or ``authenticated: false`` with an ``error``.

It does not know which ServiceAccounts exist: every well-signed, unexpired token is for an existing one.
Tokens are made by ``sign`` in the projected-token claim format; ``wrong_key`` signs with a key this
server does not trust. ``reviews`` counts the TokenReviews it answered, so tests can assert Vault called it.
Signing and verification use ``cryptography`` only (no JWT library).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gtc_admission.tls import generate_certificates, write_certificates

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
API_VERSION = "authentication.k8s.io/v1"
KIND = "TokenReview"
# What a kind/kubeadm cluster uses as service-account issuer and API server audience.
DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"
API_SERVER_AUDIENCE = "https://kubernetes.default.svc.cluster.local"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
# The identity Vault's token_reviewer_jwt stands for (bound to system:auth-delegator in a real cluster).
REVIEWER_NAMESPACE = "vault"
REVIEWER_SERVICE_ACCOUNT = "vault-token-reviewer"
REVIEWER_TTL_SECONDS = 24 * 3600
MAX_BODY_BYTES = 1 << 20
JWT_ALGORITHM = "RS256"
# A fixed namespace for uuid5, so a ServiceAccount's uid is the same in every token and every review.
_UID_NAMESPACE = uuid.UUID("6f1f7f3c-4f9d-4b7e-9a51-2c2f4bb9a0d1")


class TokenError(ValueError):
    """A JWT that the API server would refuse; the message is safe to show (never the token)."""


# --- JWT: encode, sign, verify (pure functions) -------------------------------------------------------


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as error:
        raise TokenError("malformed token: bad base64") from error


def key_id(public_key: rsa.RSAPublicKey) -> str:
    """The kid the API server puts in its token headers: a hash of the public key."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return _b64url_encode(digest.finalize())


def sign_jwt(claims: Mapping[str, Any], key: rsa.RSAPrivateKey) -> str:
    """A compact RS256 JWS of ``claims``."""
    header = {"alg": JWT_ALGORITHM, "kid": key_id(key.public_key())}
    signing_input = ".".join(
        _b64url_encode(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64url_encode(signature)}"


def service_account_uid(namespace: str, service_account: str) -> str:
    """A stable uid per ServiceAccount (the API server returns the object's uid)."""
    return str(uuid.uuid5(_UID_NAMESPACE, f"{namespace}/{service_account}"))


def service_account_claims(
    namespace: str,
    service_account: str,
    *,
    audiences: list[str],
    issuer: str = DEFAULT_ISSUER,
    ttl_seconds: int = 600,
    now: int | None = None,
) -> dict[str, Any]:
    """The claims of a projected ServiceAccount token, as the kubelet gets them from the API server."""
    issued = int(time.time()) if now is None else now
    return {
        "aud": list(audiences),
        "exp": issued + ttl_seconds,
        "iat": issued,
        "nbf": issued,
        "iss": issuer,
        "jti": str(uuid.uuid4()),
        "sub": f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{service_account}",
        "kubernetes.io": {
            "namespace": namespace,
            "serviceaccount": {
                "name": service_account,
                "uid": service_account_uid(namespace, service_account),
            },
        },
    }


def verify_jwt(token: str, public_key: rsa.RSAPublicKey, *, issuer: str, now: int) -> dict[str, Any]:
    """Claims of ``token`` if it is an RS256 JWT signed by ``public_key``, from ``issuer``, valid ``now``."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("malformed token: not a compact JWS")
    try:
        header = json.loads(_b64url_decode(parts[0]))
        claims = json.loads(_b64url_decode(parts[1]))
    except json.JSONDecodeError as error:
        raise TokenError("malformed token: bad JSON") from error
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenError("malformed token: header and claims must be objects")
    # Only the algorithm we sign with: never "none", never an HMAC keyed with the public key.
    if header.get("alg") != JWT_ALGORITHM:
        raise TokenError(f"unsupported signing algorithm {header.get('alg')!r}")
    try:
        public_key.verify(
            _b64url_decode(parts[2]),
            f"{parts[0]}.{parts[1]}".encode("ascii"),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except InvalidSignature as error:
        raise TokenError("invalid signature") from error
    if claims.get("iss") != issuer:
        raise TokenError("token issuer is not trusted")
    exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
    if not isinstance(exp, int) or now >= exp:
        raise TokenError("token has expired")
    if isinstance(nbf, int) and now < nbf:
        raise TokenError("token is not valid yet")
    return claims


def _audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list) and all(isinstance(item, str) for item in aud):
        return list(aud)
    return []


def _service_account(claims: Mapping[str, Any]) -> tuple[str, str, str]:
    """(namespace, name, uid) of a ServiceAccount token; the subject and private claims must agree."""
    subject = claims.get("sub")
    private = claims.get("kubernetes.io")
    if not isinstance(subject, str) or not subject.startswith(SERVICE_ACCOUNT_PREFIX):
        raise TokenError("token subject is not a service account")
    namespace, _, name = subject.removeprefix(SERVICE_ACCOUNT_PREFIX).partition(":")
    if not isinstance(private, dict) or not isinstance(private.get("serviceaccount"), dict):
        raise TokenError("token has no kubernetes.io service account claims")
    account = private["serviceaccount"]
    if private.get("namespace") != namespace or account.get("name") != name:
        raise TokenError("token subject does not match its service account claims")
    uid = account.get("uid")
    if not namespace or not name or not isinstance(uid, str):
        raise TokenError("token service account claims are incomplete")
    return namespace, name, uid


def review_token(
    spec: Mapping[str, Any],
    public_key: rsa.RSAPublicKey,
    *,
    issuer: str,
    api_audiences: list[str],
    now: int,
) -> dict[str, Any]:
    """The ``status`` of a TokenReview of ``spec`` (pure: no I/O, the clock is an argument)."""
    token = spec.get("token")
    wanted = spec.get("audiences") or api_audiences
    if not isinstance(token, str) or not token:
        return {"authenticated": False, "error": "token is required", "user": {}}
    try:
        claims = verify_jwt(token, public_key, issuer=issuer, now=now)
        namespace, name, uid = _service_account(claims)
        token_audiences = _audiences(claims)
        matched = [aud for aud in wanted if aud in token_audiences]
        if not matched:
            raise TokenError(
                f"token audiences {json.dumps(token_audiences)} is invalid for the target audiences "
                f"{json.dumps(list(wanted))}"
            )
    except TokenError as error:
        # Same shape as the API server's answer for a bad bearer token (the token itself is never echoed).
        return {"authenticated": False, "error": f"[invalid bearer token, {error}]", "user": {}}
    return {
        "authenticated": True,
        "user": {
            "username": f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}",
            "uid": uid,
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{namespace}",
                "system:authenticated",
            ],
        },
        "audiences": matched,
    }


def status_object(code: HTTPStatus, message: str) -> dict[str, Any]:
    """A ``meta/v1 Status`` error, as the API server answers a refused request."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": code.phrase.replace(" ", ""),
        "code": int(code),
    }


# --- TLS material -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca_pem: str
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """A self-signed CA and a server certificate for 127.0.0.1/localhost signed by it, written as PEM.

    The same generator ``gtc-admission certs`` uses: one certificate code path in the project.
    """
    bundle = generate_certificates(["localhost"], [LOOPBACK])
    paths = write_certificates(bundle, directory)
    return TlsFiles(
        ca_pem=bundle.ca_cert_pem.decode("ascii"),
        ca_file=paths.ca_cert,
        cert_file=paths.cert,
        key_file=paths.key,
    )


def new_signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# --- the HTTPS server ---------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _HttpServer
    # A stalled client must not hold a handler thread forever.
    timeout = 10

    def do_POST(self) -> None:
        self.server.owner.handle_post(self)

    def do_GET(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, status_object(HTTPStatus.METHOD_NOT_ALLOWED, "only POST"))

    def _send(self, code: HTTPStatus, body: Mapping[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line carries no token (they travel in the header and body), so it is safe to log.
        log.debug("token review endpoint: " + format, *args)


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: TokenReviewServer


class TokenReviewServer:
    """The TokenReview stand-in: an HTTPS server in a background thread of this process."""

    def __init__(
        self,
        workdir: Path,
        *,
        issuer: str = DEFAULT_ISSUER,
        api_audiences: tuple[str, ...] = (API_SERVER_AUDIENCE,),
    ) -> None:
        self.workdir = workdir
        self.issuer = issuer
        self.api_audiences = list(api_audiences)
        self.key = new_signing_key()
        # Same claim format, same issuer, but a key this server does not trust.
        self.wrong_key = new_signing_key()
        self.tls = make_tls_files(workdir)
        self.reviewer_jwt = self.sign(
            REVIEWER_NAMESPACE,
            REVIEWER_SERVICE_ACCOUNT,
            audience=API_SERVER_AUDIENCE,
            ttl_seconds=REVIEWER_TTL_SECONDS,
        )
        self._lock = threading.Lock()
        self._reviews = 0
        self._authenticated = 0
        self._refused_callers = 0
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    # --- what tests use --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the token review server is not running")
        return f"https://{LOOPBACK}:{self._httpd.server_address[1]}"

    @property
    def ca_pem(self) -> str:
        return self.tls.ca_pem

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_file

    @property
    def reviews(self) -> int:
        """TokenReviews answered (authenticated or not) to an authorised caller."""
        with self._lock:
            return self._reviews

    @property
    def authenticated_reviews(self) -> int:
        with self._lock:
            return self._authenticated

    @property
    def refused_callers(self) -> int:
        """Requests refused with 401/403 because of the caller's bearer token."""
        with self._lock:
            return self._refused_callers

    def sign(
        self,
        namespace: str,
        service_account: str,
        *,
        audience: str | list[str] = "vault",
        ttl_seconds: int = 600,
        key: rsa.RSAPrivateKey | None = None,
        issuer: str | None = None,
    ) -> str:
        """A projected ServiceAccount token for ``namespace``/``service_account``, signed by ``key``
        (default: the key this server trusts; pass ``self.wrong_key`` for one it must refuse)."""
        audiences = [audience] if isinstance(audience, str) else list(audience)
        claims = service_account_claims(
            namespace,
            service_account,
            audiences=audiences,
            issuer=issuer or self.issuer,
            ttl_seconds=ttl_seconds,
        )
        return sign_jwt(claims, key or self.key)

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        httpd = _HttpServer((LOOPBACK, 0), _Handler)
        httpd.owner = self
        # do_handshake_on_connect=False: the TLS handshake happens in the handler thread on first read,
        # so one slow client cannot block the accept loop.
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        try:
            httpd.shutdown()
        finally:
            httpd.server_close()
            if self._thread is not None:
                self._thread.join(timeout=10)
                self._thread = None

    # --- request handling ------------------------------------------------------------------------------

    def _authorize(self, header: str | None) -> tuple[HTTPStatus, str] | None:
        """None if the caller may create TokenReviews, else the refusal (status, message)."""
        scheme, _, bearer = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not bearer.strip():
            return HTTPStatus.UNAUTHORIZED, "Unauthorized"
        status = review_token(
            {"token": bearer.strip(), "audiences": self.api_audiences},
            self.key.public_key(),
            issuer=self.issuer,
            api_audiences=self.api_audiences,
            now=int(time.time()),
        )
        if not status["authenticated"]:
            return HTTPStatus.UNAUTHORIZED, "Unauthorized"
        username = status["user"]["username"]
        if username != f"{SERVICE_ACCOUNT_PREFIX}{REVIEWER_NAMESPACE}:{REVIEWER_SERVICE_ACCOUNT}":
            return HTTPStatus.FORBIDDEN, (
                f'tokenreviews.authentication.k8s.io is forbidden: User "{username}" cannot create resource '
                '"tokenreviews" in API group "authentication.k8s.io" at the cluster scope'
            )
        return None

    def handle_post(self, handler: _Handler) -> None:
        if handler.path.split("?", 1)[0] != REVIEW_PATH:
            handler._send(
                HTTPStatus.NOT_FOUND,
                status_object(HTTPStatus.NOT_FOUND, "the server could not find the requested resource"),
            )
            return
        refusal = self._authorize(handler.headers.get("Authorization"))
        if refusal is not None:
            with self._lock:
                self._refused_callers += 1
            handler._send(refusal[0], status_object(*refusal))
            return
        try:
            length = int(handler.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY_BYTES:
                raise ValueError("bad Content-Length")
            body = json.loads(handler.rfile.read(length))
            if not isinstance(body, dict) or body.get("kind", KIND) != KIND:
                raise ValueError("not a TokenReview")
            spec = body.get("spec")
            if not isinstance(spec, dict):
                raise ValueError("no spec")
        except ValueError as error:
            handler._send(HTTPStatus.BAD_REQUEST, status_object(HTTPStatus.BAD_REQUEST, str(error)))
            return
        status = review_token(
            spec,
            self.key.public_key(),
            issuer=self.issuer,
            api_audiences=self.api_audiences,
            now=int(time.time()),
        )
        with self._lock:
            self._reviews += 1
            self._authenticated += bool(status["authenticated"])
        log.debug("token review: authenticated=%s", status["authenticated"])
        handler._send(
            HTTPStatus.CREATED,
            {
                "kind": KIND,
                "apiVersion": API_VERSION,
                "metadata": {"creationTimestamp": None},
                "spec": {"audiences": spec.get("audiences") or []},
                "status": status,
            },
        )


@contextmanager
def running_token_review(workdir: Path) -> Iterator[TokenReviewServer]:
    """Start the TokenReview stand-in and stop it on exit, whatever happens."""
    server = TokenReviewServer(workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def random_token_text() -> str:
    """Something that is not a JWT at all (for 'malformed token' tests)."""
    return secrets.token_urlsafe(32)
