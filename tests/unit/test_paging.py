from __future__ import annotations

import pytest

from whpx_core.machine import boot
from whpx_core.platform.paging import CR0_PG, PageFault, PagingState, translate


@pytest.fixture
def memory():
    ram = bytearray(8 << 20)

    def write(gpa: int, data: bytes) -> None:
        ram[gpa : gpa + len(data)] = data

    boot.build_boot_structures(write, len(ram) - (1 << 20) + 4096 * 3)  # odd tail size
    return ram


def read(ram: bytearray):
    return lambda gpa, size: bytes(ram[gpa : gpa + size])


def test_identity_mapping_with_2m_and_4k_pages(memory):
    state = PagingState(boot.CR0, boot.PML4_GPA)
    size = len(memory) - (1 << 20) + 4096 * 3
    assert translate(read(memory), state, 0x123456) == 0x123456
    assert translate(read(memory), state, size - 1) == size - 1  # in the 4 KiB tail
    with pytest.raises(PageFault) as fault:
        translate(read(memory), state, size + 4096, write=True)
    assert fault.value.error_code == 0x2  # not present, write


def test_local_apic_page_is_mapped(memory):
    state = PagingState(boot.CR0, boot.PML4_GPA)
    assert translate(read(memory), state, boot.LAPIC_GPA + 0x390) == boot.LAPIC_GPA + 0x390


def test_no_paging_is_identity(memory):
    state = PagingState(boot.CR0 & ~CR0_PG, boot.PML4_GPA)
    assert translate(read(memory), state, 0xDEADBEEF) == 0xDEADBEEF
