"""Fixtures for the QMP tests.

* ``short_dir``: a directory with a short path (unix socket paths are limited to 107 bytes).
* ``fake``: starts :class:`fake_qmp.FakeQmp` servers, closed (and checked) after the test.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from . import fake_qmp


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="xenvcpu-qmp-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


FakeFactory = Callable[..., fake_qmp.FakeQmp]


@pytest.fixture
def fake(short_dir: Path) -> Iterator[FakeFactory]:
    servers: list[fake_qmp.FakeQmp] = []

    def start(
        handler: fake_qmp.Handler = fake_qmp.default_handler,
        *,
        greeting: bytes | None = fake_qmp.GREETING_LINE,
        capabilities: bool = True,
    ) -> fake_qmp.FakeQmp:
        path = str(short_dir / f"fake{len(servers)}.sock")
        server = fake_qmp.FakeQmp(path, handler, greeting=greeting, capabilities=capabilities)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
