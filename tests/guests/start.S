/* Entry point of the C guests (docs/boot.md).
 *
 * Every vCPU starts here at once with RDI = vCPU index, RSI = vCPU count, RDX = RAM
 * size and its own stack. vCPU 0 clears .bss and fills the IDT; the others must not
 * touch .bss before that, so they spin on rt_ready, which lives in .data (the clearing
 * would wipe a flag kept in .bss). Then each vCPU loads the IDT and calls
 * guest_main(cpu, ncpus, ram_size); its return value goes to the debug-exit port.
 */
	.cfi_sections .debug_frame

	.section .data
	.balign 64
	.globl rt_ready
	.type rt_ready, @object
rt_ready:
	.long 0
	.size rt_ready, 4

	.section .text.start, "ax", @progbits
	.globl _start
	.type _start, @function
_start:
	.cfi_startproc
	.cfi_undefined rip		/* outermost frame: debuggers stop unwinding here */
	/* Keep the boot arguments in callee-saved registers across the calls below. */
	mov	%rdi, %r12
	mov	%rsi, %r13
	mov	%rdx, %r14
	/* RSP is "top - 8" as after a call; SysV wants RSP % 16 == 0 before our calls. */
	and	$-16, %rsp
	test	%rdi, %rdi
	jnz	.Lwait_ready

	/* vCPU 0: clear .bss (the loader zeroes it too, but a guest must not rely on
	 * running from a fresh load, e.g. after a debugger restart). */
	mov	$__bss_start, %edi
	mov	$__bss_end, %ecx
	sub	%rdi, %rcx
	xor	%eax, %eax
	cld
	rep stosb
	call	rt_init
	/* Publish with a locked xchg: a full barrier, so no other vCPU can see rt_ready
	 * before the cleared .bss and the filled IDT. */
	mov	$1, %eax
	xchg	%eax, rt_ready(%rip)
	jmp	.Lready

.Lwait_ready:
	pause
	cmpl	$0, rt_ready(%rip)
	je	.Lwait_ready

.Lready:
	call	idt_load		/* IDTR is per vCPU */
	mov	%r12, %rdi
	mov	%r13, %rsi
	mov	%r14, %rdx
	call	guest_main

	.globl	guest_returned
guest_returned:				/* guest_main's return lands here: exit code in EAX */
	outl	%eax, $0xF4
1:	cli
	hlt
	jmp	1b
	.cfi_endproc
	.size _start, . - _start

	.section .note.GNU-stack, "", @progbits
