"""The xend HTTP/SXP client (xen-interfaces.md §6) against the protocol double on a real unix
socket, over TCP, and on reply samples written in xend's format.

The samples below are hand-written from the reference (xen-interfaces.md §6.4, §6.6) in the exact
shape xend 4.4 prints: no real xend can run on this host.
"""

from __future__ import annotations

import errno
import socket
import time
import urllib.parse
from pathlib import Path

import pytest

from xenvcpu.daemon.xend import (
    XendClient,
    XendDomain,
    XendVcpu,
    parse_node_info,
    parse_vcpuinfo,
)
from xenvcpu.errors import (
    DomainNotFound,
    InvalidAffinity,
    PermissionDenied,
    VcpuCountError,
    XendError,
)

from .xend_double import XendDouble, raw_http

SAMPLE_VCPUINFO = b"""(domain (domid 7) (name guest1) (vcpu_count '3')
 (vcpu (number 0) (online 1) (blocked 0) (running 1) (cpu_time 12.345678901) (cpu 3)
  (cpumap (0 1 2 3)))
 (vcpu (number 1) (online 1) (blocked 1) (running 0) (cpu_time 0.5) (cpu '1') (cpumap (2)))
 (vcpu (number 2) (online 0) (blocked 0) (running 0) (cpu_time 0.0) (cpu -1) (cpumap (3 1))))
"""

SAMPLE_NODE = b"""(node (host xenhost) (release 3.2.0-4-amd64) (version '#1 SMP Debian 3.2.96-2')
 (machine x86_64) (nr_cpus 8) (nr_nodes 1) (cores_per_socket 4) (threads_per_core 2)
 (cpu_mhz 2394) (hw_caps 178bf3ff:2fd3fbff) (xen_caps 'xen-3.0-x86_64 hvm-3.0-x86_32'))
"""

SAMPLE_ERROR = b'(xend.err "Cannot set vcpus greater than max vcpus on running domain")'


def client(xend: XendDouble, tmp_path: Path, timeout: float = 5) -> XendClient:
    return XendClient(str(tmp_path / "xend-socket"), timeout=timeout)


# ------------------------------------------------------------------ samples (parsing only)


def test_vcpuinfo_sample() -> None:
    from xenvcpu.daemon import sxp

    vcpus = parse_vcpuinfo(sxp.parse(SAMPLE_VCPUINFO))
    assert vcpus == [
        XendVcpu(0, True, False, True, 12_345_678_901, 3, (0, 1, 2, 3)),
        XendVcpu(1, True, True, False, 500_000_000, 1, (2,)),
        XendVcpu(2, False, False, False, 0, None, (1, 3)),
    ]


def test_node_sample() -> None:
    from xenvcpu.daemon import sxp

    node = parse_node_info(sxp.parse(SAMPLE_NODE))
    assert (node.nr_cpus, node.nr_nodes, node.cores_per_socket, node.threads_per_core) == (
        8,
        1,
        4,
        2,
    )
    assert node.cpu_mhz == 2394
    assert node.fields["version"] == "#1 SMP Debian 3.2.96-2"
    assert node.fields["xen_caps"] == "xen-3.0-x86_64 hvm-3.0-x86_32"


def test_recorded_error_reply_is_replayed(xend: XendDouble, tmp_path: Path) -> None:
    xend.canned["/xend/domain/guest1"] = (500, "application/sxp", SAMPLE_ERROR)
    with pytest.raises(VcpuCountError) as info:
        client(xend, tmp_path).set_vcpus("guest1", 9)
    assert "Cannot set vcpus greater than max vcpus" in str(info.value)


# ------------------------------------------------------------------ against the double


def test_vcpuinfo(xend: XendDouble, tmp_path: Path) -> None:
    xend.domains["guest1"].cpumaps[1] = [1, 3]
    vcpus = client(xend, tmp_path).vcpuinfo("guest1")
    assert [v.number for v in vcpus] == [0, 1, 2, 3]
    assert [v.online for v in vcpus] == [True, True, False, False]
    assert vcpus[0].cpu_time_ns == 12_345_678_901  # seconds as a float → exact ns
    assert vcpus[0].cpu == 0 and vcpus[2].cpu is None
    assert vcpus[1].cpumap == (1, 3)
    assert vcpus[0].cpumap == (0, 1, 2, 3)  # unpinned: every CPU listed
    assert vcpus[1].blocked and not vcpus[1].running
    req = xend.requests[-1]
    assert (req.method, req.path) == ("GET", "/xend/domain/guest1?op=vcpuinfo")


def test_vcpuinfo_by_domid(xend: XendDouble, tmp_path: Path) -> None:
    assert len(client(xend, tmp_path).vcpuinfo(7)) == 4
    assert xend.requests[-1].path == "/xend/domain/7?op=vcpuinfo"


