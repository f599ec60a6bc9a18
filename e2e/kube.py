"""The I/O edge of the kind suite: docker, kind and kubectl as subprocesses, and port-forwards.

Every call takes an argument list (never a shell) and a timeout. A failing command raises
:class:`CommandFailed` with the command line and the tail of its stderr, never its stdout: stdout can hold
a token (``kubectl create token``) or a secret's envelope. Secret material goes to the tools through
stdin, files or environment variables, never through argv (which ``ps`` shows and errors quote).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from e2e.helpers import PollTimeout, ToolProbe, parse_port_forward, poll

STDERR_TAIL_CHARS = 2000
DEFAULT_TIMEOUT_S = 60.0


class CommandFailed(RuntimeError):
    """A tool exited non-zero (or timed out). ``stderr`` is kept for tests that assert on refusals."""

    def __init__(self, argv: Sequence[str], code: int | None, stderr: str) -> None:
        self.argv = list(argv)
        self.code = code
        self.stderr = stderr
        status = "timed out" if code is None else f"exit {code}"
        tail = stderr[-STDERR_TAIL_CHARS:].strip()
        super().__init__(f"`{' '.join(self.argv)}` failed ({status}){': ' + tail if tail else ''}")


def run(
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    input_text: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion within ``timeout`` seconds; text in, text out.

    ``env`` replaces the environment (None: inherit this process's). With ``check`` a non-zero exit raises
    CommandFailed; a timeout always does (the child is killed by ``subprocess.run``).
    """
    full_env = dict(env) if env is not None else None
    try:
        result = subprocess.run(
            list(argv),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise CommandFailed(argv, None, stderr) from None
    if check and result.returncode != 0:
        raise CommandFailed(argv, result.returncode, result.stderr)
    return result


# ---------------------------------------------------------------------------------------------
# Tools.
# ---------------------------------------------------------------------------------------------


def probe_tools() -> ToolProbe:
    """Ask docker, kind and kubectl whether they are there (bounded: a hung daemon socket times out)."""
    docker_info: tuple[int, str] | None = None
    if shutil.which("docker") is not None:
        try:
            result = run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=30, check=False)
            docker_info = (result.returncode, result.stderr)
        except CommandFailed as exc:
            docker_info = (-1, f"`docker info` timed out {exc.stderr}")
    kind_version: str | None = None
    if shutil.which("kind") is not None:
        result = run(["kind", "version"], timeout=30, check=False)
        kind_version = result.stdout if result.returncode == 0 else f"(kind version failed) {result.stderr}"
    return ToolProbe(
        docker_info=docker_info, kind_version=kind_version, kubectl=shutil.which("kubectl") is not None
    )


@dataclass(frozen=True)
class Kind:
    """One kind cluster, created with its own kubeconfig file (the user's ~/.kube/config is not touched)."""

    name: str
    kubeconfig: Path

    def create(self, config_file: Path, *, timeout: float = 600) -> None:
        run(
            [
                "kind", "create", "cluster", "--name", self.name, "--config", str(config_file),
                "--kubeconfig", str(self.kubeconfig), "--wait", "180s",
            ],
            timeout=timeout,
        )  # fmt: skip

    def delete(self, *, timeout: float = 300) -> None:
        run(
            ["kind", "delete", "cluster", "--name", self.name, "--kubeconfig", str(self.kubeconfig)],
            timeout=timeout,
        )

    def load_image(self, image: str, *, timeout: float = 600) -> None:
        run(["kind", "load", "docker-image", image, "--name", self.name], timeout=timeout)


def docker_build(
    *,
    tag: str,
    dockerfile: Path,
    context: Path,
    build_args: Mapping[str, str] | None = None,
    timeout: float = 1200,
) -> None:
    """``docker build``; build arguments carry public material only (a CA certificate), never a secret."""
    argv = ["docker", "build", "--tag", tag, "--file", str(dockerfile)]
    for key, value in (build_args or {}).items():
        argv += ["--build-arg", f"{key}={value}"]
    # The Dockerfiles use BuildKit features (RUN --mount, Dockerfile-specific .dockerignore): older
    # Docker engines need it asked for.
    run([*argv, str(context)], timeout=timeout, env={**os.environ, "DOCKER_BUILDKIT": "1"})


# ---------------------------------------------------------------------------------------------
# kubectl.
# ---------------------------------------------------------------------------------------------


