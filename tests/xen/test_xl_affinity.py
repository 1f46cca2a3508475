"""vCPU affinity as xl reports it, read into xenvcpu.CpuMap; xl's own pin round trip."""
import pytest
from xenvcpu import CpuMap

import xl


def as_cpumap(cpus, nr_cpus):
    return CpuMap.parse(xl.format_cpulist(cpus), nr_cpus) if cpus else CpuMap(nr_cpus)


def test_guest_affinity_reads_into_cpumap(guest, nr_cpus):
    for v in xl.vcpus(guest):
        hard = as_cpumap(v.hard, nr_cpus)
        soft = as_cpumap(v.soft, nr_cpus)
        assert set(hard) == v.hard and set(soft) == v.soft
        assert CpuMap.from_bytes(hard.to_bytes(), nr_cpus).to_cpulist() == hard.to_cpulist()


@pytest.mark.parametrize("hard,soft", [("1-2", "2"), ("3", "all"), ("0,2", "-")])
def test_xl_pin_round_trip(guest, nr_cpus, restore_affinity, hard, soft):
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
