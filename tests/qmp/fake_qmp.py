"""A fake QMP server on a real unix socket, for the client's framing and logic tests.

:class:`FakeQmp` accepts connections in a thread; per connection it sends a greeting and
hands every command line to ``handler(conn, command)``, which answers with
``conn.reply``/``conn.error``/``conn.event``/``conn.raw`` (or stays silent, or closes).
:class:`FakeCpus` is such a handler modelling QEMU's CPU hotplug commands closely enough
to test :func:`xenvcpu.daemon.qmp.set_hvm_vcpus` against odd QEMUs (old versions, failing
commands, guests that eject slowly or refuse).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

GREETING = {
    "QMP": {
        "version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "fake"},
        "capabilities": ["oob"],
    }
}
GREETING_LINE = json.dumps(GREETING).encode() + b"\r\n"


@dataclass
class Command:
    name: str
    arguments: dict[str, Any]
    id: Any
    raw: dict[str, Any]


class Conn:
    """One accepted client connection (used from the server thread)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.closed = False

    def raw(self, data: bytes) -> None:
        if not self.closed:
            self.sock.sendall(data)

    def send(self, obj: object) -> None:
        self.raw(json.dumps(obj).encode() + b"\r\n")

    def reply(self, cmd: Command, value: object = None) -> None:
        self.send({"return": {} if value is None else value, "id": cmd.id})

    def error(self, cmd: Command, qmp_class: str, desc: str) -> None:
        self.send({"id": cmd.id, "error": {"class": qmp_class, "desc": desc}})

    def event(self, name: str, data: dict[str, Any] | None = None) -> None:
        now = time.time()
        msg: dict[str, Any] = {
            "timestamp": {"seconds": int(now), "microseconds": int(now % 1 * 1e6)},
            "event": name,
        }
        if data is not None:
            msg["data"] = data
        self.send(msg)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()


Handler = Callable[[Conn, Command], None]


def default_handler(conn: Conn, cmd: Command) -> None:
    conn.reply(cmd)


class FakeQmp:
    """A QMP server double on ``path``.

    Args:
        path: the unix socket to listen on.
        handler: called for each command after ``qmp_capabilities`` (which is answered
            unless ``capabilities`` is False).
        greeting: bytes sent on connect (None: nothing, a server that never greets).
    """

    def __init__(
        self,
        path: str,
        handler: Handler = default_handler,
        *,
        greeting: bytes | None = GREETING_LINE,
        capabilities: bool = True,
    ) -> None:
        self.path = path
        self.handler = handler
        self.greeting = greeting
        self.capabilities = capabilities
        #: every command received, in order
        self.commands: list[Command] = []
        self.conns: list[Conn] = []
        self.errors: list[BaseException] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def names(self) -> list[str]:
        return [c.name for c in self.commands if c.name != "qmp_capabilities"]

    def _serve(self) -> None:
        self._listener.settimeout(0.05)
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn = Conn(sock)
            self.conns.append(conn)
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: Conn) -> None:
        buf = b""
        try:
            if self.greeting is not None:
                conn.raw(self.greeting)
            conn.sock.settimeout(0.05)
            while not self._stop.is_set() and not conn.closed:
                try:
                    chunk = conn.sock.recv(65536)
                except socket.timeout:
                    continue
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    msg = json.loads(line)
                    cmd = Command(msg["execute"], msg.get("arguments", {}), msg.get("id"), msg)
                    self.commands.append(cmd)
                    if cmd.name == "qmp_capabilities" and self.capabilities:
                        conn.reply(cmd)
                    else:
                        self.handler(conn, cmd)
        except OSError:
            pass  # the client went away
        except BaseException as exc:  # surfaced by close()
            self.errors.append(exc)
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(5)
        for conn in self.conns:
            conn.close()
        if self.errors:
            raise self.errors[0]


# ------------------------------------------------------------------- a CPU model


@dataclass
class FakeCpu:
    index: int
    qom_path: str
    props: dict[str, int]


