/* Layout shared by the semaphore producer/consumer DPU program and host. */
#ifndef SEMAPHORE_PC_COMMON_H
#define SEMAPHORE_PC_COMMON_H

#define RING_SLOTS 4 /* int: the SDK's SEMAPHORE_INIT refuses an unsigned counter */
#define MAX_ITEMS (1u << 14)
#define ITEMS_PER_READ 64u

#endif /* SEMAPHORE_PC_COMMON_H */
