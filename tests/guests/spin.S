/* spin: a standalone guest (no runtime) that counts RCX down to zero.
 *
 * The loop is exactly two instructions, `dec %rcx; jnz spin_loop`, so a debugger test
 * knows the instruction count (2 * spin_iterations) and can single-step, set
 * breakpoints on spin_loop / spin_done, or pause it at a predictable place.
 * spin_iterations is a 64-bit word in .data that tests may patch in the ELF (0 skips
 * the loop). Every vCPU runs it; the first to finish writes exit code 0 to port 0xF4.
 */
	.section .data
	.balign 8
	.globl spin_iterations
	.type spin_iterations, @object
spin_iterations:
	.quad 10000000
	.size spin_iterations, 8

	.section .text.start, "ax", @progbits
	.globl _start
	.type _start, @function
_start:
	mov	spin_iterations(%rip), %rcx
	test	%rcx, %rcx		/* dec would wrap 0 to 2^64-1 */
	jz	spin_done

	.globl spin_loop
spin_loop:
	dec	%rcx
	jnz	spin_loop

	.globl spin_done
spin_done:
	xor	%eax, %eax
	outl	%eax, $0xF4
	.globl spin_halt
spin_halt:
	cli
	hlt
	jmp	spin_halt
	.size _start, . - _start

	.section .note.GNU-stack, "", @progbits
