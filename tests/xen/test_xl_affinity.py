"""vCPU affinity as xl reports it, read into xenvcpu.CpuMap; xl's own pin round trip."""

import pytest
import xl
from xl import AffinitySaver

from xenvcpu import CpuMap


def as_cpumap(cpus: frozenset[int], nr_cpus: int) -> CpuMap:
    return CpuMap.parse(xl.format_cpulist(cpus), nr_cpus) if cpus else CpuMap(nr_cpus)


def test_guest_affinity_reads_into_cpumap(guest: str, nr_cpus: int) -> None:
    for v in xl.vcpus(guest):
        hard = as_cpumap(v.hard, nr_cpus)
        soft = as_cpumap(v.soft, nr_cpus)
        assert set(hard) == v.hard and set(soft) == v.soft
        assert CpuMap.from_bytes(hard.to_bytes(), nr_cpus).to_cpulist() == hard.to_cpulist()


def test_cpumap_parses_xl_affinity_text(
    guest: str, nr_cpus: int, restore_affinity: AffinitySaver
) -> None:
    """CpuMap.parse reads xl's own output ("all", ranges) to the same CPUs as the helper."""
    restore_affinity.save(guest, 1)
    xl.vcpu_pin(guest, 1, "0-1,3", "all")
    for v in xl.vcpus(0) + xl.vcpus(guest):
        for text, cpus in ((v.hard_text, v.hard), (v.soft_text, v.soft)):
            assert set(CpuMap.parse(text, nr_cpus)) == cpus, (v, text)
    assert xl.vcpu(guest, 1).hard_text == "0-1,3"


@pytest.mark.parametrize("hard,soft", [("1-2", "2"), ("3", "all"), ("0,2", "-")])
def test_xl_pin_round_trip(
    guest: str, nr_cpus: int, restore_affinity: AffinitySaver, hard: str, soft: str
) -> None:
    restore_affinity.save(guest, 0)
    before = xl.vcpu(guest, 0)
    xl.vcpu_pin(guest, 0, hard, soft)
    after = xl.vcpu(guest, 0)
    assert after.hard == xl.parse_cpulist(hard, nr_cpus)
    # "-" keeps the current soft affinity
    want_soft = before.soft if soft == "-" else xl.parse_cpulist(soft, nr_cpus)
    assert after.soft == want_soft
    assert as_cpumap(after.hard, nr_cpus).to_cpulist() == xl.format_cpulist(after.hard)
    if after.online:
        assert after.cpu in after.hard
