"""Runs ``gtc_secrets.supervisor.supervise`` as a process of its own, so that tests can signal it, run it as
PID 1 of a new PID namespace, and read what it logs: ``python -m tests.support.supervisor_driver CONFIG``.

CONFIG is a JSON file: ``command`` (argv), ``env`` (the child's environment), ``on_change``,
``grace_seconds`` and ``changes_dir``. The secret changes come from that directory: the test writes
``1.json``, ``2.json``, ... (each a complete new environment, renamed into place whole) and the driver yields
each once, in order, the way the watcher yields a new environment per change. The exit code is supervise's.
Logs go to stderr at DEBUG: a test can check that no value is in them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gtc_secrets.supervisor import supervise

POLL_SECONDS = 0.05


def write_change(changes_dir: Path, number: int, env: dict[str, str]) -> None:
    """Hand the driver its ``number``-th change (from 1): written beside, renamed into place whole."""
    partial = changes_dir / f"{number}.json.partial"
    partial.write_text(json.dumps(env))
    partial.rename(changes_dir / f"{number}.json")


async def changes_from(changes_dir: Path) -> AsyncIterator[dict[str, str]]:
    number = 1
    while True:
        change = changes_dir / f"{number}.json"
        if change.exists():
            number += 1
            yield dict(json.loads(change.read_text()))
        else:
            await asyncio.sleep(POLL_SECONDS)


def main(argv: list[str]) -> int:
    config: dict[str, Any] = json.loads(Path(argv[0]).read_text())
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    return asyncio.run(
        supervise(
            config["command"],
            config["env"],
            changes_from(Path(config["changes_dir"])),
            on_change=config["on_change"],
            grace_seconds=config["grace_seconds"],
        )
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