@dataclass
class FakeCpus:
    """QEMU's CPU hotplug commands over a topology of ``slots`` (props dicts, listed in
    topology order; QEMU reports them reversed, and so does this model).

    Knobs: ``boot`` CPUs plugged at start; ``version`` (< (2, 7): no
    query-hotpluggable-cpus, cpu-add instead; < (2, 12): query-cpus, no query-cpus-fast);
    ``legacy`` (device_del refused like Xen's ACPI tables); ``eject_after`` seconds until
    the "guest" ejects a CPU after device_del (None: never); ``ost_status`` (an _OST
    failure status the guest reports instead of ejecting); ``fail_add`` (vCPU numbers
    whose device_add QEMU refuses); ``die_after_add`` (close the connection after that
    many device_add; ``die_before_reply``: before answering the last one);
    ``wrong_index`` (give added CPUs a different cpu-index).
    """

    slots: list[dict[str, int]]
    boot: int = 1
    driver: str = "qemu64-x86_64-cpu"
    version: tuple[int, int] = (7, 2)
    legacy: bool = False
    eject_after: float | None = 0.05
    ost_status: int | None = None
    fail_add: set[int] = field(default_factory=set)
    die_after_add: int | None = None
    die_before_reply: bool = False
    wrong_index: bool = False
    vcpus_count: int = 1
    cpus: dict[int, FakeCpu] = field(default_factory=dict)
    adds: int = 0
    timers: list[threading.Timer] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for i in range(self.boot):
            self.cpus[i] = FakeCpu(i, f"/machine/unattached/device[{i}]", self.slots[i])

    def _cpu_list(self, fast: bool) -> list[dict[str, Any]]:
        with self.lock:
            cpus = sorted(self.cpus.values(), key=lambda c: c.index)
        if fast:
            return [
                {"cpu-index": c.index, "qom-path": c.qom_path, "props": c.props, "thread-id": 99}
                for c in cpus
            ]
        return [
            {"CPU": c.index, "qom_path": c.qom_path, "props": c.props, "thread_id": 99}
            for c in cpus
        ]

    def __call__(self, conn: Conn, cmd: Command) -> None:
        name, args = cmd.name, cmd.arguments
        if name == "query-cpus-fast" and self.version >= (2, 12):
            conn.reply(cmd, self._cpu_list(True))
        elif name == "query-cpus" and self.version < (6, 0):
            conn.reply(cmd, self._cpu_list(False))
        elif name == "query-hotpluggable-cpus" and self.version >= (2, 7):
            out = []
            for i, props in enumerate(self.slots):
                slot: dict[str, Any] = {
                    "props": props,
                    "vcpus-count": self.vcpus_count,
                    "type": self.driver,
                }
                if i in self.cpus:
                    slot["qom-path"] = self.cpus[i].qom_path
                out.append(slot)
            conn.reply(cmd, out[::-1])
        elif name == "device_add":
            self._device_add(conn, cmd)
        elif name == "cpu-add" and self.version < (2, 7):
            n = args["id"]
            if n >= len(self.slots):
                conn.error(cmd, "GenericError", f"Unable to add CPU: {n}, max allowed: 3")
                return
            self.cpus[n] = FakeCpu(n, f"/machine/unattached/device[{n}]", self.slots[n])
            conn.reply(cmd)
        elif name == "device_del":
            self._device_del(conn, cmd)
        else:
            conn.error(cmd, "CommandNotFound", f"The command {name} has not been found")

    def _device_add(self, conn: Conn, cmd: Command) -> None:
        args = dict(cmd.arguments)
        driver, dev_id = args.pop("driver"), args.pop("id")
        try:
            index = self.slots.index(args)
        except ValueError:
            conn.error(cmd, "GenericError", f"no slot for {args}")
            return
        if driver != self.driver or index in self.fail_add:
            conn.error(cmd, "GenericError", f"refusing {dev_id}")
            return
        with self.lock:
            if self.wrong_index:
                index = index + 10
            self.cpus[index] = FakeCpu(index, f"/machine/peripheral/{dev_id}", args)
        self.adds += 1
        dying = self.die_after_add is not None and self.adds >= self.die_after_add
        if not (dying and self.die_before_reply):
            conn.reply(cmd)
        if dying:
            conn.close()

    def _device_del(self, conn: Conn, cmd: Command) -> None:
        path = cmd.arguments["id"]
        cpu = next((c for c in self.cpus.values() if c.qom_path == path), None)
        if cpu is None:
            conn.error(cmd, "DeviceNotFound", f"Device '{path}' not found")
            return
        if self.legacy:
            conn.error(
                cmd,
                "GenericError",
                f"acpi: device unplug request for not supported device type: {self.driver}",
            )
            return
        conn.reply(cmd)
        dev_id = path.rsplit("/", 1)[-1]
        info = {"device": dev_id, "source": 3, "slot": str(cpu.index), "slot-type": "CPU"}
        if self.ost_status is not None:
            conn.event("ACPI_DEVICE_OST", {"info": {**info, "status": self.ost_status}})
            return
        conn.event("ACPI_DEVICE_OST", {"info": {**info, "status": 0x84}})
        if self.eject_after is None:
            return

        def eject() -> None:
            with self.lock:
                self.cpus.pop(cpu.index, None)
            try:
                conn.event("DEVICE_DELETED", {"path": f"{path}/lapic"})
                conn.event("DEVICE_DELETED", {"device": dev_id, "path": path})
            except OSError:
                pass

        timer = threading.Timer(self.eject_after, eject)
        timer.daemon = True
        self.timers.append(timer)
        timer.start()


def x86_slots(sockets: int = 1, cores: int = 4, threads: int = 1) -> list[dict[str, int]]:
    """Slots of an x86 machine in topology order, props as QEMU reports them."""
    return [
        {"socket-id": s, "core-id": c, "thread-id": t}
        for s in range(sockets)
        for c in range(cores)
        for t in range(threads)
    ]
