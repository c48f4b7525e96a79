/* Wall-clock probes of the updlrm emulator (emulator-only; the UPMEM SDK
 * 2025.1 has no such header, so guard uses with #ifdef UPDLRM_EMULATOR).
 * A probe accumulates the host's wall time between updlrm_emu_probe_start
 * and updlrm_emu_probe_stop.
 *
 *   struct updlrm_emu_probe probe;
 *   DPU_ASSERT(updlrm_emu_probe_init("launch", &probe));
 *   DPU_ASSERT(updlrm_emu_probe_start(&probe)); ... DPU_ASSERT(updlrm_emu_probe_stop(&probe));
 *   double seconds; DPU_ASSERT(updlrm_emu_probe_get(&probe, UPDLRM_EMU_PROBE_AVERAGE, &seconds));
 */
#ifndef UPDLRM_EMU_PROBE_H
#define UPDLRM_EMU_PROBE_H

#include <stdbool.h>
#include <stdint.h>

#include <dpu_error.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum updlrm_emu_probe_option {
    UPDLRM_EMU_PROBE_AVERAGE,    /* seconds per start/stop interval */
    UPDLRM_EMU_PROBE_ACCUMULATE, /* seconds over all intervals */
} updlrm_emu_probe_option_t;

struct updlrm_emu_probe {
    char name[64];
    bool running;
    uint32_t nr_intervals;
    double started_at;
    double total_seconds;
};

dpu_error_t updlrm_emu_probe_init(const char *name, struct updlrm_emu_probe *probe);
dpu_error_t updlrm_emu_probe_deinit(struct updlrm_emu_probe *probe);
dpu_error_t updlrm_emu_probe_start(struct updlrm_emu_probe *probe);
dpu_error_t updlrm_emu_probe_stop(struct updlrm_emu_probe *probe);
dpu_error_t updlrm_emu_probe_get(struct updlrm_emu_probe *probe, updlrm_emu_probe_option_t option, double *seconds);

#ifdef __cplusplus
}
#endif

#endif
