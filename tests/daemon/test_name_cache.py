"""The domain-name cache of the xenstore toolstack (:class:`DomainNameCache`) against a
real oxenstored: names kept by (domid, UUID), forgotten by the watch on /local/domain."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenvcpu._impl import DomainInfo
from xenvcpu.daemon.xenstore import XenstoreClient
from xenvcpu.errors import XenstoreError
from xenvcpu.toolstack import DomainNameCache, XenstoreToolstack

from .xs_script import Peer, ScriptedServer

U1 = "00000000-0000-0000-0000-000000000001"
U2 = "00000000-0000-0000-0000-000000000002"
WATCH, WATCH_EVENT = 4, 15
HEADER = struct.Struct("<4I")


def name_path(domid: int) -> str:
    return f"/local/domain/{domid}/name"


def listing(domid: int, uuid: str = U1) -> list[DomainInfo]:
    return [DomainInfo(domid, uuid, 1, 1)]


@pytest.fixture
def toolstack(xenstored_path: str) -> Iterator[XenstoreToolstack]:
    ts = XenstoreToolstack(xenstored_path)
    try:
        yield ts
    finally:
        ts.close()


def names(ts: XenstoreToolstack, domid: int, uuid: str = U1) -> dict[int, str]:
    return ts.names_with(lambda: listing(domid, uuid))[1]


def test_first_listing_reads_second_sets_the_watch_then_cached(
    toolstack: XenstoreToolstack, xs: XenstoreClient, domid: int
) -> None:
    xs.write(name_path(domid), "web")
    cache = toolstack.names
    assert names(toolstack, domid) == {domid: "web"}
    assert not cache.watching and cache.reads == 1  # one listing: no watch set up
    assert names(toolstack, domid) == {domid: "web"}
    assert cache.watching and cache.reads == 2
    for _ in range(3):
        assert names(toolstack, domid) == {domid: "web"}
    assert cache.reads == 2  # from the cache, no round trip


def test_rename_shows_in_the_next_listing(
    toolstack: XenstoreToolstack, xs: XenstoreClient, domid: int
) -> None:
    xs.write(name_path(domid), "before")
    for _ in range(3):
        assert names(toolstack, domid) == {domid: "before"}
    reads = toolstack.names.reads
    xs.write(name_path(domid), "after")  # as xl rename does (in its transaction)
    toolstack.names.sync()
    assert names(toolstack, domid) == {domid: "after"}
    assert toolstack.names.reads == reads + 1
    # a node of the domain that is not its name forgets nothing
    xs.write(f"/local/domain/{domid}/memory/target", "1024")
    toolstack.names.sync()
    assert names(toolstack, domid) == {domid: "after"}
    assert toolstack.names.reads == reads + 1


def test_a_removed_domain_loses_its_cached_name(
    toolstack: XenstoreToolstack, xs: XenstoreClient, domid: int
) -> None:
    xs.write(name_path(domid), "gone-soon")
    for _ in range(3):
        assert names(toolstack, domid) == {domid: "gone-soon"}
    xs.rm(f"/local/domain/{domid}")
    toolstack.names.sync()
    assert names(toolstack, domid) == {}  # nameless: the Host shows its default name
    assert len(toolstack.names) == 0


def test_complete_listing_drops_names_of_domains_not_listed(
    toolstack: XenstoreToolstack, xs: XenstoreClient, domid: int
) -> None:
    other = domid + 5000
    xs.write(name_path(domid), "a")
    xs.write(name_path(other), "b")
    both = listing(domid) + listing(other, U2)
    for _ in range(2):
        assert toolstack.names_with(lambda: both)[1] == {domid: "a", other: "b"}
    assert len(toolstack.names) == 2
    toolstack.names_with(lambda: listing(domid))
    assert len(toolstack.names) == 1
    xs.rm(f"/local/domain/{other}")


def silent_watch(peer: Peer) -> None:
    """A xenstored that accepts the watch and never fires it."""
    mtype, rid, tx, _ = peer.recv()
    assert mtype == WATCH
    peer.send(WATCH, rid, tx, b"OK\0")
    try:
        peer.recv()  # until the client closes the connection
    except (EOFError, OSError):
        pass


def test_reused_domid_with_another_uuid_never_gets_the_old_name(
    tmp_path: Path, xenstored_path: str, xs: XenstoreClient, domid: int
) -> None:
    """Even when no event says so (here the watch never fires), the UUID tells a new domain
    on an old domid from the one whose name was kept."""
    server = ScriptedServer(str(tmp_path / "silent.sock"), silent_watch)
    cache = DomainNameCache(lambda: XenstoreClient(server.path, timeout=5))
    try:
        xs.write(name_path(domid), "old")
        for _ in range(3):
            assert cache.names(lambda: xs, lambda: listing(domid, U1))[1] == {domid: "old"}
        assert cache.watching
        xs.write(name_path(domid), "new")  # unseen: the watch is silent
        assert cache.names(lambda: xs, lambda: listing(domid, U1))[1] == {domid: "old"}
        assert cache.names(lambda: xs, lambda: listing(domid, U2))[1] == {domid: "new"}
    finally:
        cache.close()
        server.close()


def test_no_watch_means_reading_every_time(tmp_path: Path, xs: XenstoreClient, domid: int) -> None:
    missing = str(tmp_path / "no-such-socket")
    cache = DomainNameCache(lambda: XenstoreClient(missing, timeout=1))
    xs.write(name_path(domid), "one")
    for _ in range(3):
        assert cache.names(lambda: xs, lambda: listing(domid))[1] == {domid: "one"}
    assert cache.disabled is not None and "cannot be set up" in cache.disabled
    assert not cache.watching and cache.reads == 3
    xs.write(name_path(domid), "two")
    assert cache.names(lambda: xs, lambda: listing(domid))[1] == {domid: "two"}


def test_lost_watch_connection_forgets_everything_then_gives_up(
    xenstored_path: str, xs: XenstoreClient, domid: int
) -> None:
    made: list[XenstoreClient] = []

    def connect() -> XenstoreClient:
        made.append(XenstoreClient(xenstored_path, timeout=5))
        return made[-1]

    cache = DomainNameCache(connect)
    xs.write(name_path(domid), "x")
    try:
        for losses in range(1, 4):
            for _ in range(2):
                cache.names(lambda: xs, lambda: listing(domid))
            assert cache.watching and len(cache) == 1
            made[-1].close()  # the connection is gone (xenstored restarted, ...)
            assert cache.names(lambda: xs, lambda: listing(domid))[1] == {domid: "x"}
            assert len(cache) == 0
            assert (cache.disabled is not None) == (losses == 3)
        assert len(made) == 3
    finally:
        cache.close()


def test_dropped_events_forget_everything(
    xenstored_path: str, xs: XenstoreClient, domid: int
) -> None:
    """Events the client's bounded queue dropped might have been renames."""
    cache = DomainNameCache(lambda: XenstoreClient(xenstored_path, timeout=5, max_events=2))
    xs.write(name_path(domid), "kept")
    try:
        for _ in range(3):
            cache.names(lambda: xs, lambda: listing(domid))
        reads = cache.reads
        for n in range(5):  # events of nodes that are no name: none forgets a name alone
            xs.write(f"/local/domain/{domid}/data/{n}", "x")
        cache.sync()
        cache.names(lambda: xs, lambda: listing(domid))
        assert cache.reads == reads + 1
    finally:
        cache.close()


