"""debug/stepping.py: which instructions need the transparent-step fix-ups, from their
bytes alone."""

from __future__ import annotations

import pytest

from whpx_core.debug.stepping import StepClass, before_step, classify


@pytest.mark.parametrize(("code", "kind", "operand_16"), [
    ("48ffc9", StepClass.PLAIN, False),       # dec rcx (REX.W, ordinary opcode)
    ("90", StepClass.PLAIN, False),
    ("f348ab", StepClass.PLAIN, False),       # rep stosq
    ("9c", StepClass.PUSHF, False),
    ("489c", StepClass.PUSHF, False),         # REX.W pushfq
    ("669c", StepClass.PUSHF, True),          # pushf (16-bit)
    ("669d", StepClass.POPF, True),
    ("9d", StepClass.POPF, False),
    ("48cf", StepClass.IRET, False),          # iretq
    ("cc", StepClass.SOFTWARE_INTERRUPT, False),
    ("cd80", StepClass.SOFTWARE_INTERRUPT, False),
    ("f1", StepClass.SOFTWARE_INTERRUPT, False),
    ("2e9c", StepClass.PUSHF, False),         # a segment prefix before it
    ("", StepClass.PLAIN, False),             # unreadable code
])
def test_classify(code, kind, operand_16):
    decoded = classify(bytes.fromhex(code))
    assert (decoded.kind, decoded.operand_16) == (kind, operand_16)


def test_before_popf_reads_the_flags_it_will_load():
    stack = {0x8000: (0x246 | 0x100).to_bytes(8, "little")}
    before = before_step(classify(b"\x9d"), 0x1000, 0x8000, 0x246,
                         lambda address, size: stack[address][:size])
    assert before.guest_tf and not before.tf_at_start
    plain = before_step(classify(b"\x90"), 0x1000, 0x8000, 0x346,
                        lambda address, size: pytest.fail("plain steps read nothing"))
    assert plain.guest_tf and plain.tf_at_start
