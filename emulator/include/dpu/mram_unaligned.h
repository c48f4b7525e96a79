/* Unaligned MRAM accesses (UPMEM SDK <mram_unaligned.h>).
 *
 * mram_read_unaligned copies the aligned 8-byte window around
 * [from, from + nb_of_bytes) into buffer (which must hold nb_of_bytes + 16
 * bytes and be 8-aligned) and returns where the requested bytes start in it.
 * mram_write_unaligned does a read-modify-write of the surrounding window. */
#ifndef UPDLRM_DPU_MRAM_UNALIGNED_H
#define UPDLRM_DPU_MRAM_UNALIGNED_H

#include <stdint.h>
#include <attributes.h>

#ifdef __cplusplus
extern "C" {
#endif

void *mram_read_unaligned(const __mram_ptr void *from, void *buffer, unsigned int nb_of_bytes);
void mram_write_unaligned(const void *from, __mram_ptr void *dest, unsigned int nb_of_bytes);

/* Tasklet-safe read-modify-write of one int (4-byte aligned) or byte in
 * MRAM, through the 8-byte word holding it.  Cooperative tasklets cannot be
 * interrupted between the two DMAs, so no lock is needed here. */
void __updlrm_mram_update_int_atomic(__mram_ptr void *dest, void (*update)(int *, void *), void *args);
void __updlrm_mram_update_byte_atomic(__mram_ptr void *dest, void (*update)(uint8_t *, void *), void *args);
void __updlrm_mram_write_int_atomic(__mram_ptr void *dest, int value);
void __updlrm_mram_write_byte_atomic(__mram_ptr void *dest, uint8_t value);
#define mram_update_int_atomic(dest, update_func, args)                                                                \
    __updlrm_mram_update_int_atomic((__mram_ptr void *)(dest), (update_func), (args))
#define mram_update_byte_atomic(dest, update_func, args)                                                               \
    __updlrm_mram_update_byte_atomic((__mram_ptr void *)(dest), (update_func), (args))
#define mram_write_int_atomic(dest, val)  __updlrm_mram_write_int_atomic((__mram_ptr void *)(dest), (val))
#define mram_write_byte_atomic(dest, val) __updlrm_mram_write_byte_atomic((__mram_ptr void *)(dest), (val))

#ifdef __cplusplus
}
#endif

#endif
