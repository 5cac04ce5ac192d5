/* srcdemo_asm.S: demo_asm_frame(x), an assembly function with a frame-pointer frame that
 * sits between C frames (chain_2 -> demo_asm_frame -> chain_3), so unwinding has to use
 * this file's CFI (or the frame-pointer chain) to get from chain_3 back to chain_2. */
	.cfi_sections .debug_frame
	.text
	.globl demo_asm_frame
	.type demo_asm_frame, @function
demo_asm_frame:
	.cfi_startproc
	push	%rbp
	.cfi_def_cfa_offset 16
	.cfi_offset rbp, -16
	mov	%rsp, %rbp
	.cfi_def_cfa_register rbp
	push	%rbx			/* a callee-saved register, restored by CFI */
	.cfi_offset rbx, -24
	sub	$8, %rsp		/* keep RSP 16-byte aligned at the call */
	lea	1(%rdi), %ebx
	mov	%ebx, %edi
	.globl demo_asm_call
demo_asm_call:
	call	chain_3		/* LINE:asm_call */
	.globl demo_asm_return
demo_asm_return:
	add	%ebx, %eax
	sub	%ebx, %eax		/* eax unchanged: chain_3's result */
	add	$8, %rsp
	pop	%rbx
	.cfi_restore rbx
	pop	%rbp
	.cfi_def_cfa rsp, 8
	ret
	.cfi_endproc
	.size demo_asm_frame, . - demo_asm_frame

	.section .note.GNU-stack, "", @progbits
