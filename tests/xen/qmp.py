"""A tiny QMP client for the device model of the lab's HVM guest (run in dom0, as root).

libxl starts qemu-xen with `-chardev socket,path=/var/run/xen/qmp-libxl-<domid>,server=on,
wait=off -mon chardev=libxl-cmd,mode=control`, and `xl vcpu-set` adds the vCPUs of an HVM guest
through that socket. qemu serves one client at a time there (the others wait in the listen
backlog), so hold a connection only for a few commands, never across an `xl` call.

    with Qmp(domid) as q:
        q.greeting                       -> {"QMP": {"version": ..., "capabilities": [...]}}
        q.execute("query-cpus-fast")     -> the "return" value (a list of CPUs)
        q.reply("device_del", id="cpu-3") -> the whole reply: {"return": {}} or {"error": {...}}
"""

from __future__ import annotations

import json
import socket
from typing import Any

QMP_PATH = "/var/run/xen/qmp-libxl-{domid}"


class QmpError(RuntimeError):
    def __init__(self, command: str, reply: dict[str, Any]):
        err = reply.get("error", {})
        super().__init__(f"QMP {command}: {err.get('class')}: {err.get('desc')}")
        self.command, self.reply = command, reply


class Qmp:
    """One QMP session: connect, read the greeting, send qmp_capabilities."""

    def __init__(self, domid: int, timeout: float = 30) -> None:
        self.path = QMP_PATH.format(domid=domid)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(self.path)
        self.file = self.sock.makefile("rwb")
        self.events: list[dict[str, Any]] = []
        self.greeting: dict[str, Any] = self._read()
        self.capabilities_reply = self.reply("qmp_capabilities")

    def __enter__(self) -> Qmp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def _read(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise ConnectionError(f"{self.path}: qemu closed the QMP connection")
        msg: dict[str, Any] = json.loads(line)
        return msg

    def reply(self, command: str, **arguments: Any) -> dict[str, Any]:
        """Send one command; return its reply ({"return": ...} or {"error": ...}) as qemu sent
        it. Asynchronous events that arrive first are kept in self.events."""
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.file.write(json.dumps(msg).encode() + b"\n")
        self.file.flush()
        while True:
            answer = self._read()
            if "return" in answer or "error" in answer:
                return answer
            self.events.append(answer)

    def execute(self, command: str, **arguments: Any) -> Any:
        """Send one command; return its "return" value, raise QmpError on an error reply."""
        answer = self.reply(command, **arguments)
        if "error" in answer:
            raise QmpError(command, answer)
        return answer["return"]
