/* Performance counter (UPMEM SDK <perfcounter.h>).
 *
 * The emulator returns modelled cycles: every MRAM DMA costs
 * alpha + 0.5 * bytes cycles (PrIM) and every other runtime call a flat
 * charge; see emulator/README.md.  COUNT_INSTRUCTIONS counts runtime calls. */
#ifndef UPDLRM_DPU_PERFCOUNTER_H
#define UPDLRM_DPU_PERFCOUNTER_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef uint64_t perfcounter_t;

typedef enum _perfcounter_config_t {
    COUNT_SAME = 0,
    COUNT_CYCLES = 1,
    COUNT_INSTRUCTIONS = 2,
    COUNT_NOTHING = 3,
} perfcounter_config_t;

#define PERFCOUNTER_COUNT_SAME         COUNT_SAME
#define PERFCOUNTER_COUNT_CYCLES       COUNT_CYCLES
#define PERFCOUNTER_COUNT_INSTRUCTIONS COUNT_INSTRUCTIONS
#define PERFCOUNTER_COUNT_NOTHING      COUNT_NOTHING

/* Selects what to count; returns the counter value before the call. */
perfcounter_t perfcounter_config(perfcounter_config_t config, bool reset_value);
perfcounter_t perfcounter_get(void);

/* v1B only in the SDK; the emulator is a v1A DPU, where the SDK's header
 * turns a call into a build error. */
#define perfcounter_get_both(should_reset)                                                                             \
    do {                                                                                                               \
        _Static_assert(0, "[DPU_ERROR]: call to perfcounter_get_both is only available on v1B.");                      \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif
