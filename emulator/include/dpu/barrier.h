/* Tasklet barriers (UPMEM SDK <barrier.h>).
 *
 *   BARRIER_INIT(my_barrier, NR_TASKLETS);
 *   ... barrier_wait(&my_barrier);
 */
#ifndef UPDLRM_DPU_BARRIER_H
#define UPDLRM_DPU_BARRIER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The first four fields are the SDK's, in its order and types: programs that
 * build barriers at run time (e.g. an array of barrier_t filled in by tasklet
 * 0) set them directly.  Tasklets here are cooperative, so the SDK's wait
 * queue and guarding atomic bit are accepted but not needed. */
typedef struct barrier_t {
    uint8_t wait_queue; /* SDK: last waiting tasklet, 0xff when none */
    uint8_t count;      /* tasklets still expected in this round */
    uint8_t initial_count;
    uint8_t lock;        /* SDK: atomic bit guarding the barrier */
    uint32_t generation; /* bumped when a round completes */
} barrier_t;

/* Same build-time check as the SDK's barrier.h (the counter is a byte there). */
#define BARRIER_INIT(_name, _counter)                                                                                  \
    _Static_assert(((_counter) < 128) && ((_counter) >= -127), "barrier counter must be encoded on a byte");           \
    barrier_t _name = {0xff, (_counter), (_counter), 0, 0}

void barrier_wait(barrier_t *barrier);

#ifdef __cplusplus
}
#endif

#endif
