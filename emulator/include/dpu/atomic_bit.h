/* Atomic bits (UPMEM SDK <atomic_bit.h>): the DPU's 256 one-bit locks that
 * mutexes, barriers and semaphores are built on.  Here each bit is a byte of
 * the .atomic section, which the linker script aligns to 256 bytes so that,
 * as on a DPU, the low 8 bits of an atomic bit's address name the bit.
 *
 *   ATOMIC_BIT_INIT(locks)[4];                        four atomic bits
 *   uint8_t id = (uint8_t)(uintptr_t)&ATOMIC_BIT_GET(locks)[2];
 */
#ifndef UPDLRM_DPU_ATOMIC_BIT_H
#define UPDLRM_DPU_ATOMIC_BIT_H

#include <stdint.h>
#include <attributes.h>

#define ATOMIC_BIT_GET(_name)    __updlrm_atomic_bit_##_name
#define ATOMIC_BIT_INIT(_name)   __atomic_bit uint8_t ATOMIC_BIT_GET(_name)
#define ATOMIC_BIT_EXTERN(_name) extern __atomic_bit uint8_t ATOMIC_BIT_GET(_name)

#endif
