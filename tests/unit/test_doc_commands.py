"""The kubectl commands the Markdown docs tell a user to run: flags that exist, logs that show every line.

The rotation check of certs/README.md ran `kubectl logs -l ...` and printed nothing although both pods had
reloaded: with a label selector kubectl shows only the last 10 lines of each pod (`--tail` defaults to 10
then), and every review writes an audit line to the same log (issue 10). Commands are read from fenced code
blocks and inline code of every *.md of the repository; flags are checked against `kubectl <command>
--help` and `kubectl options` when kubectl is installed.
"""

from __future__ import annotations

import functools
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed: cannot read its flags")

FENCE = re.compile(r"^\s*```(\w*)")
# Fences that only ever show output (a JSON record may quote a kubectl command inside a string).
OUTPUT_FENCES = frozenset({"json"})
INLINE_CODE = re.compile(r"`([^`\n]+)`")
KUBECTL_WORD = re.compile(r"(?<![\w./-])kubectl(?=\s)")
# Where one command of a shell line ends (outside quotes): a pipe, a list, a subshell's end.
COMMAND_END = frozenset("|;&)`")
# Global flags that take a value, needed to find the subcommand without kubectl (the docs use -n).
GLOBAL_VALUE_FLAGS = frozenset({"-n", "--namespace", "--context", "--kubeconfig", "--cluster", "--user"})
SELECTOR_FLAGS = ("-l", "--selector")


@dataclass(frozen=True)
class DocCommand:
    where: str  # file:line
    argv: tuple[str, ...]  # after "kubectl"

    @property
    def own_args(self) -> tuple[str, ...]:
        """The arguments kubectl reads: those before ``--`` (after it: the command ``exec`` runs)."""
        return self.argv[: self.argv.index("--")] if "--" in self.argv else self.argv

    @property
    def positionals(self) -> list[str]:
        """Words that are not flags or the values of global flags: the subcommand path first."""
        words: list[str] = []
        skip = False
        for token in self.own_args:
            if skip:
                skip = False
            elif token in GLOBAL_VALUE_FLAGS:
                skip = True
            elif not token.startswith("-"):
                words.append(token)
        return words

    def flag_names(self) -> list[str]:
        return [token.split("=", 1)[0] for token in self.own_args if token.startswith("-") and token != "-"]


def _cut(text: str, *, at_comment: bool) -> str:
    """``text`` up to the end of its first shell command (or, ``at_comment``, up to its comment), quotes
    respected; a backslash-escaped character never ends it."""
    quote = ""
    for index, char in enumerate(text):
        escaped = index > 0 and text[index - 1] == "\\"
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"" and not escaped:
            quote = char
        elif at_comment:
            if char == "#" and (index == 0 or text[index - 1].isspace()):
                return text[:index]
        elif char in COMMAND_END and not escaped:
            return text[:index]
    return text


def commands_in(text: str, where: str) -> Iterator[DocCommand]:
    """Every kubectl command of Markdown ``text``: in fenced blocks (continuation lines joined) and in
    inline code (a table's escaped pipe ``\\|`` is a pipe there)."""
    in_fence = output = False
    pending = ""
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        fence = FENCE.match(line)
        if fence:
            in_fence, pending = not in_fence, ""
            output = in_fence and fence.group(1) in OUTPUT_FENCES
            continue
        if output:
            continue
        snippets: list[tuple[int, str]] = []
        if in_fence:
            if not pending:
                start = number
            if line.rstrip().endswith("\\"):
                pending += _cut(line.rstrip()[:-1], at_comment=True) + " "
                continue
            snippets.append((start, _cut(pending + line, at_comment=True)))
            pending = ""
        else:
            snippets.extend((number, code.replace("\\|", "|")) for code in INLINE_CODE.findall(line))
        for line_number, snippet in snippets:
            for match in KUBECTL_WORD.finditer(snippet):
                argv = shlex.split(_cut(snippet[match.end() :], at_comment=False))
                yield DocCommand(f"{where}:{line_number}", tuple(argv))