def test_request_headers_follow_libvirt(xend: XendDouble, tmp_path: Path) -> None:
    client(xend, tmp_path).set_vcpus("guest1", 3)
    req = xend.requests[-1]
    headers = {k.lower(): v for k, v in req.headers.items()}
    assert req.method == "POST" and req.path == "/xend/domain/guest1"
    assert headers["content-type"] == "application/x-www-form-urlencoded"
    assert int(headers["content-length"]) == len(req.body)
    assert headers["accept"] == "application/sxp"
    assert headers["accept-encoding"] == "identity"
    assert headers["host"] == "localhost"
    assert "user-agent" not in headers
    assert urllib.parse.parse_qs(req.body.decode()) == {"op": ["set_vcpus"], "vcpus": ["3"]}


def test_set_vcpus(xend: XendDouble, tmp_path: Path) -> None:
    xc = client(xend, tmp_path)
    xc.set_vcpus("guest1", 4)
    assert xend.domains["guest1"].vcpu_avail == 0b1111
    assert [v.online for v in xc.vcpuinfo("guest1")] == [True] * 4
    xc.set_vcpus("guest1", 1)
    assert xc.domain("guest1").vcpu_avail == 1


def test_set_vcpus_above_max_names_the_maximum(xend: XendDouble, tmp_path: Path) -> None:
    with pytest.raises(VcpuCountError) as info:
        client(xend, tmp_path).set_vcpus("guest1", 5)
    message = str(info.value)
    assert "1..4" in message and "greater than max vcpus" in message
    assert info.value.domain == "guest1"
    assert xend.domains["guest1"].online == 2  # unchanged


def test_set_vcpus_zero_refused_locally(xend: XendDouble, tmp_path: Path) -> None:
    with pytest.raises(VcpuCountError, match=r"1\.\.4"):
        client(xend, tmp_path).set_vcpus("guest1", 0)
    assert [r.method for r in xend.requests] == ["GET"]  # only the lookup of the maximum


def test_set_vcpus_zero_from_xend(xend: XendDouble, tmp_path: Path) -> None:
    # were it sent, the double (like xend, xen-interfaces.md §6.3) refuses it with xend's message
    xc = client(xend, tmp_path)
    with pytest.raises(XendError, match="Zero or less VCPUs is invalid") as info:
        xc.request("POST", "/xend/domain/guest1", {"op": "set_vcpus", "vcpus": "0"})
    assert info.value.status == 500


def test_pincpu(xend: XendDouble, tmp_path: Path) -> None:
    xc = client(xend, tmp_path)
    xc.pincpu("guest1", 1, [3, 0, 2, 2])
    body = urllib.parse.parse_qs(xend.requests[-1].body.decode())
    assert body == {"op": ["pincpu"], "vcpu": ["1"], "cpumap": ["0,2,3"]}  # comma list
    assert xc.vcpuinfo("guest1")[1].cpumap == (0, 2, 3)
    xc.pincpu("guest1", "all", [1])
    assert {v.cpumap for v in xc.vcpuinfo("guest1")} == {(1,)}


def test_pincpu_errors(xend: XendDouble, tmp_path: Path) -> None:
    xc = client(xend, tmp_path)
    with pytest.raises(InvalidAffinity):
        xc.pincpu("guest1", 0, [])
    with pytest.raises(InvalidAffinity):
        xc.pincpu("guest1", 0, [-1])
    with pytest.raises(ValueError):
        xc.pincpu("guest1", "some", [0])
    with pytest.raises(XendError, match="Invalid argument: cpumap 0,9") as info:
        xc.pincpu("guest1", 0, [0, 9])  # xend's own refusal, passed on
    assert info.value.status == 500 and info.value.domain == "guest1"
    assert xend.domains["guest1"].cpumaps == {}


def test_domain_list_and_records(xend: XendDouble, tmp_path: Path) -> None:
    xc = client(xend, tmp_path)
    assert xc.domain_names() == ["Domain-0", "guest1"]  # running domains only
    doms = xc.domains()
    assert [d.name for d in doms] == ["Domain-0", "guest1"]
    g = doms[1]
    assert isinstance(g, XendDomain)
    assert (g.domid, g.max_vcpus, g.online_vcpus, g.vcpu_avail) == (7, 4, 2, 3)
    assert g.uuid and g.state == "-b----"
    assert xend.requests[-1].path == "/xend/domain/?detail=1"


def test_inactive_domain_with_a_quoted_name(xend: XendDouble, tmp_path: Path) -> None:
    xc = client(xend, tmp_path)
    dom = xc.domain("stopped vm")  # the name needs quoting in SXP and in the URL
    assert dom.name == "stopped vm" and dom.domid is None
    assert xend.requests[-1].path == "/xend/domain/stopped%20vm"
    vcpus = xc.vcpuinfo("stopped vm")
    assert all(not v.online and v.cpu is None and v.cpu_time_ns == 0 for v in vcpus)


