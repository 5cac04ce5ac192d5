/* multiboot.S: lets QEMU's `-kernel` boot a dap-whpx guest ELF (docs/boot.md) unchanged.
 *
 * Our VMM ignores all of this: it enters the ELF's entry point (_start) in long mode. QEMU's
 * multiboot loader refuses ELF64 files, but not when the header's flag bit 16 is set (the
 * "a.out kludge"): it then copies the file from the header's offset to load_addr, zeroes
 * up to bss_end_addr and jumps to entry_addr in 32-bit protected mode, paging off. This
 * works because guest.ld lays the file out contiguously (file offset - address is the same
 * for every PT_LOAD), which tests/test_bench_qemu_smoke.py checks.
 *
 * mb_entry then builds what our VMM would have built (same page tables at 0x1000, a flat
 * 64-bit GDT, CR0/CR4/EFER of the boot contract), enters long mode and jumps to _start with
 * the contract's registers: RDI = vCPU index, RSI = vCPU count, RDX = RAM size, RSP = top
 * of that vCPU's 64 KiB stack at the top of RAM - 8. The vCPU count is mb_cpus (patch it to
 * QEMU's -smp): vCPU 0 wakes the others with INIT + SIPI into a real-mode trampoline it
 * copies to 0x8000, which goes straight to long mode and to _start.
 * Linked first (build.py EXTRA_SOURCES) so the header is at the start of .text, well inside
 * the first 8 KiB of the file where the loader looks for it.
 */
	.set MB_MAGIC, 0x1BADB002
	.set MB_FLAGS, 0x00010002	/* bit 1: memory info wanted; bit 16: address fields */
	.set PML4, 0x1000		/* as docs/boot.md: PML4, PDPT, 4 page directories */
	.set PDPT, 0x2000
	.set PD0, 0x3000
	.set TRAMPOLINE, 0x8000		/* SIPI vector 0x08 */
	.set LAPIC, 0xFEE00000		/* above 2 GiB: addressed through a register */
	.set ICR_LOW, 0x300
	.set ICR_HIGH, 0x310

	.section .data
	.balign 8
	.globl mb_cpus
mb_cpus:
	.quad 1				/* vCPUs to start under QEMU: patched to match -smp */
mb_ap_count:
	.long 0				/* APs started so far: each takes the next index */
mb_ram:
	.quad 0

	.section .text.start, "ax", @progbits
	.code32
	.balign 4
	.globl mb_header
mb_header:
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)
	.long mb_header			/* header_addr */
	.long mb_header			/* load_addr: the file from the header on */
	.long __bss_start		/* load_end_addr: code and data, not the debug info */
	.long __bss_end			/* bss_end_addr: the loader zeroes .bss */
	.long mb_entry			/* entry_addr */

	.globl mb_entry
mb_entry:
	cli
	/* RAM size from the multiboot info (EBX): (mem_upper + 1 MiB), mem_upper in KiB. */
	mov	8(%ebx), %ebp
	add	$1024, %ebp
	shl	$10, %ebp
	/* Identity-map 4 GiB with 2 MiB pages (the local APIC is at 0xFEE00000). */
	mov	$PML4, %edi
	xor	%eax, %eax
	mov	$(0x7000 - PML4) / 4, %ecx
	cld
	rep stosl
	movl	$PDPT | 0x3, PML4
	movl	$PD0 | 0x3, PDPT
	movl	$(PD0 + 0x1000) | 0x3, PDPT + 8
	movl	$(PD0 + 0x2000) | 0x3, PDPT + 16
	movl	$(PD0 + 0x3000) | 0x3, PDPT + 24
	mov	$PD0, %edi
	mov	$0x83, %eax			/* present, writable, 2 MiB page */
	xor	%edx, %edx			/* high half of the physical address */
	mov	$2048, %ecx