def to_yaml(objects: Iterable[Mapping[str, Any]]) -> str:
    return yaml.safe_dump_all([dict(o) for o in objects], sort_keys=False)


@dataclass(frozen=True)
class Kubectl:
    """kubectl against one cluster's kubeconfig."""

    kubeconfig: Path

    def run(
        self,
        *args: str,
        timeout: float = DEFAULT_TIMEOUT_S,
        input_text: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
            timeout=timeout,
            input_text=input_text,
            check=check,
        )

    def json(self, *args: str, timeout: float = DEFAULT_TIMEOUT_S) -> Any:
        return json.loads(self.run(*args, "-o", "json", timeout=timeout).stdout)

    def apply(
        self, objects: Iterable[Mapping[str, Any]], *, timeout: float = DEFAULT_TIMEOUT_S, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``kubectl apply -f -``: exactly what a deployer runs, so admission refusals come back as they
        would to them (in stderr)."""
        return self.run("apply", "-f", "-", timeout=timeout, input_text=to_yaml(objects), check=check)

    def apply_kustomization(self, folder: Path, *, timeout: float = 180) -> None:
        self.run("apply", "-k", str(folder), timeout=timeout)

    def kustomize(self, folder: Path, *, timeout: float = DEFAULT_TIMEOUT_S) -> str:
        return self.run("kustomize", str(folder), timeout=timeout).stdout

    def delete(self, *args: str, timeout: float = 120) -> None:
        self.run("delete", "--ignore-not-found", "--wait=true", *args, timeout=timeout)

    def rollout_status(self, namespace: str, resource: str, *, timeout: float = 300) -> None:
        self.run(
            "rollout", "status", "-n", namespace, resource, f"--timeout={int(timeout)}s", timeout=timeout + 30
        )

    def pods(self, namespace: str, selector: str) -> dict[str, Any]:
        result: dict[str, Any] = self.json("get", "pods", "-n", namespace, "-l", selector)
        return result

    def logs(self, namespace: str, pod: str, *, previous: bool = False, timeout: float = 60) -> str:
        args = ["logs", "-n", namespace, pod, "--all-containers=true"]
        if previous:
            args.append("--previous")
        return self.run(*args, timeout=timeout, check=False).stdout


# ---------------------------------------------------------------------------------------------
# Port-forward.
# ---------------------------------------------------------------------------------------------


@contextmanager
def port_forward(
    kubectl: Kubectl, namespace: str, target: str, remote_port: int, *, log_file: Path, timeout: float = 60
) -> Iterator[int]:
    """``kubectl port-forward`` of ``target`` (``svc/vault``, ``pod/x``) to a free port on 127.0.0.1.

    Yields the local port. kubectl picks the port (``:REMOTE``) and prints it on stdout; stdout goes to
    ``log_file`` (kubectl prints a line per connection, a pipe nobody reads would fill up and block it),
    which is polled for the "Forwarding from" line. The process is stopped in ``finally``.
    """
    with log_file.open("w") as out:
        process = subprocess.Popen(
            [
                "kubectl", "--kubeconfig", str(kubectl.kubeconfig), "port-forward", "-n", namespace,
                "--address", "127.0.0.1", target, f":{remote_port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:

        def local_port() -> int | None:
            if process.poll() is not None:
                raise CommandFailed(process.args, process.returncode, log_file.read_text())  # type: ignore[arg-type]
            for line in log_file.read_text().splitlines():
                port = parse_port_forward(line)
                if port is not None:
                    return port
            return None

        try:
            port = poll(
                local_port, timeout=timeout, interval=0.2, what=f"port-forward to {namespace}/{target}"
            )
        except PollTimeout as exc:
            raise PollTimeout(f"{exc}; kubectl said: {log_file.read_text()[-STDERR_TAIL_CHARS:]}") from None
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)


# ---------------------------------------------------------------------------------------------
# HTTP to a port-forward.
# ---------------------------------------------------------------------------------------------


def http_post_status(url: str, *, headers: Mapping[str, str], body: bytes, timeout: float = 15) -> int:
    """POST and return the HTTP status (4xx/5xx included); only loopback URLs (port-forwards) are used."""
    import urllib.error
    import urllib.request

    if not url.startswith("http://127.0.0.1:"):
        raise ValueError("the suite only talks HTTP to its own port-forwards on 127.0.0.1")
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)
