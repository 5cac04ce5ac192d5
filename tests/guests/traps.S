/* Exception and interrupt entry stubs, one per vector (0-255).
 *
 * Each stub makes the stack look the same whatever the vector: the CPU pushes an error
 * code only for some exceptions, so the others push a 0 in its place; then the vector
 * number. trap_common saves the GPRs (struct trap_frame in rt.h) and the SSE state
 * (the C code is built without SSE, but interrupted assembly may use XMM registers),
 * calls trap_dispatch(frame) and returns with iretq through the possibly edited frame.
 */
	.cfi_sections .debug_frame

	/* Table of stub addresses, filled in as the stubs are generated below. */
	.section .rodata
	.balign 8
	.globl trap_stub_table
	.type trap_stub_table, @object
trap_stub_table:

	.text
	.globl trap_common
	.type trap_common, @function
trap_common:
	push	%rax
	push	%rcx
	push	%rdx
	push	%rbx
	push	%rbp
	push	%rsi
	push	%rdi
	push	%r8
	push	%r9
	push	%r10
	push	%r11
	push	%r12
	push	%r13
	push	%r14
	push	%r15
	/* The CPU aligned RSP to 16 before pushing its 5 (or 6 with the error code) words;
	 * with ours that is 22 words, so RSP is 16-byte aligned here, as fxsave and the
	 * SysV call both need. */
	mov	%rsp, %rbx		/* frame pointer; rbx is callee-saved */
	sub	$512, %rsp
	fxsave	(%rsp)
	cld				/* SysV: DF clear on function entry */
	mov	%rbx, %rdi
	call	trap_dispatch
	fxrstor	(%rsp)
	mov	%rbx, %rsp
	pop	%r15
	pop	%r14
	pop	%r13
	pop	%r12
	pop	%r11
	pop	%r10
	pop	%r9
	pop	%r8
	pop	%rdi
	pop	%rsi
	pop	%rbp
	pop	%rbx
	pop	%rdx
	pop	%rcx
	pop	%rax
	add	$16, %rsp		/* vector and error code */
	iretq
	.size trap_common, . - trap_common

/* Vectors for which the CPU pushes an error code: #DF, #TS, #NP, #SS, #GP, #PF, #AC,
 * #CP, #VC, #SX. */
	.macro TRAP_STUB vec
	.balign 16
trap_stub_\vec:
	.if (\vec == 8) || (\vec == 10) || (\vec == 11) || (\vec == 12) || (\vec == 13) || (\vec == 14) || (\vec == 17) || (\vec == 21) || (\vec == 29) || (\vec == 30)
	.else
	pushq	$0
	.endif
	pushq	$\vec
	jmp	trap_common
	.pushsection .rodata
	.quad	trap_stub_\vec
	.popsection
	.endm

	.altmacro
	.set	.Lvec, 0
	.rept	256
	TRAP_STUB %.Lvec
	.set	.Lvec, .Lvec + 1
	.endr
	.noaltmacro

	.section .note.GNU-stack, "", @progbits
