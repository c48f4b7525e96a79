/* Virtual mutexes (UPMEM SDK <vmutex.h>): one state bit in WRAM per virtual
 * mutex, for many more locks than the DPU has hardware mutexes.  A tasklet
 * that finds a virtual mutex taken blocks (the SDK spins) until it is free.
 *
 *   VMUTEX_INIT(row_locks, 1024, 16);
 *   ... vmutex_lock(&row_locks, row); ... vmutex_unlock(&row_locks, row);
 */
#ifndef UPDLRM_DPU_VMUTEX_H
#define UPDLRM_DPU_VMUTEX_H

#include <assert.h>
#include <stdint.h>
#include <mutex.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vmutex {
    uint8_t *vm;         /* one bit per virtual mutex */
    uint8_t *hw_mutexes; /* kept for layout compatibility with the SDK */
    uint8_t hw_mutexes_mask;
};

#define VMUTEX_INIT(NAME, NB_VMUTEXES, NB_MUTEXES)                                                                     \
    static_assert((NB_MUTEXES) > 0, "Number of hw mutexes should be at least 1.");                                     \
    static_assert(__builtin_popcount(NB_MUTEXES) == 1, "Number of hardware mutexes should be a power of 2");           \
    static_assert(((NB_VMUTEXES) & 7) == 0, "Number of virtual mutexes should be a multiple of 8");                    \
    uint8_t __atomic_bit hw_mutexes_##NAME[NB_MUTEXES] = {0};                                                          \
    uint8_t vmutex_##NAME[(NB_VMUTEXES) >> 3] = {0};                                                                   \
    struct vmutex NAME = {.vm = vmutex_##NAME, .hw_mutexes = hw_mutexes_##NAME, .hw_mutexes_mask = (NB_MUTEXES) - 1};

void vmutex_lock(struct vmutex *vm, uint16_t id);
void vmutex_unlock(struct vmutex *vm, uint16_t id);

#ifdef __cplusplus
}
#endif

#endif
