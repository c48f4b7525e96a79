/* updlrm emulator host library (hostlib.h): Launches: the worker processes of a program, sending them DPUs,
 * recovering from dead or timed-out workers, dpu_launch/dpu_sync/dpu_status.
 */
#include "hostlib.h"

#include "emu_io.h"

/* ---- workers ------------------------------------------------------------ */

static dpu_error_t spawn_worker(struct dpu_program_t *program, uint32_t w)
{
    struct emu_system *system = program->system;
    struct worker *worker = &program->workers[w];
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair)) {
        return fail(DPU_ERR_SYSTEM, "socketpair: %s", strerror(errno));
    }
    int host_end = high_cloexec(pair[0]);
    int worker_end = high_cloexec(pair[1]);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, system->shm.ctrl_fd, EMU_WORKER_CTRL_FD);
    posix_spawn_file_actions_adddup2(&actions, system->shm.mram_fd, EMU_WORKER_MRAM_FD);
    posix_spawn_file_actions_adddup2(&actions, worker_end, EMU_WORKER_CMD_FD);
    char **environment = system->worker_env; /* not environ: see struct emu_system */
    size_t nr_env = 0;
    while (environment[nr_env]) {
        nr_env++;
    }
    char **env = calloc(nr_env + 2, sizeof *env);
    char marker[64];
    snprintf(marker, sizeof marker, "%s=%u", EMU_WORKER_ENV, w);
    size_t e = 0;
    for (size_t i = 0; i < nr_env; i++) {
        if (strncmp(environment[i], EMU_WORKER_ENV "=", sizeof EMU_WORKER_ENV)) {
            env[e++] = environment[i];
        }
    }
    env[e++] = marker;
    env[e] = NULL;
    char *argv[] = {program->path, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, program->path, &actions, NULL, argv, env);
    posix_spawn_file_actions_destroy(&actions);
    free(env);
    close(worker_end);
    if (rc) {
        close(host_end);
        return fail(DPU_ERR_SYSTEM, "cannot start worker for %s: %s", program->path, strerror(rc));
    }
    worker->pid = pid;
    worker->socket = host_end;
    worker->busy = false;
    return DPU_OK;
}

static dpu_error_t ensure_workers(struct dpu_program_t *program)
{
    if (program->workers) {
        return DPU_OK;
    }
    uint32_t n = program->system->settings.max_workers;
    if (n > program->nr_dpus) {
        n = program->nr_dpus;
    }
    if (n == 0) {
        n = 1;
    }
    program->workers = calloc(n, sizeof *program->workers);
    if (!program->workers) {
        return fail(DPU_ERR_SYSTEM, "out of memory");
    }
    program->nr_workers = n;
    for (uint32_t w = 0; w < n; w++) {
        program->workers[w].socket = -1;
        program->workers[w].list = calloc(program->system->nr_dpus, sizeof(uint32_t));
        if (!program->workers[w].list) {
            return fail(DPU_ERR_SYSTEM, "out of memory");
        }
    }
    for (uint32_t w = 0; w < n; w++) {
        dpu_error_t status = spawn_worker(program, w);
        if (status != DPU_OK) {
            return status;
        }
    }
    return DPU_OK;
}

static bool send_launch(struct dpu_program_t *program, struct worker *worker)
{
    struct emu_launch_msg msg;
    memset(&msg, 0, sizeof msg);
    msg.magic = EMU_LAUNCH_MAGIC;
    msg.nr_dpus = worker->list_size;
    msg.layout = program->layout;
    msg.layout.dma_mode = program->system->settings.dma_mode;
    worker->busy = true;
    return emu_io_full(worker->socket, &msg, sizeof msg, EMU_IO_SEND) &&
           emu_io_full(worker->socket, worker->list, worker->list_size * sizeof(uint32_t), EMU_IO_SEND);
}

static void describe_exit(int wstatus, char *out, size_t size)
{
    if (WIFSIGNALED(wstatus)) {
        snprintf(out, size, "killed by signal %d (%s)", WTERMSIG(wstatus), strsignal(WTERMSIG(wstatus)));
    } else if (WIFEXITED(wstatus)) {
        snprintf(out, size, "exited with status %d", WEXITSTATUS(wstatus));
    } else {
        snprintf(out, size, "stopped");
    }
}

/* The worker is gone (crash, exit or timeout kill): fault the DPU it was
 * running, respawn it and resend the DPUs it had not started. */
