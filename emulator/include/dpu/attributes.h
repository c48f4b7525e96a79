/* DPU variable attributes of the UPMEM SDK, mapped onto gcc for the updlrm
 * emulator.  On a DPU, __mram_ptr is an address-space qualifier; here MRAM
 * is a 64 MiB window mapped at the DPU's MRAM address (0x08000000), so a
 * plain pointer does the same job. */
#ifndef UPDLRM_DPU_ATTRIBUTES_H
#define UPDLRM_DPU_ATTRIBUTES_H

#define __mram_ptr
#define __dma_aligned __attribute__((aligned(8)))
/* Initialised MRAM variables: loaded into MRAM by dpu_load, like the SDK. */
#define __mram __attribute__((section(".mram"), aligned(8), used))
/* Uninitialised MRAM variables: never written by dpu_load. */
#define __mram_noinit __attribute__((section(".mram.noinit"), aligned(8), used))
#define __host        __attribute__((used))
#define __keep        __attribute__((used))
/* Atomic bits: plain bytes suffice when tasklets are cooperative; they live
 * in the .atomic section, which is zeroed at every boot, as the SDK's crt0
 * releases every atomic bit at boot. */
#define __atomic_bit __attribute__((section(".atomic")))
#define __noinline   __attribute__((noinline))
#define __section(s) __attribute__((section(s)))

#endif