1:	mov	%eax, (%edi)
	mov	%edx, 4(%edi)
	add	$0x200000, %eax
	adc	$0, %edx
	add	$8, %edi
	loop	1b

	lgdt	mb_gdt_pointer
	mov	$PML4, %eax
	mov	%eax, %cr3
	mov	$0x620, %eax			/* PAE, OSFXSR, OSXMMEXCPT */
	mov	%eax, %cr4
	mov	$0xC0000080, %ecx		/* EFER.LME */
	rdmsr
	or	$0x100, %eax
	wrmsr
	mov	$0x80050033, %eax		/* PG, AM, WP, NE, ET, MP, PE */
	mov	%eax, %cr0
	ljmp	$0x08, $mb_long

	.code64
mb_long:
	mov	$0x10, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	mov	%eax, %fs
	mov	%eax, %gs
	mov	%ebp, %edx			/* RDX = RAM size (zero-extended) */
	mov	%rdx, mb_ram(%rip)
	lea	-8(%rdx), %rsp			/* vCPU 0's stack: top of RAM */
	xor	%edi, %edi			/* RDI = vCPU 0 */
	cmpl	$1, mb_cpus(%rip)
	jbe	mb_enter
	/* Wake the other vCPUs: the trampoline must run below 1 MiB, at a page boundary. */
	lea	mb_trampoline(%rip), %rsi
	mov	$TRAMPOLINE, %edi
	mov	$mb_trampoline_end - mb_trampoline, %ecx
	rep movsb
	mov	$LAPIC, %ebx
	movl	$0, ICR_HIGH(%rbx)
	movl	$0x000C4500, ICR_LOW(%rbx)	/* INIT, all excluding self */
	call	mb_icr_wait
	movl	$0x000C4600 | (TRAMPOLINE >> 12), ICR_LOW(%rbx)	/* SIPI */
	call	mb_icr_wait
	xor	%edi, %edi			/* RDI = vCPU 0 */
mb_enter:
	mov	mb_cpus(%rip), %esi		/* RSI = vCPU count */
	xor	%eax, %eax
	xor	%ebx, %ebx
	xor	%ecx, %ecx
	xor	%ebp, %ebp
	jmp	_start

mb_icr_wait:					/* until the IPI is delivered */
	pause
	testl	$0x1000, ICR_LOW(%rbx)
	jnz	mb_icr_wait
	ret

mb_ap_long:					/* an AP, in long mode */
	mov	$0x10, %eax
	mov	%eax, %ds
	mov	%eax, %es
	mov	%eax, %ss
	mov	%eax, %fs
	mov	%eax, %gs
	mov	$1, %edi
	lock xadd %edi, mb_ap_count(%rip)
	inc	%edi				/* RDI = this vCPU's index, 1.. */
	mov	mb_ram(%rip), %rdx
	mov	%rdi, %rax
	shl	$16, %rax			/* 64 KiB stack per vCPU */
	mov	%rdx, %rsp
	sub	%rax, %rsp
	sub	$8, %rsp
	jmp	mb_enter

	/* Copied to TRAMPOLINE and entered there in real mode (CS = 0x0800, IP = 0). */
	.code16
mb_trampoline:
	cli
	mov	%cs, %ax
	mov	%ax, %ds
	lgdtl	mb_trampoline_gdt - mb_trampoline
	mov	$0x620, %eax
	mov	%eax, %cr4
	mov	$PML4, %eax
	mov	%eax, %cr3
	mov	$0xC0000080, %ecx
	rdmsr
	or	$0x100, %eax
	wrmsr
	mov	$0x80050033, %eax		/* PE and PG at once: straight to long mode */
	mov	%eax, %cr0
	ljmpl	$0x08, $mb_ap_long
	.balign 4
mb_trampoline_gdt:
	.word mb_gdt_end - mb_gdt - 1
	.long mb_gdt
mb_trampoline_end:
	.code64

	.balign 8
mb_gdt:
	.quad 0
	.quad 0x00AF9B000000FFFF		/* 0x08: 64-bit code */
	.quad 0x00CF93000000FFFF		/* 0x10: flat data */
mb_gdt_end:
mb_gdt_pointer:
	.word mb_gdt_end - mb_gdt - 1
	.long mb_gdt

	.section .note.GNU-stack, "", @progbits