static void recover_worker(struct dpu_program_t *program, uint32_t w, enum emu_fault_kind kind)
{
    struct emu_system *system = program->system;
    struct worker *worker = &program->workers[w];
    int wstatus = 0;
    close(worker->socket);
    worker->socket = -1;
    while (waitpid(worker->pid, &wstatus, 0) < 0 && errno == EINTR)
        ;
    char why[128];
    describe_exit(wstatus, why, sizeof why);
    uint32_t remaining = 0;
    for (uint32_t i = 0; i < worker->list_size; i++) {
        uint32_t d = worker->list[i];
        struct emu_dpu_state *s = &block_of(system, d)->state;
        uint32_t status = __atomic_load_n(&s->status, __ATOMIC_ACQUIRE);
        if (status == EMU_DPU_RUNNING) {
            s->fault_kind = kind;
            s->fault_tasklet = (int32_t)s->current_tasklet;
            if (kind == EMU_FAULT_TIMEOUT) {
                snprintf(s->fault_msg, sizeof s->fault_msg,
                         "launch exceeded the %.3g s timeout while tasklet %u was running (worker killed)",
                         system->settings.timeout_seconds, s->current_tasklet);
            } else {
                snprintf(s->fault_msg, sizeof s->fault_msg, "tasklet %u crashed: worker process %s", s->current_tasklet,
                         why);
            }
            s->dpu_counters.faults++;
            s->status = EMU_DPU_FAULT;
        } else if (status == EMU_DPU_QUEUED) {
            worker->list[remaining++] = d;
        }
    }
    worker->list_size = remaining;
    worker->busy = false;
    if (spawn_worker(program, w) != DPU_OK) {
        for (uint32_t i = 0; i < remaining; i++) {
            struct emu_dpu_state *s = &block_of(system, worker->list[i])->state;
            s->fault_kind = EMU_FAULT_CRASH;
            s->fault_tasklet = -1;
            snprintf(s->fault_msg, sizeof s->fault_msg, "could not restart the worker: %.200s", last_error);
            s->status = EMU_DPU_FAULT;
        }
        worker->list_size = 0;
        return;
    }
    /* after a timeout the rest is reported "not run" (run_launch), not run late */
    if (remaining && kind != EMU_FAULT_TIMEOUT && !send_launch(program, worker)) {
        worker->busy = true; /* the next poll sees the failure */
    }
}

void stop_workers(struct dpu_program_t *program)
{
    for (uint32_t w = 0; w < program->nr_workers; w++) {
        struct worker *worker = &program->workers[w];
        if (worker->socket >= 0) {
            close(worker->socket); /* EOF makes the worker exit */
        }
        worker->socket = -1;
        if (worker->pid > 0) {
            int wstatus;
            while (waitpid(worker->pid, &wstatus, 0) < 0 && errno == EINTR)
                ;
        }
        worker->pid = 0;
        free(worker->list);
        worker->list = NULL;
    }
    free(program->workers);
    program->workers = NULL;
    program->nr_workers = 0;
}