def test_poll_watches_never_waits_and_reports_a_backlog(
    xenstored_path: str, xs: XenstoreClient, domid: int
) -> None:
    with XenstoreClient(xenstored_path, timeout=5, max_events=4096) as w:
        token = w.watch(f"/local/domain/{domid}")
        w.get_domain_path(0)  # the first firing has arrived
        first = w.poll_watches()
        assert [e.path for e in first.events] == [f"/local/domain/{domid}"]
        assert w.poll_watches().events == []
        for n in range(3):
            xs.write(f"/local/domain/{domid}/n{n}", "v")
        w.get_domain_path(0)
        got = w.poll_watches()
        assert [e.path for e in got.events] == [f"/local/domain/{domid}/n{n}" for n in range(3)]
        assert {e.token for e in got.events} == {token} and not got.backlog
    w.close()
    with pytest.raises(XenstoreError, match="closed"):
        w.poll_watches()


def test_more_waiting_than_one_look_reads_forgets_everything(
    xs: XenstoreClient, domid: int
) -> None:
    """A backlog on the watch connection: xenstored may be holding events back (C
    xenstored drops the ones unread for long), so no cached name is trusted."""
    ours, theirs = socket.socketpair()
    theirs.sendall(HEADER.pack(WATCH, 1, 0, 3) + b"OK\0")  # the reply to the first request
    cache = DomainNameCache(
        lambda: XenstoreClient.from_fd(ours.detach(), timeout=5, max_events=1 << 16),
        poll_bytes=4096,
    )
    xs.write(name_path(domid), "n")
    try:
        for _ in range(3):
            cache.names(lambda: xs, lambda: listing(domid))
        reads = cache.reads
        request = theirs.recv(4096)
        assert HEADER.unpack_from(request)[0] == WATCH
        token = request[HEADER.size :].split(b"\0")[1]
        event = f"/local/domain/{domid}/data/x".encode() + b"\0" + token + b"\0"
        few = HEADER.pack(WATCH_EVENT, 0, 0, len(event)) + event
        theirs.sendall(few * 10)  # less than one look reads: names kept
        cache.names(lambda: xs, lambda: listing(domid))
        assert cache.reads == reads
        theirs.sendall(few * (70_000 // len(few)))  # more than one recv: a backlog
        cache.names(lambda: xs, lambda: listing(domid))
        assert cache.reads == reads + 1
        cache.names(lambda: xs, lambda: listing(domid))
        assert cache.reads == reads + 1  # kept again
        renamed = f"/local/domain/{domid}/name".encode() + b"\0" + token + b"\0"
        theirs.sendall(HEADER.pack(WATCH_EVENT, 0, 0, len(renamed)) + renamed)
        cache.names(lambda: xs, lambda: listing(domid))
        assert cache.reads == reads + 2
    finally:
        cache.close()
        theirs.close()


def test_a_dropped_toolstack_closes_its_watch_connection_at_once(
    xenstored_path: str, xs: XenstoreClient, domid: int
) -> None:
    """No reference cycle holds the toolstack: dropping it (a Host dropped without
    close()) closes the names watch's connection right away, not at some later garbage
    collection (where an unclosed socket would warn)."""
    ts = XenstoreToolstack(xenstored_path)
    xs.write(name_path(domid), "x")
    for _ in range(2):
        names(ts, domid)
    watch = ts.names._watch
    assert watch is not None and not watch.closed
    del ts
    assert watch.closed
