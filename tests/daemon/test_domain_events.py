"""xenstored's domain events (``@introduceDomain``, ``@releaseDomain``) for the placement
watcher, against a scripted xenstored (xen-interfaces.md §5.6)."""

from __future__ import annotations

import time
from pathlib import Path

from xenvcpu.daemon.xenstore import XenstoreClient
from xenvcpu.toolstack import XenstoreDomainEvents

from .xs_script import Peer, ScriptedServer

WATCH, WATCH_EVENT = 4, 15


def test_xenstore_domain_events(tmp_path: Path) -> None:
    """Both special watches are set; their first firing is swallowed; a later event is
    reported once however many arrive together."""
    tokens: list[str] = []

    def script(peer: Peer) -> None:
        for _ in range(2):
            mtype, rid, tx, payload = peer.recv()
            assert mtype == WATCH
            path, token, _ = payload.split(b"\0")
            tokens.append(path.decode())
            peer.send(WATCH, rid, tx, b"OK\0")
            peer.send(WATCH_EVENT, 0, 0, path + b"\0" + token + b"\0")
        time.sleep(0.3)
        for _ in range(3):
            peer.send(WATCH_EVENT, 0, 0, b"@introduceDomain\0t\0")
        time.sleep(1)

    path = str(tmp_path / "xs.sock")
    server = ScriptedServer(path, script)
    events = XenstoreDomainEvents(XenstoreClient(path, timeout=5))
    try:
        assert tokens == ["@introduceDomain", "@releaseDomain"]
        assert events.wait(0.05) is False
        assert events.wait(5) is True
        assert events.wait(0.1) is False  # the burst counted once
    finally:
        events.close()
        server.close()