static dpu_error_t run_launch(struct emu_system *system, const uint32_t *dpus, uint32_t nr_dpus)
{
    for (struct dpu_program_t *p = system->programs; p; p = p->next) {
        if (p->workers) {
            for (uint32_t w = 0; w < p->nr_workers; w++) {
                p->workers[w].list_size = 0;
            }
        }
    }
    for (uint32_t i = 0; i < nr_dpus; i++) {
        struct dpu_program_t *program = system->program_of[dpus[i]];
        dpu_error_t status = ensure_workers(program);
        if (status != DPU_OK) {
            return status;
        }
        struct worker *worker = &program->workers[dpus[i] % program->nr_workers];
        worker->list[worker->list_size++] = dpus[i];
        block_of(system, dpus[i])->state.status = EMU_DPU_QUEUED;
        updlrm_emu_fault_plan_arm(system->faults, system->nr_dpus, dpus[i], system->settings.timeout_seconds > 0,
                                  &block_of(system, dpus[i])->state.inject);
    }
    uint32_t nr_busy = 0;
    for (struct dpu_program_t *p = system->programs; p; p = p->next) {
        for (uint32_t w = 0; w < p->nr_workers; w++) {
            if (p->workers[w].list_size) {
                nr_busy++;
                if (!send_launch(p, &p->workers[w])) {
                    p->workers[w].busy = true; /* detected as a dead worker below */
                }
            }
        }
    }
    struct pollfd *fds = calloc(nr_busy ? nr_busy : 1, sizeof *fds);
    struct {
        struct dpu_program_t *program;
        uint32_t worker;
    } *owners = calloc(nr_busy ? nr_busy : 1, sizeof *owners);
    if (!fds || !owners) {
        free(fds);
        free(owners);
        return fail(DPU_ERR_SYSTEM, "out of memory");
    }
    double deadline = system->settings.timeout_seconds > 0 ? now_seconds() + system->settings.timeout_seconds : 0;
    for (;;) {
        nfds_t n = 0;
        for (struct dpu_program_t *p = system->programs; p; p = p->next) {
            for (uint32_t w = 0; w < p->nr_workers; w++) {
                if (p->workers[w].busy) {
                    fds[n].fd = p->workers[w].socket;
                    fds[n].events = POLLIN;
                    fds[n].revents = 0;
                    owners[n].program = p;
                    owners[n].worker = w;
                    n++;
                }
            }
        }
        if (n == 0) {
            break;
        }
        int timeout_ms = -1;
        if (deadline > 0) {
            double left = deadline - now_seconds();
            timeout_ms = left <= 0 ? 0 : (int)(left * 1000) + 1;
        }
        int ready = poll(fds, n, timeout_ms);
        if (ready < 0 && errno == EINTR) {
            continue;
        }
        if (ready == 0) {
            for (nfds_t i = 0; i < n; i++) {
                struct worker *worker = &owners[i].program->workers[owners[i].worker];
                kill(worker->pid, SIGKILL);
                recover_worker(owners[i].program, owners[i].worker, EMU_FAULT_TIMEOUT);
                worker->busy = false; /* no retry of the rest after a timeout */
                for (uint32_t k = 0; k < worker->list_size; k++) {
                    struct emu_dpu_state *s = &block_of(system, worker->list[k])->state;
                    s->fault_kind = EMU_FAULT_TIMEOUT;
                    s->fault_tasklet = -1;
                    snprintf(s->fault_msg, sizeof s->fault_msg, "not run: launch timed out");
                    s->status = EMU_DPU_FAULT;
                }
            }
            continue;
        }
        for (nfds_t i = 0; i < n; i++) {
            if (!fds[i].revents) {
                continue;
            }
            struct dpu_program_t *p = owners[i].program;
            struct worker *worker = &p->workers[owners[i].worker];
            struct emu_launch_reply reply;
            ssize_t got = recv(worker->socket, &reply, sizeof reply, MSG_WAITALL);
            if (got == (ssize_t)sizeof reply && reply.magic == EMU_LAUNCH_MAGIC && reply.nr_done == worker->list_size) {
                worker->busy = false;
            } else {
                recover_worker(p, owners[i].worker, EMU_FAULT_CRASH);
            }
        }
    }
    free(fds);
    free(owners);
    report_dma_warnings(system, dpus, nr_dpus);
    annotate_fault_sites(system, dpus, nr_dpus);
    uint32_t first_fault = UINT32_MAX;
    for (uint32_t i = 0; i < nr_dpus; i++) {
        struct emu_dpu_state *s = &block_of(system, dpus[i])->state;
        if (s->status == EMU_DPU_FAULT) {
            if (first_fault == UINT32_MAX) {
                first_fault = dpus[i];
            }
        } else if (s->status != EMU_DPU_DONE) {
            s->status = EMU_DPU_FAULT;
            s->fault_kind = EMU_FAULT_CRASH;
            snprintf(s->fault_msg, sizeof s->fault_msg, "worker did not run this DPU");
            if (first_fault == UINT32_MAX) {
                first_fault = dpus[i];
            }
        }
    }
    if (first_fault != UINT32_MAX) {
        struct emu_dpu_state *s = &block_of(system, first_fault)->state;
        dpu_error_t code = s->fault_kind == EMU_FAULT_TIMEOUT ? DPU_ERR_TIMEOUT : DPU_ERR_DPU_FAULT;
        const struct dpu_t *dpu = &system->dpus[first_fault];
        uint32_t member = (uint32_t)(dpu - dpu->rank->dpus);
        if (s->fault_tasklet >= 0) {
            return fail(code, "DPU %u (rank %u, dpu %u) tasklet %d: %s", first_fault, dpu->rank->index, member,
                        s->fault_tasklet, s->fault_msg);
        }
        return fail(code, "DPU %u (rank %u, dpu %u): %s", first_fault, dpu->rank->index, member, s->fault_msg);
    }
    return ok();
}

static void *launch_thread_main(void *arg)
{
    struct emu_system *system = arg;
    /* faults are found again by dpu_sync from the DPUs' states */
    (void)run_launch(system, system->launch.dpus, system->launch.nr_dpus);
    pthread_mutex_lock(&system->launch.lock);
    system->launch.busy = false;
    pthread_cond_broadcast(&system->launch.idle);
    pthread_mutex_unlock(&system->launch.lock);
    return NULL;
}

