/* Tasklet mutexes (UPMEM SDK <mutex.h>).  As in the SDK a mutex is one
 * atomic byte (here: 0 free, else owner + 1) and every mutex is released at
 * each boot.
 *
 *   MUTEX_INIT(my_mutex);
 *   ... mutex_lock(my_mutex); ... mutex_unlock(my_mutex);
 */
#ifndef UPDLRM_DPU_MUTEX_H
#define UPDLRM_DPU_MUTEX_H

#include <stdbool.h>
#include <stdint.h>
#include <attributes.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint8_t *mutex_id_t;

#define MUTEX_INIT(_name)                                                                                              \
    __atomic_bit uint8_t __updlrm_mutex_storage_##_name = 0;                                                           \
    mutex_id_t _name = &__updlrm_mutex_storage_##_name
#define MUTEX_GET(_name) (_name)

void mutex_lock(mutex_id_t mutex);
/* true when the mutex was taken by this call */
bool mutex_trylock(mutex_id_t mutex);
void mutex_unlock(mutex_id_t mutex);

#ifdef __cplusplus
}
#endif

#endif