def test_node_info(xend: XendDouble, tmp_path: Path) -> None:
    node = client(xend, tmp_path).node_info()
    assert (node.nr_cpus, node.nr_nodes, node.cores_per_socket, node.threads_per_core) == (
        4,
        1,
        2,
        2,
    )
    assert node.fields["host"] == "xenhost"


# ------------------------------------------------------------------ errors (xen-interfaces.md §6.6)


def test_unknown_domain_is_domain_not_found(xend: XendDouble, tmp_path: Path) -> None:
    xc = client(xend, tmp_path)
    for call in (
        lambda: xc.vcpuinfo("nope"),
        lambda: xc.set_vcpus("nope", 1),
        lambda: xc.pincpu("nope", 0, [0]),
        lambda: xc.domain(99),
    ):
        with pytest.raises(DomainNotFound) as info:
            call()
        assert info.value.errno == errno.ESRCH
        assert info.value.domain in ("nope", 99)


def test_missing_and_unknown_op(xend: XendDouble, tmp_path: Path) -> None:
    xc = client(xend, tmp_path)
    with pytest.raises(XendError) as info:
        xc.request("POST", "/xend/domain/guest1", {"vcpus": "1"}, domain="guest1")
    assert info.value.status == 406
    with pytest.raises(XendError, match="Operation not implemented: explode") as info:
        xc.request("POST", "/xend/domain/guest1", {"op": "explode"}, domain="guest1")
    assert info.value.status == 501


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, b"(xend.err 'it broke')"),  # libvirt: a 2xx carrying xend.err is a failure
        (202, b"operation failed"),
        (500, b"(xend.err 'it broke')"),
    ],
)
def test_error_bodies(xend: XendDouble, tmp_path: Path, status: int, body: bytes) -> None:
    xend.canned["/xend/node/"] = (status, "application/sxp", body)
    with pytest.raises(XendError) as info:
        client(xend, tmp_path).node_info()
    assert info.value.status == status
    assert ("it broke" if b"broke" in body else "operation failed") in str(info.value)


def test_html_or_garbage_is_an_error(xend: XendDouble, tmp_path: Path) -> None:
    xend.canned["/xend/node/"] = (200, "text/html", b"<html>no</html>")
    with pytest.raises(XendError, match="HTML"):
        client(xend, tmp_path).node_info()
    xend.canned["/xend/node/"] = (200, "application/sxp", b"(node (nr_cpus 4)")
    with pytest.raises(XendError, match="not SXP"):
        client(xend, tmp_path).node_info()
    xend.canned["/xend/node/"] = (200, "application/sxp", b"(node (nr_nodes 1))")
    with pytest.raises(XendError, match=r"no \(nr_cpus"):
        client(xend, tmp_path).node_info()


def test_double_answers_html_to_browsers(xend: XendDouble, tmp_path: Path) -> None:
    """The double follows xen-interfaces.md §6.2's content negotiation, so the client's Accept
    matters."""
    sock = str(tmp_path / "xend-socket")
    browser = raw_http(
        sock,
        b"GET /xend/node/ HTTP/1.1\r\nHost: x\r\nUser-Agent: Mozilla\r\nAccept: text/html\r\n\r\n",
    )
    assert b"Content-Type: text/html" in browser
    libvirt = raw_http(sock, b"GET /xend/node/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"Content-Type: application/sxp" in libvirt and b"(node " in libvirt


def test_timeout(xend: XendDouble, tmp_path: Path) -> None:
    xend.delay = 1.0
    start = time.monotonic()
    with pytest.raises(XendError) as info:
        client(xend, tmp_path, timeout=0.2).node_info()
    assert info.value.errno == errno.ETIMEDOUT
    assert "did not answer within 0.2 s" in str(info.value)
    assert time.monotonic() - start < 1.0


def test_no_xend_running(tmp_path: Path) -> None:
    with pytest.raises(XendError) as info:
        XendClient(str(tmp_path / "missing"), timeout=1).domain_names()
    assert info.value.errno == errno.ENOENT
    assert "xend-unix-server yes" in str(info.value)
    stale = str(tmp_path / "stale")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(stale)
        with pytest.raises(XendError) as info:
            XendClient(stale, timeout=1).domain_names()
    assert info.value.errno == errno.ECONNREFUSED


def test_permission_denied_is_mapped() -> None:
    xc = XendClient("/x")
    err = xc._connect_error(PermissionError(errno.EACCES, "Permission denied"), "GET /")
    assert isinstance(err, PermissionDenied) and "run as root" in str(err)


# ------------------------------------------------------------------ TCP and URIs


def test_tcp_transport() -> None:
    double = XendDouble(nr_cpus=8)
    host, port = double.serve_tcp()
    try:
        xc = XendClient((host, port), timeout=5)
        assert xc.node_info().nr_cpus == 8
        xc.set_vcpus("guest1", 3)
        assert double.domains["guest1"].online == 3
        assert double.requests[-1].headers["Host"] == f"{host}:{port}"
    finally:
        double.shutdown()


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError):
        XendClient("/x", timeout=0)