def documented_commands() -> list[DocCommand]:
    docs = sorted(
        path
        for path in ROOT.rglob("*.md")
        if not any(part.startswith(".") for part in path.relative_to(ROOT).parts)
    )
    return [
        command
        for path in docs
        for command in commands_in(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]


def misses_lines(command: DocCommand) -> bool:
    """A ``kubectl logs`` with a label selector and without ``--tail=-1``: it shows 10 lines per pod."""
    if command.positionals[:1] != ["logs"]:
        return False
    argv = command.argv
    selector = any(token in SELECTOR_FLAGS or token.startswith("--selector=") for token in argv)
    every_line = "--tail=-1" in argv or any(
        token == "--tail" and index + 1 < len(argv) and argv[index + 1] == "-1"
        for index, token in enumerate(argv)
    )
    return selector and not every_line


# --- reading commands out of Markdown ----------------------------------------------------------------


def test_commands_are_read_from_fences_continuations_and_inline_code() -> None:
    """Continuations are joined, pipes and $( ) end a command, comments go, a table's \\| is a pipe."""
    text = "\n".join(
        [
            "Run `kubectl -n vault logs deploy/vault \\| sed -n 's/x//p'` first.",
            "```sh",
            "# kubectl in a comment is no command",
            "kubectl -n acme get pods -l a=b \\",
            "    -o jsonpath='{.items[0].metadata.name}'   # a comment | with a pipe",
            'export T="$(kubectl -n vault logs deploy/vault | sed -n 1p)"',
            "```",
            "kubectl in prose is no command.",
        ]
    )
    found = [(c.where, c.argv) for c in commands_in(text, "x.md")]
    assert found == [
        ("x.md:1", ("-n", "vault", "logs", "deploy/vault")),
        ("x.md:4", ("-n", "acme", "get", "pods", "-l", "a=b", "-o", "jsonpath={.items[0].metadata.name}")),
        ("x.md:6", ("-n", "vault", "logs", "deploy/vault")),
    ]


@pytest.mark.parametrize(
    ("line", "flagged"),
    [
        # The rotation check as issue 10 found it: 10 lines per pod, the reload line buried.
        ("kubectl -n gtc-system logs -l app=x --since=5m | grep reloaded", True),
        ("kubectl logs --selector app=x", True),
        ("kubectl logs --selector=app=x --tail=100", True),
        ("kubectl -n gtc-system logs -l app=x --since=5m --tail=-1 --prefix | grep reloaded", False),
        ("kubectl logs -l app=x --tail -1", False),
        ("kubectl -n vault logs deploy/vault", False),  # no selector: every line already
        ("kubectl -n logs get pods -l app=x", False),  # a namespace named logs
    ],
)
def test_misses_lines(line: str, flagged: bool) -> None:
    """Only a selector `kubectl logs` without --tail=-1 is flagged."""
    (command,) = commands_in(f"`{line}`", "x.md")
    assert misses_lines(command) is flagged


# --- the docs ----------------------------------------------------------------------------------------


def test_documented_selector_logs_show_every_line() -> None:
    """Every documented `kubectl logs -l` carries --tail=-1 (the rotation check among them)."""
    commands = documented_commands()
    selector_logs = [
        c for c in commands if c.positionals[:1] == ["logs"] and set(c.argv) & set(SELECTOR_FLAGS)
    ]
    assert any(c.where.startswith("certs/README.md") for c in selector_logs)
    assert [c.where for c in commands if misses_lines(c)] == []


def _kubectl(*args: str) -> str:
    assert KUBECTL is not None
    # HOME=/: no kubeconfig or cache of the developer's is read; help needs neither.
    result = subprocess.run(
        [KUBECTL, *args], capture_output=True, text=True, timeout=60, check=False, env={"HOME": "/"}
    )
    assert result.returncode == 0, f"kubectl {' '.join(args)} failed: {result.stderr}"
    return result.stdout


@functools.cache
def _help(path: tuple[str, ...]) -> str:
    return _kubectl(*path, "--help")


HELP_FLAG = re.compile(r"^\s+(?:(-\w), )?(--[\w-]+)=", re.MULTILINE)
# A subcommand line of a help text: two spaces, the name, two or more spaces, its summary (examples have one).
HELP_SUBCOMMAND = re.compile(r"^ {2}([a-z][\w-]*) {2,}\S", re.MULTILINE)


def _flags(help_text: str) -> set[str]:
    return {name for match in HELP_FLAG.finditer(help_text) for name in match.groups() if name}


def _command_path(positionals: list[str]) -> tuple[str, ...]:
    """The longest prefix of ``positionals`` that kubectl knows as a (sub)command, e.g. create token."""
    path: tuple[str, ...] = ()
    for word in positionals:
        if word not in HELP_SUBCOMMAND.findall(_help(path)):
            break
        path = (*path, word)
    return path


@needs_kubectl
def test_documented_kubectl_flags_exist() -> None:
    """Every flag of every documented kubectl command is one that command (or kubectl itself) has."""
    commands = documented_commands()
    assert commands
    global_flags = _flags(_kubectl("options"))
    unknown = []
    for command in commands:
        path = _command_path(command.positionals)
        assert path, f"{command.where}: kubectl {' '.join(command.argv)}: no such kubectl command"
        known = global_flags | _flags(_help(path))
        unknown += [
            f"{command.where}: kubectl {' '.join(path)} {flag}"
            for flag in command.flag_names()
            if flag not in known
        ]
    assert unknown == []