EXPORT dpu_error_t dpu_launch(struct dpu_set_t dpu_set, dpu_launch_policy_t policy)
{
    struct emu_system *system = NULL;
    if (check_set(dpu_set, &system) != DPU_OK) {
        return DPU_ERR_INVALID_DPU_SET;
    }
    if (policy != DPU_SYNCHRONOUS && policy != DPU_ASYNCHRONOUS) {
        return fail(DPU_ERR_INVALID_LAUNCH_POLICY, "dpu_launch: unknown policy %d", (int)policy);
    }
    enter(system);
    uint32_t n = 0;
    dpu_error_t status = DPU_OK;
    FOR_EACH_DPU_OF_SET(dpu_set, dpu, {
        if (!system->program_of[dpu->index] && status == DPU_OK) {
            status = fail(DPU_ERR_NO_PROGRAM_LOADED, "dpu_launch: no program loaded on DPU %u", dpu->index);
        }
        system->launch.dpus[n++] = dpu->index;
    });
    if (status != DPU_OK) {
        leave(system);
        return status;
    }
    system->launch.nr_dpus = n;
    if (policy == DPU_SYNCHRONOUS) {
        system->launch.busy = true;
        leave(system);
        status = run_launch(system, system->launch.dpus, n);
        pthread_mutex_lock(&system->launch.lock);
        system->launch.busy = false;
        pthread_cond_broadcast(&system->launch.idle);
        pthread_mutex_unlock(&system->launch.lock);
        return status;
    }
    system->launch.busy = true;
    int rc = pthread_create(&system->launch.thread, NULL, launch_thread_main, system);
    if (rc) {
        system->launch.busy = false;
        leave(system);
        return fail(DPU_ERR_SYSTEM, "cannot start launch thread: %s", strerror(rc));
    }
    system->launch.thread_joinable = true;
    leave(system);
    return ok();
}

static dpu_error_t faults_of_set(struct emu_system *system, struct dpu_set_t set)
{
    uint32_t index = 0;
    dpu_error_t status = DPU_OK;
    FOR_EACH_DPU_OF_SET(set, dpu, {
        struct emu_dpu_state *s = &block_of(system, dpu->index)->state;
        if (s->status == EMU_DPU_FAULT && status == DPU_OK) {
            status = fail(s->fault_kind == EMU_FAULT_TIMEOUT ? DPU_ERR_TIMEOUT : DPU_ERR_DPU_FAULT,
                          "DPU %u (set index %u) tasklet %d: %s", dpu->index, index, s->fault_tasklet, s->fault_msg);
        }
        index++;
    });
    return status;
}

EXPORT dpu_error_t dpu_sync(struct dpu_set_t dpu_set)
{
    struct emu_system *system = NULL;
    if (check_set(dpu_set, &system) != DPU_OK) {
        return DPU_ERR_INVALID_DPU_SET;
    }
    enter(system);
    dpu_error_t status = faults_of_set(system, dpu_set);
    leave(system);
    return status == DPU_OK ? ok() : status;
}

EXPORT dpu_error_t dpu_status(struct dpu_set_t dpu_set, bool *done, bool *fault)
{
    struct emu_system *system = NULL;
    if (check_set(dpu_set, &system) != DPU_OK) {
        return DPU_ERR_INVALID_DPU_SET;
    }
    bool all_done = true, any_fault = false;
    FOR_EACH_DPU_OF_SET(dpu_set, dpu, {
        uint32_t s = __atomic_load_n(&block_of(system, dpu->index)->state.status, __ATOMIC_ACQUIRE);
        if (s == EMU_DPU_QUEUED || s == EMU_DPU_RUNNING) {
            all_done = false;
        }
        if (s == EMU_DPU_FAULT) {
            any_fault = true;
        }
    });
    if (done) {
        *done = all_done;
    }
    if (fault) {
        *fault = any_fault;
    }
    return ok();
}
EXPORT dpu_error_t updlrm_emu_nr_workers(struct dpu_set_t set, uint32_t *nr_workers)
{
    struct emu_system *system = NULL;
    if (check_set(set, &system) != DPU_OK) {
        return DPU_ERR_INVALID_DPU_SET;
    }
    enter(system);
    uint32_t n = 0;
    for (struct dpu_program_t *p = system->programs; p; p = p->next) {
        n += p->nr_workers;
    }
    leave(system);
    *nr_workers = n;
    return ok();
}
