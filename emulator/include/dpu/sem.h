/* Counting semaphores (UPMEM SDK <sem.h>).
 *
 *   SEMAPHORE_INIT(my_sem, 2);
 *   ... sem_take(&my_sem); ... sem_give(&my_sem);
 */
#ifndef UPDLRM_DPU_SEM_H
#define UPDLRM_DPU_SEM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sem_t {
    int32_t count;
} sem_t;

/* The SDK stores the counter in a byte and checks it at build time with this
 * very condition (sem.h of the UPMEM SDK), so an unsigned counter such as 4u
 * is refused there (4u >= -127 is false) and here. */
#define SEMAPHORE_INIT(_name, _counter)                                                                                \
    _Static_assert(((_counter) < 128) && ((_counter) >= -127), "semaphore counter must be encoded on a byte");         \
    sem_t _name = {(_counter)}

void sem_take(sem_t *sem);
void sem_give(sem_t *sem);

#ifdef __cplusplus
}
#endif

#endif
