/* updlrm emulator host library (hostlib.h): Diagnostics: DMA warnings and fault sites named by the program's source
 * line (addr2line), fault information and the fault injection hook.
 */
#include "hostlib.h"

/* ---- source lines of DPU program sites ---------------------------------- */

/* "file:line (function)" of a return address in a DPU program (a non-PIE
 * executable built with -g, so addresses are the same in every worker),
 * through binutils' addr2line, which the compiler driver needs anyway; the
 * bare address when that fails.  The last answer is cached per program. */
static const char *describe_site(struct dpu_program_t *program, uint64_t site)
{
    if (program->diag.described_site == site && site) {
        return program->diag.described_where;
    }
    char *out = program->diag.described_where;
    size_t size = sizeof program->diag.described_where;
    snprintf(out, size, "address 0x%llx", (unsigned long long)site);
    program->diag.described_site = site;
    int fds[2];
    if (!site || pipe2(fds, O_CLOEXEC)) {
        return out;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    char address[32];
    /* the return address follows the call: look up the byte before it */
    snprintf(address, sizeof address, "0x%llx", (unsigned long long)(site - 1));
    char *argv[] = {(char *)"addr2line", (char *)"-f", (char *)"-e", program->path, address, NULL};
    pid_t pid;
    /* the environment copied at dpu_alloc, not environ (see struct emu_system) */
    int rc = posix_spawnp(&pid, "addr2line", &actions, NULL, argv, program->system->worker_env);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    char text[1024];
    size_t used = 0;
    while (rc == 0 && used < sizeof text - 1) {
        ssize_t n = read(fds[0], text + used, sizeof text - 1 - used);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        used += (size_t)n;
    }
    close(fds[0]);
    if (rc) {
        return out;
    }
    int wstatus;
    while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR)
        ;
    text[used] = 0;
    char *function = text, *location = strchr(text, '\n');
    if (!location) {
        return out;
    }
    *location++ = 0;
    location[strcspn(location, "\n")] = 0;
    char *discriminator = strstr(location, " (discriminator");
    if (discriminator) {
        *discriminator = 0;
    }
    if (!*location || location[0] == '?') {
        return out;
    }
    snprintf(out, size, "%.300s (%.200s)", location, function);
    return out;
}

/* Default DMA mode: each relaxed DMA rule is reported once per program site. */
void report_dma_warnings(struct emu_system *system, const uint32_t *dpus, uint32_t nr_dpus)
{
    if (system->settings.dma_mode != EMU_DMA_DEFAULT) {
        return;
    }
    for (uint32_t i = 0; i < nr_dpus; i++) {
        struct emu_dpu_state *s = &block_of(system, dpus[i])->state;
        struct dpu_program_t *program = system->program_of[dpus[i]];
        uint32_t n = s->nr_dma_warnings < EMU_MAX_DMA_WARNINGS ? s->nr_dma_warnings : EMU_MAX_DMA_WARNINGS;
        for (uint32_t k = 0; k < n && program; k++) {
            const struct emu_dma_warning *w = &s->dma_warnings[k];
            bool seen = false;
            for (uint32_t r = 0; r < program->diag.nr_reported && !seen; r++) {
                seen = program->diag.reported[r].site == w->site && program->diag.reported[r].kind == w->kind;
            }
            if (seen) {
                continue;
            }
            struct reported_site *grown =
                realloc(program->diag.reported, (program->diag.nr_reported + 1) * sizeof *program->diag.reported);
            if (!grown) {
                return;
            }
            program->diag.reported = grown;
            program->diag.reported[program->diag.nr_reported].site = w->site;
            program->diag.reported[program->diag.nr_reported].kind = w->kind;
            program->diag.nr_reported++;
            char text[EMU_FAULT_MSG_SIZE];
            emu_describe_dma_relaxation(text, sizeof text, w);
            const struct dpu_t *dpu = &system->dpus[dpus[i]];
            fprintf(stderr,
                    "updlrm emulator: warning: DPU %u (rank %u, dpu %u) tasklet %d: %s, at %s. The SDK forbids "
                    "this DMA but the DPU accepts it; UPDLRM_EMU_DMA=strict makes it a fault, "
                    "UPDLRM_EMU_DMA=hardware silences this warning.\n",
                    dpus[i], dpu->rank->index, (uint32_t)(dpu - dpu->rank->dpus), w->tasklet, text,
                    describe_site(program, w->site));
        }
        s->nr_dma_warnings = 0;
    }
    fflush(stderr);
}

/* A DMA fault names the program's source line. */
void annotate_fault_sites(struct emu_system *system, const uint32_t *dpus, uint32_t nr_dpus)
{
    for (uint32_t i = 0; i < nr_dpus; i++) {
        struct emu_dpu_state *s = &block_of(system, dpus[i])->state;
        struct dpu_program_t *program = system->program_of[dpus[i]];
        if (s->status != EMU_DPU_FAULT || !s->fault_site || !program) {
            continue;
        }
        size_t length = strlen(s->fault_msg);
        snprintf(s->fault_msg + length, sizeof s->fault_msg - length, " at %s", describe_site(program, s->fault_site));
        s->fault_site = 0;
    }
}

EXPORT dpu_error_t updlrm_emu_fault_info(struct dpu_set_t set, uint32_t *dpu_index, int32_t *tasklet, char *message,
                                         size_t message_size)
{
    struct emu_system *system = NULL;
    if (check_set(set, &system) != DPU_OK) {
        return DPU_ERR_INVALID_DPU_SET;
    }
    enter(system);
    uint32_t i = 0;
    bool found = false;
    FOR_EACH_DPU_OF_SET(set, dpu, {
        const struct emu_dpu_state *s = &block_of(system, dpu->index)->state;
        if (!found && s->status == EMU_DPU_FAULT) {
            found = true;
            *dpu_index = i;
            *tasklet = s->fault_tasklet;
            if (message && message_size) {
                snprintf(message, message_size, "%s", s->fault_msg);
            }
        }
        i++;
    });
    leave(system);
    if (!found) {
        return fail(DPU_ERR_INVALID_DPU_SET, "no DPU of the set is in fault");
    }
    return ok();
}

EXPORT dpu_error_t updlrm_emu_set_faults(struct dpu_set_t set, const char *rules)
{
    struct emu_system *system = NULL;
    if (check_set(set, &system) != DPU_OK) {
        return DPU_ERR_INVALID_DPU_SET;
    }
    struct updlrm_emu_fault_plan *plan = NULL;
    char why[256];
    if (updlrm_emu_fault_plan_parse(rules, &plan, why, sizeof why)) {
        return fail(DPU_ERR_INVALID_PROFILE, "updlrm_emu_set_faults: %s", why);
    }
    enter(system);
    updlrm_emu_fault_plan_free(system->faults);
    system->faults = plan;
    leave(system);
    return ok();
}
