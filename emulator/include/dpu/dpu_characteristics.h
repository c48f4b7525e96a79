/* DPU constants (UPMEM SDK <dpu_characteristics.h>, v1A). */
#ifndef UPDLRM_DPU_CHARACTERISTICS_H
#define UPDLRM_DPU_CHARACTERISTICS_H

#define DPU_NR_THREADS     24
#define DPU_NR_ATOMIC_BITS 256
#define DPU_NR_WORK_REGS   24

#endif
