/* MRAM <-> WRAM DMA (UPMEM SDK <mram.h>) for the updlrm emulator.
 *
 * The SDK's rules are enforced: size a multiple of 8 in [8, 2048], MRAM and
 * WRAM addresses 8-byte aligned, both ranges inside their memories.  A
 * violation faults the DPU (DPU_ERR_DPU_FAULT on the host). */
#ifndef UPDLRM_DPU_MRAM_H
#define UPDLRM_DPU_MRAM_H

#include <stdint.h>
#include <attributes.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest single DMA transfer (UPMEM SDK documentation, "MRAM accesses"). */
#define MRAM_MAX_TRANSFER_SIZE 2048

extern __mram_ptr __dma_aligned uint8_t __sys_used_mram_end[0];
/* First free MRAM byte after the program's MRAM variables. */
#define DPU_MRAM_HEAP_POINTER ((__mram_ptr void *)(&__sys_used_mram_end))

void mram_read(const __mram_ptr void *from, void *to, unsigned int nb_of_bytes);
void mram_write(const void *from, __mram_ptr void *to, unsigned int nb_of_bytes);

#ifndef __cplusplus
/* The SDK's mram.h refuses a constant size of 0, above 2048 or not a multiple
 * of 8 at build time (clang's diagnose_if); gcc gets the same errors from
 * static assertions on sizes known to the compiler (a variable size is
 * checked when the DMA runs). */
#define __UPDLRM_DMA_SIZE(n) __builtin_choose_expr(__builtin_constant_p(n), (n), 8)
#define __UPDLRM_CHECK_DMA_SIZE(op, n)                                                                                 \
    _Static_assert(__UPDLRM_DMA_SIZE(n) != 0, op ": nb_of_bytes must not be null");                                    \
    _Static_assert(__UPDLRM_DMA_SIZE(n) <= 2048, op ": nb_of_bytes must not be higher than 2048");                     \
    _Static_assert(__UPDLRM_DMA_SIZE(n) % 8 == 0, op ": nb_of_bytes must be a multiple of 8")
#define mram_read(from, to, nb_of_bytes)                                                                               \
    ({                                                                                                                 \
        __UPDLRM_CHECK_DMA_SIZE("mram_read", nb_of_bytes);                                                             \
        (mram_read)((from), (to), (nb_of_bytes));                                                                      \
    })
#define mram_write(from, to, nb_of_bytes)                                                                              \
    ({                                                                                                                 \
        __UPDLRM_CHECK_DMA_SIZE("mram_write", nb_of_bytes);                                                            \
        (mram_write)((from), (to), (nb_of_bytes));                                                                     \
    })
#endif

#ifdef __cplusplus
}
#endif

#include <mram_unaligned.h>

#endif
