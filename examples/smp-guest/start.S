/* Entry point: every vCPU starts here at once, in 64-bit long mode, with RDI = vCPU
 * index, RSI = vCPU count and its own stack (the dap-whpx boot contract).
 *
 * vCPU 0 clears .bss (a debugger restart may reuse memory) while the others wait on
 * `ready`, which is in .data so the clearing does not wipe it. Then every vCPU calls
 * guest_main(cpu, ncpus); vCPU 0's return value becomes the VM's exit code.
 */
	.cfi_sections .debug_frame

	.section .data
ready:	.long 0

	.section .text.start, "ax", @progbits
	.globl _start
	.type _start, @function
_start:
	.cfi_startproc
	.cfi_undefined rip		/* outermost frame: debuggers stop unwinding here */
	and	$-16, %rsp		/* the SysV ABI wants RSP % 16 == 0 before a call */
	test	%rdi, %rdi
	jnz	.Lwait
	mov	%rdi, %r12
	mov	%rsi, %r13
	mov	$__bss_start, %edi
	mov	$__bss_end, %ecx
	sub	%rdi, %rcx
	xor	%eax, %eax
	cld
	rep stosb
	mov	%r12, %rdi
	mov	%r13, %rsi
	movl	$1, ready(%rip)
	jmp	.Lmain
.Lwait:
	pause
	cmpl	$0, ready(%rip)
	je	.Lwait
.Lmain:
	call	guest_main
	outl	%eax, $0xF4		/* the debug-exit port: ends the VM with this code */
1:	cli
	hlt
	jmp	1b
	.cfi_endproc
	.size _start, . - _start

	.section .note.GNU-stack, "", @progbits
