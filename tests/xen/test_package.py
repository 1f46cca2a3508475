"""The project's wheel, installed in dom0 by the lab, imports and works."""

import os

import xenvcpu


def test_package_is_the_installed_wheel() -> None:
    # not the read-only checkout at /mnt/host: the lab installs the wheel built on the host
    assert not os.path.abspath(xenvcpu.__file__).startswith("/mnt/host"), xenvcpu.__file__


def test_cpumap_parse_and_format() -> None:
    assert xenvcpu.CpuMap.parse("0-3,^2", 8).to_cpulist() == "0-1,3"


def test_cpumap_bytes_round_trip() -> None:
    m = xenvcpu.CpuMap.parse("0-1,3", 8)
    assert list(m) == [0, 1, 3]
    assert xenvcpu.CpuMap.from_bytes(m.to_bytes(), 8).to_cpulist() == "0-1,3"
