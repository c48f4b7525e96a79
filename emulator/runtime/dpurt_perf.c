/* updlrm emulator DPU runtime (dpurt.h): the performance counter (perfcounter.h).
 */
#include "dpurt.h"

/* ---- performance counter ------------------------------------------------ */

static uint64_t perfcounter_value(void)
{
    struct emu_dpu_state *s = state();
    uint64_t now;
    if (s->perfcounter_mode == 2) {
        now = 0;
        for (uint32_t id = 0; id < rt.sched.nr_tasklets; id++) {
            now += s->tasklet[id].runtime_calls;
        }
    } else {
        now = s->dpu_cycles;
    }
    return now - s->perfcounter_base;
}

EXPORT uint64_t perfcounter_config(int config, bool reset_value)
{
    runtime_call();
    struct emu_dpu_state *s = state();
    uint64_t previous = perfcounter_value();
    if (config == 1 || config == 2) {
        s->perfcounter_mode = (uint32_t)config;
    }
    if (reset_value) {
        s->perfcounter_base = 0;
        s->perfcounter_base = perfcounter_value();
    }
    return previous;
}

EXPORT uint64_t perfcounter_get(void)
{
    runtime_call();
    return perfcounter_value();
}
