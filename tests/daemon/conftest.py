"""Fixtures for the daemon-path tests (xenstore client, vCPU helpers, SXP, xend).

* ``xenstored_path``: a REAL oxenstored (Debian's Xen 4.17 build) running without Xen
  for the whole session, see ``xenstored/xs_harness.py``.  When its packages cannot be
  downloaded the tests that use it are skipped with the exact reason; set
  ``XENVCPU_REQUIRE_XENSTORED=1`` (CI) to make that a failure instead.
* ``xs`` / ``xs2``: client connections to it; ``domid``: a fresh domain id per test, so
  tests never see each other's nodes in the shared daemon.
* ``xend``: the xend protocol double (``xend_double.py``) on a real unix socket.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenvcpu.daemon.xenstore import XenstoreClient

from . import xend_double
from .xenstored import xs_harness

_domids = itertools.count(100)


@pytest.fixture(scope="session")
def xenstored_path() -> Iterator[str]:
    try:
        prepared = xs_harness.prepare()
    except xs_harness.Unavailable as exc:
        reason = f"real oxenstored unavailable: {exc}"
        if os.environ.get("XENVCPU_REQUIRE_XENSTORED") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    daemon = xs_harness.Oxenstored(prepared)
    path = daemon.start()
    try:
        yield path
    finally:
        crashed = daemon.proc is not None and daemon.proc.poll() is not None
        log = daemon.log()
        daemon.cleanup()
        if crashed:
            pytest.fail(f"oxenstored died during the tests:\n{log}")


@pytest.fixture
def xs(xenstored_path: str) -> Iterator[XenstoreClient]:
    with XenstoreClient(xenstored_path, timeout=5) as client:
        yield client


@pytest.fixture
def xs2(xenstored_path: str) -> Iterator[XenstoreClient]:
    """A second, independent connection (another 'toolstack')."""
    with XenstoreClient(xenstored_path, timeout=5) as client:
        yield client


@pytest.fixture
def domid() -> int:
    """A domain id no other test uses (its /local/domain node is not created)."""
    return next(_domids)


@pytest.fixture
def xend(tmp_path: Path) -> Iterator[xend_double.XendDouble]:
    double = xend_double.XendDouble()
    double.serve_unix(str(tmp_path / "xend-socket"))
    try:
        yield double
    finally:
        double.shutdown()
