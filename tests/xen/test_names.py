"""Domain names on real Xen: the xenstore toolstack keeps them between listings (by domid
and UUID) while its watch on /local/domain says nothing changed (toolstack.DomainNameCache),
so a rename with `xl rename` must show in the very next listing of the same Host."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xl

import xenvcpu
from xenvcpu import Host

NAME, RENAMED = "names-a", "names-b"


@pytest.fixture
def paused(tmp_path: Path) -> Iterator[int]:
    """A paused 1-vCPU PV guest NAME (never runs: cheap under TCG); its domid."""
    cfg = tmp_path / "names.cfg"
    cfg.write_text(
        f'name = "{NAME}"\ntype = "pv"\nkernel = "/xenvcpu-lab/vmlinuz"\n'
        'ramdisk = "/xenvcpu-lab/domu-initrd.cpio.gz"\nextra = "console=hvc0"\n'
        "memory = 128\nvcpus = 1\n"
    )
    xl.xl("create", "-p", cfg, timeout=120)
    domid = xl.domid(NAME)
    try:
        yield domid
    finally:
        subprocess.run(["xl", "destroy", str(domid)], capture_output=True, timeout=120)


def listed(host: Host) -> dict[int, str]:
    return {s.domain.id: s.domain.name for s in host.snapshot()}


def test_xl_rename_shows_in_the_next_listing_of_the_same_host(paused: int) -> None:
    with xenvcpu.connect() as host:
        ts: Any = host.toolstack
        for _ in range(3):  # the second listing sets the watch up
            assert listed(host)[paused] == NAME
        assert ts.names.watching, ts.names.disabled
        reads = ts.names.reads
        assert listed(host)[paused] == NAME
        assert ts.names.reads == reads  # the cache served it: no xenstore read
        xl.xl("rename", NAME, RENAMED)
        # no wait, no sync: oxenstored sent the watch event with its reply to xl's commit
        assert listed(host)[paused] == RENAMED
        assert ts.names.reads == reads + 1  # only the renamed domain was read again
        assert host.domain(RENAMED).id == paused
        xl.xl("rename", RENAMED, NAME)
        assert host.domain(paused).name == NAME


def test_a_destroyed_domain_leaves_the_cache(paused: int) -> None:
    with xenvcpu.connect() as host:
        ts: Any = host.toolstack
        for _ in range(3):
            assert listed(host)[paused] == NAME
        assert paused in ts.names
        xl.xl("destroy", str(paused), timeout=120)
        # its /local/domain/<id> went: forgotten, whether Xen still lists it (dying) or not
        assert listed(host).get(paused, "") != NAME
        assert paused not in ts.names
