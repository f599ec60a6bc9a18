"""Fixtures shared by every test directory."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture
def restore_root_logging() -> Iterator[None]:
    """For tests that call a ``main()``: it configures the root logger (as it should in a process), so
    pytest's handlers and level are put back after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
