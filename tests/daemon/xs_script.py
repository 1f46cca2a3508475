"""A scripted xenstore peer for wire-level cases a real xenstored will not produce.

Late and out-of-order replies, watch events interleaved with replies, a daemon that
never answers, replies split into single bytes: each test writes a small script that
receives requests and sends raw messages (xen-interfaces.md §5.2 framing) on a real unix socket or
on one end of a socketpair (standing in for the xenbus device fd).
"""

from __future__ import annotations

import socket
import struct
import threading
from typing import Callable

HEADER = struct.Struct("<4I")


class Peer:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(10)

    def _exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError("client closed the connection")
            data += chunk
        return data

    def recv(self) -> tuple[int, int, int, bytes]:
        mtype, rid, tx, length = HEADER.unpack(self._exact(HEADER.size))
        return mtype, rid, tx, self._exact(length)

    def send(self, mtype: int, rid: int, tx: int, payload: bytes) -> None:
        self.sock.sendall(HEADER.pack(mtype, rid, tx, len(payload)) + payload)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)


Script = Callable[[Peer], None]


class ScriptedServer:
    """Listen on ``path``, accept ONE connection, run ``script`` on it in a thread."""

    def __init__(self, path: str, script: Script) -> None:
        self.path = path
        self.script = script
        self.error: BaseException | None = None
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(1)
        self.listener.settimeout(10)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                self.script(Peer(conn))
        except BaseException as exc:  # reported by close()
            self.error = exc
        finally:
            self.done.set()

    def close(self) -> None:
        self.done.wait(15)
        self.listener.close()
        self.thread.join(5)
        if self.error is not None:
            raise self.error


class PairServer:
    """Run ``script`` on one end of a socketpair; the other end's fd goes to the client."""

    def __init__(self, script: Script) -> None:
        self.client_sock, server_sock = socket.socketpair()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(server_sock, script), daemon=True)
        self.thread.start()

    def _run(self, sock: socket.socket, script: Script) -> None:
        try:
            with sock:
                script(Peer(sock))
        except BaseException as exc:
            self.error = exc

    def detach_client_fd(self) -> int:
        return self.client_sock.detach()

    def close(self) -> None:
        self.thread.join(15)
        if self.error is not None:
            raise self.error
