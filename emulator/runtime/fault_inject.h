/* Fault injection: a test hook of the updlrm emulator, not part of the UPMEM SDK.
 *
 * Rules come from the environment variable UPDLRM_EMU_FAULTS (read by every
 * dpu_alloc / dpu_alloc_ranks) or from updlrm_emu_set_faults(set, rules) (updlrm_emu.h):
 *
 *     rules := rule (";" rule)*
 *     rule  := kind [":" key "=" value ("," key "=" value)*]
 *     kind  := "fault"   the DPU faults (EMU_FAULT_INJECTED), naming DPU and tasklet
 *            | "kill"    the worker process running the DPU dies by SIGKILL
 *            | "hang"    the tasklet never returns (needs a launch timeout to end)
 *            | "alloc"   dpu_alloc / dpu_alloc_ranks fail with DPU_ERR_ALLOCATION
 *     key   := "dpu"     DPU index in the allocated set (default: every DPU)
 *            | "launch"  only the DPU's L-th launch since the rules were set, from 1
 *                        (default: every launch)
 *            | "tasklet" only this tasklet (default: the first tasklet that gets there)
 *            | "dma"     at the k-th MRAM DMA (mram_read/mram_write and the unaligned
 *                        variants, from 1) of the launch, counting only `tasklet`'s DMAs
 *                        when given (default: when the tasklet starts)
 *
 * e.g. "fault:dpu=3,dma=5,launch=2" or "kill:dpu=1,tasklet=2;hang:dpu=0,launch=3".
 * The first rule matching a DPU's launch is armed for it (host side, written into the
 * DPU's shared state); the worker fires it (worker side).  Both libraries compile
 * this file; each uses its half.
 */
#ifndef UPDLRM_EMU_FAULT_INJECT_H
#define UPDLRM_EMU_FAULT_INJECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "emu_shared.h"

#define UPDLRM_EMU_FAULTS_ENV "UPDLRM_EMU_FAULTS"

/* ---- host side (libupdlrm_dpu.so) ---- */

struct updlrm_emu_fault_plan;

/* Parses `rules` (NULL or "" gives *plan = NULL).  Returns 0, or -1 with a
 * one-line reason in `error`. */
int updlrm_emu_fault_plan_parse(const char *rules, struct updlrm_emu_fault_plan **plan, char *error, size_t error_size);
void updlrm_emu_fault_plan_free(struct updlrm_emu_fault_plan *plan);
/* Whether the rules make allocations fail. */
bool updlrm_emu_fault_plan_refuses_alloc(const struct updlrm_emu_fault_plan *plan);
/* The rules text the plan was parsed from. */
const char *updlrm_emu_fault_plan_text(const struct updlrm_emu_fault_plan *plan);
/* Counts a launch of DPU `dpu` (of `nr_dpus`) and writes what it must do into
 * `armed` (all zero when nothing; plan may be NULL).  Without a launch timeout
 * (has_timeout false) a hang would never end: it is armed as a fault saying so. */
void updlrm_emu_fault_plan_arm(struct updlrm_emu_fault_plan *plan, uint32_t nr_dpus, uint32_t dpu, bool has_timeout,
                               struct emu_fault_inject *armed);

/* ---- worker side (libupdlrm_dpurt.so) ---- */

enum updlrm_emu_fault_action {
    UPDLRM_EMU_FAULT_ACTION_NONE = 0,
    UPDLRM_EMU_FAULT_ACTION_FAULT, /* the caller faults the DPU with updlrm_emu_fault_message() */
};

/* Whether a rule is armed for the DPU being run (checked before every hook call). */
extern bool updlrm_emu_fault_armed;
/* Start of a DPU's run: takes the rule the host armed for it. */
void updlrm_emu_fault_begin(const struct emu_fault_inject *armed);
/* A tasklet starts / issues an MRAM DMA.  Kills or hangs inside; returns FAULT
 * when the caller must fault the DPU. */
enum updlrm_emu_fault_action updlrm_emu_fault_at_start(uint32_t tasklet);
enum updlrm_emu_fault_action updlrm_emu_fault_at_dma(uint32_t tasklet);
/* Message of the fault to report. */
const char *updlrm_emu_fault_message(void);

#endif
