"""Where a ``gtc-admission serve`` process spends its CPU under the benchmark's load: a py-spy profile.

    .venv/bin/pip install py-spy        # a profiler: not a dependency of the project or of make bench
    .venv/bin/python -m bench.profile [--pod small|twenty|denied] [--seconds 15] [--out FILE]

Starts one server (audit lines to a file, as in bench/run.py), loads it with wrk (1 thread, 16 connections)
with one pod of bench/pods.py, samples it with ``py-spy record --format raw`` (idle time excluded: the
shares are of the CPU the process used) and prints the share of each part of the request path. ``--out``
keeps the folded stacks (for flamegraph.pl or speedscope).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from bench import pods
from bench.run import THROUGHPUT_CONNECTIONS, gtc_admission, make_certs, write_bodies, wrk

PY_SPY: Final = Path(sys.executable).with_name("py-spy")
_FRAME: Final = re.compile(r"^(?P<function>.*?) \((?P<file>[^:()]*?)(?::\d+)?\)$")

# Parts of the request path, each named by the frames that are in it (function, file name). A sample
# counts for a part when one of its frames is on the stack; nested parts are listed under their parent.
PARTS: Final[tuple[tuple[str, int, tuple[tuple[str, str], ...]], ...]] = (
    ("our request handler (server._review), all of it", 0, (("_review", "server.py"),)),
    ("decision core: handle_review", 1, (("handle_review", "admission.py"),)),
    ("parse_review (typed view of the request)", 2, (("parse_review", "review.py"),)),
    ("judge (the rules, the planned edits)", 2, (("judge", "policy.py"),)),
    ("_outcome (response, patch, audit record)", 2, (("_outcome", "admission.py"),)),
    ("to_json_patch", 3, (("to_json_patch", "patch.py"),)),
    ("encode_patch (JSON + base64 of the patch)", 3, (("encode_patch", "patch.py"),)),
    ("decode_body (depth scan + orjson)", 1, (("decode_body", "admission.py"),)),
    ("audit line (build + write + flush)", 1, (("AuditWriter.write", "audit.py"),)),
    ("metrics (observe_review)", 1, (("Metrics.observe_review", "metrics.py"),)),
    ("the answer (web.Response)", 1, (("Response.__init__", "web_response.py"),)),
    ("reading the body (request.read)", 1, (("BaseRequest.read", "web_request.py"),)),
    (
        "aiohttp request dispatch, outside _review",
        0,
        (("Application._handle", "web_app.py"),),
    ),
    (
        "aiohttp: send the response (incl. TLS encryption and send())",
        0,
        (("RequestHandler.finish_response", "web_protocol.py"),),
    ),
    (
        "asyncio + TLS: receive and decrypt",
        0,
        (("_SelectorSocketTransport._read_ready", "selector_events.py"),),
    ),
)


def _frames(stack: str) -> set[tuple[str, str]]:
    found = set()
    for frame in stack.split(";"):
        match = _FRAME.match(frame)
        if match:
            found.add((match["function"], Path(match["file"]).name))
    return found


def summarize(folded: str) -> list[str]:
    """The share of samples in each part (inclusive), and of JSON work anywhere."""
    samples: list[tuple[set[tuple[str, str]], int]] = []
    for line in folded.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            samples.append((_frames(stack), int(count)))
    total = sum(count for _, count in samples) or 1

    def share(frames: Sequence[tuple[str, str]], *, outside: tuple[str, str] | None = None) -> float:
        hit = sum(
            count
            for names, count in samples
            if any(frame in names for frame in frames) and (outside is None or outside not in names)
        )
        return 100 * hit / total

    lines = [f"{total} samples (CPU only)", ""]
    top_level = 0.0  # the depth-0 parts never overlap: what they leave is the rest
    for label, depth, frames in PARTS:
        outside = ("_review", "server.py") if frames == (("Application._handle", "web_app.py"),) else None
        part = share(frames, outside=outside)
        top_level += part if depth == 0 else 0.0
        lines.append(f"{part:5.1f}%  {'  ' * depth}{label}")
    lines += [
        f"{100 - top_level:5.1f}%  the rest (HTTP parsing, event loop, certificate reloader ...)",
        "",
        "(orjson runs in C without Python frames: its time counts in the part that calls it)",
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.profile", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--pod", choices=pods.POD_NAMES, default=pods.SMALL)
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of sampling (default 15)")
    parser.add_argument("--out", type=Path, help="keep the folded stacks in this file")
    args = parser.parse_args(argv)
    if not PY_SPY.exists():
        parser.error(f"{PY_SPY} is missing: .venv/bin/pip install py-spy")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian: apt-get install -y wrk)")
    with tempfile.TemporaryDirectory(prefix="gtc-profile-") as tmp:
        workdir = Path(tmp)
        bodies = write_bodies(workdir)
        folded = args.out or workdir / "profile.folded"
        with gtc_admission("profiled", workdir, make_certs(workdir / "certs")) as server:
            # The load runs longer than the sampling, which starts once the load is under way.
            load = threading.Thread(
                target=wrk,
                args=(server.url(), [bodies[args.pod]]),
                kwargs={"connections": THROUGHPUT_CONNECTIONS, "seconds": args.seconds + 4},
            )
            load.start()
            try:
                threading.Event().wait(2)
                command = [str(PY_SPY), "record", "--pid", str(server.process.pid), "--rate", "250"]
                command += [
                    "--duration",
                    str(round(args.seconds)),
                    "--format",
                    "raw",
                    "--output",
                    str(folded),
                ]
                subprocess.run(command, check=True, capture_output=True)  # noqa: S603 (our own command line)
            finally:
                load.join()
        print(f"gtc-admission serve, pod {args.pod} ({pods.DESCRIPTIONS[args.pod]}), 16 connections:")
        print("\n".join(summarize(folded.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
