/* Pools of mutexes (UPMEM SDK <mutex_pool.h>): element id -> one of a
 * power-of-two number of mutexes (its low bits).
 *
 *   MUTEX_POOL_INIT(row_pool, 8);
 *   ... mutex_pool_lock(&row_pool, row); ... mutex_pool_unlock(&row_pool, row);
 */
#ifndef UPDLRM_DPU_MUTEX_POOL_H
#define UPDLRM_DPU_MUTEX_POOL_H

#include <assert.h>
#include <stdint.h>
#include <mutex.h>

struct mutex_pool {
    uint8_t *hw_mutexes;
    uint8_t hw_mutexes_mask;
};

#define MUTEX_POOL_INIT(NAME, NB_MUTEXES)                                                                              \
    static_assert((NB_MUTEXES) > 0, "Number of hw mutexes should be at least 1.");                                     \
    static_assert(__builtin_popcount(NB_MUTEXES) == 1, "Number of hardware mutexes should be a power of 2");           \
    uint8_t __atomic_bit hw_mutexes_##NAME[NB_MUTEXES] = {0};                                                          \
    struct mutex_pool NAME = {.hw_mutexes = hw_mutexes_##NAME, .hw_mutexes_mask = (NB_MUTEXES) - 1};

static inline void mutex_pool_lock(struct mutex_pool *mp, uint16_t id)
{
    mutex_lock(&mp->hw_mutexes[id & mp->hw_mutexes_mask]);
}

static inline void mutex_pool_unlock(struct mutex_pool *mp, uint16_t id)
{
    mutex_unlock(&mp->hw_mutexes[id & mp->hw_mutexes_mask]);
}

#endif
