/* updlrm emulator host library (hostlib.h): Allocation: the profile string and environment, the DPU set's ranks
 * and shared memory, dpu_alloc/dpu_alloc_ranks/dpu_free.
 */
#include "hostlib.h"

/* ---- allocation --------------------------------------------------------- */

int high_cloexec(int fd)
{
    /* descriptors above the worker's fixed slots make the dup2 in
     * posix_spawn order-independent */
    int high = fcntl(fd, F_DUPFD_CLOEXEC, 64);
    close(fd);
    return high;
}

static uint32_t env_uint(const char *name, uint32_t fallback)
{
    const char *value = getenv(name);
    if (!value || !*value) {
        return fallback;
    }
    char *end;
    unsigned long parsed = strtoul(value, &end, 10);
    return (*end || parsed == 0 || parsed > 1000000) ? fallback : (uint32_t)parsed;
}

struct profile {
    uint32_t nr_ranks_available;
    uint32_t dpus_per_rank;
    struct emu_settings settings; /* dpus_per_ci: DPUs per control interface (slice) of a rank */
};

/* UPDLRM_EMU_DMA: unset or "default", "hardware", "strict" (emulator/README.md). */
static dpu_error_t parse_dma_mode(uint32_t *mode)
{
    const char *value = getenv("UPDLRM_EMU_DMA");
    if (!value || !*value || !strcmp(value, "default")) {
        *mode = EMU_DMA_DEFAULT;
    } else if (!strcmp(value, "hardware")) {
        *mode = EMU_DMA_HARDWARE;
    } else if (!strcmp(value, "strict")) {
        *mode = EMU_DMA_STRICT;
    } else {
        return fail(DPU_ERR_INVALID_PROFILE,
                    "UPDLRM_EMU_DMA='%s' is not a DMA mode: use default (decode as the DPU, warn once per site), "
                    "strict (fault) or hardware (decode silently)",
                    value);
    }
    return DPU_OK;
}

/* Hardware ranks: 8 chips (control interfaces) x 8 DPUs (UPMEM SDK
 * documentation, "DPU chip characteristics"). */
#define EMU_CIS_PER_RANK 8u
/* A full 20-DIMM UPMEM server: 40 ranks = 2560 DPUs (UPMEM SDK documentation;
 * PrIM, Gomez-Luna et al. 2022, Sec. 2.1). */
#define EMU_MACHINE_DPUS 2560u

static bool parse_count(const char *value, unsigned long max, uint32_t *out)
{
    char *end = NULL;
    unsigned long v = strtoul(value, &end, 10);
    if (!*value || *end || v == 0 || v > max) {
        return false;
    }
    *out = (uint32_t)v;
    return true;
}

/* The profile is the SDK's "key=value,..." string, after UPMEM_PROFILE_BASE
 * (libdpu merges that variable into every allocation's profile; a key given
 * twice takes its last value).  Topology: hardware ranks of 64 DPUs (8 CIs x
 * 8) unless "backend=simulator", whose ranks hold one DPU as the SDK's
 * functional simulator's do; nrDpusPerCI (the SDK's key, 1..8) and
 * nrDpusPerRank (the emulator's, 1..64) override the rank size. */
static dpu_error_t parse_profile(const char *text, struct profile *p)
{
    long nproc = sysconf(_SC_NPROCESSORS_ONLN);
    memset(p, 0, sizeof *p);
    uint32_t ranks_from_env = env_uint("UPDLRM_EMU_NR_RANKS", 0);
    p->settings.max_workers = env_uint("UPDLRM_EMU_WORKERS", nproc > 0 ? (uint32_t)nproc : 1);
    dpu_error_t dma_status = parse_dma_mode(&p->settings.dma_mode);
    if (dma_status != DPU_OK) {
        return dma_status;
    }
    const char *timeout_env = getenv("UPDLRM_EMU_TIMEOUT");
    if (timeout_env && *timeout_env) {
        p->settings.timeout_seconds = atof(timeout_env);
    }
    const char *base = getenv("UPMEM_PROFILE_BASE");
    size_t length = (base ? strlen(base) : 0) + (text ? strlen(text) : 0) + 2;
    char *copy = malloc(length);
    if (!copy) {
        return fail(DPU_ERR_SYSTEM, "out of memory");
    }
    snprintf(copy, length, "%s,%s", base ? base : "", text ? text : "");
    dpu_error_t status = DPU_OK;
    bool simulator = false;
    uint32_t nr_ranks = 0, dpus_per_rank = 0, dpus_per_ci = 0;
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        while (*item == ' ') {
            item++;
        }
        if (!*item) {
            continue;
        }
        char *equal = strchr(item, '=');
        if (!equal) {
            status = fail(DPU_ERR_INVALID_PROFILE, "profile item '%s' is not key=value", item);
            break;
        }
        *equal = 0;
        const char *key = item, *value = equal + 1;
        char *end = NULL;
        bool bad = false;
        if (!strcmp(key, "backend")) {
            if (strcmp(value, "emulator") && strcmp(value, "simulator") && strcmp(value, "hw")) {
                status = fail(DPU_ERR_INVALID_PROFILE, "unknown backend '%s' (emulator, simulator or hw)", value);
                break;
            }
            simulator = !strcmp(value, "simulator");
        } else if (!strcmp(key, "nrRanks")) {
            bad = !parse_count(value, 100000, &nr_ranks);
        } else if (!strcmp(key, "nrDpusPerRank")) {
            bad = !parse_count(value, EMU_DPUS_PER_RANK, &dpus_per_rank);
        } else if (!strcmp(key, "nrDpusPerCI")) {
            bad = !parse_count(value, EMU_DPUS_PER_RANK / EMU_CIS_PER_RANK, &dpus_per_ci);
        } else if (!strcmp(key, "nrWorkers")) {
            bad = !parse_count(value, 100000, &p->settings.max_workers);
        } else if (!strcmp(key, "sgXferEnable")) {
            bad = strcmp(value, "true") && strcmp(value, "false");
            p->settings.sg_enabled = !strcmp(value, "true");
        } else if (!strcmp(key, "sgXferMaxBlocksPerDpu")) {
            bad = !parse_count(value, UINT32_MAX, &p->settings.sg_max_blocks);
        } else if (!strcmp(key, "timeout")) {
            double v = strtod(value, &end);
            bad = !*value || *end || v < 0;
            if (!bad) {
                p->settings.timeout_seconds = v;
            }
        }
        /* other keys belong to the SDK's hardware/simulator backends and
         * have no meaning here; they are accepted so profiles stay portable */
        if (bad) {
            status = fail(DPU_ERR_INVALID_PROFILE, "invalid value '%s' for profile key %s", value, key);
            break;
        }
    }
    free(copy);
    if (status != DPU_OK) {
        return status;
    }
    uint32_t nr_cis = simulator ? 1 : EMU_CIS_PER_RANK;
    if (dpus_per_rank) {
        p->dpus_per_rank = dpus_per_rank;
        p->settings.dpus_per_ci = dpus_per_rank < EMU_CIS_PER_RANK ? dpus_per_rank : EMU_CIS_PER_RANK;
    } else {
        p->settings.dpus_per_ci = dpus_per_ci ? dpus_per_ci : (simulator ? 1 : EMU_DPUS_PER_RANK / EMU_CIS_PER_RANK);
        p->dpus_per_rank = nr_cis * p->settings.dpus_per_ci;
    }
    /* the machine keeps its 2560 DPUs whatever the rank size */
    p->nr_ranks_available = nr_ranks         ? nr_ranks
                            : ranks_from_env ? ranks_from_env
                                             : (EMU_MACHINE_DPUS + p->dpus_per_rank - 1) / p->dpus_per_rank;
    return DPU_OK;
}

static void destroy_system(struct emu_system *system);
static void free_environment(char **env);

/* A copy of the environment without EMU_WORKER_ENV (spawn_worker adds it per worker); NULL if out of memory. */
static char **copy_environment(void)
{
    size_t count = 0;
    while (environ[count]) {
        count++;
    }
    char **copy = calloc(count + 1, sizeof *copy);
    for (size_t i = 0, kept = 0; copy && i < count; i++) {
        if (strncmp(environ[i], EMU_WORKER_ENV "=", sizeof EMU_WORKER_ENV) == 0) {
            continue;
        }
        copy[kept] = strdup(environ[i]);
        if (!copy[kept++]) {
            free_environment(copy);
            return NULL;
        }
    }
    return copy;
}

static void free_environment(char **env)
{
    for (size_t i = 0; env && env[i]; i++) {
        free(env[i]);
    }
    free(env);
}

static dpu_error_t create_system(uint32_t nr_dpus, const struct profile *profile, struct dpu_set_t *set)
{
    struct emu_system *system = calloc(1, sizeof *system);
    if (!system) {
        return fail(DPU_ERR_SYSTEM, "out of memory");
    }
    system->shm.ctrl_fd = system->shm.mram_fd = -1;
    system->nr_dpus = nr_dpus;
    system->nr_ranks = (nr_dpus + profile->dpus_per_rank - 1) / profile->dpus_per_rank;
    system->settings = profile->settings;
    pthread_mutex_init(&system->launch.lock, NULL);
    pthread_cond_init(&system->launch.idle, NULL);
    char why[256];
    if (updlrm_emu_fault_plan_parse(getenv(UPDLRM_EMU_FAULTS_ENV), &system->faults, why, sizeof why)) {
        destroy_system(system);
        return fail(DPU_ERR_SYSTEM, "%s: %s", UPDLRM_EMU_FAULTS_ENV, why);
    }
    system->worker_env = copy_environment();
    if (!system->worker_env) {
        destroy_system(system);
        return fail(DPU_ERR_SYSTEM, "out of memory");
    }
    system->ranks = calloc(system->nr_ranks, sizeof *system->ranks);
    system->rank_pointers = calloc(system->nr_ranks, sizeof *system->rank_pointers);
    system->dpus = calloc(nr_dpus, sizeof *system->dpus);
    system->program_of = calloc(nr_dpus, sizeof *system->program_of);
    system->launch.dpus = calloc(nr_dpus, sizeof *system->launch.dpus);
    if (!system->ranks || !system->rank_pointers || !system->dpus || !system->program_of || !system->launch.dpus) {
        destroy_system(system);
        return fail(DPU_ERR_SYSTEM, "out of memory");
    }
    for (uint32_t r = 0; r < system->nr_ranks; r++) {
        struct dpu_rank_t *rank = &system->ranks[r];
        rank->system = system;
        rank->index = r;
        rank->dpus = &system->dpus[r * profile->dpus_per_rank];
        uint32_t remaining = nr_dpus - r * profile->dpus_per_rank;
        rank->nr_dpus = remaining < profile->dpus_per_rank ? remaining : profile->dpus_per_rank;
        system->rank_pointers[r] = rank;
    }
    for (uint32_t d = 0; d < nr_dpus; d++) {
        system->dpus[d].rank = &system->ranks[d / profile->dpus_per_rank];
        system->dpus[d].index = d;
    }
    system->shm.ctrl_size = (size_t)nr_dpus * EMU_DPU_BLOCK_SIZE;
    system->shm.mram_size = (size_t)nr_dpus * EMU_MRAM_SIZE;
    int ctrl = memfd_create("updlrm-emu-ctrl", MFD_CLOEXEC);
    int mram = memfd_create("updlrm-emu-mram", MFD_CLOEXEC);
    if (ctrl >= 0) {
        system->shm.ctrl_fd = high_cloexec(ctrl);
    }
    if (mram >= 0) {
        system->shm.mram_fd = high_cloexec(mram);
    }
    if (system->shm.ctrl_fd < 0 || system->shm.mram_fd < 0 ||
        ftruncate(system->shm.ctrl_fd, (off_t)system->shm.ctrl_size) ||
        ftruncate(system->shm.mram_fd, (off_t)system->shm.mram_size)) {
        int saved = errno;
        destroy_system(system);
        return fail(DPU_ERR_SYSTEM, "cannot create emulator shared memory: %s", strerror(saved));
    }
    system->shm.ctrl = mmap(NULL, system->shm.ctrl_size, PROT_READ | PROT_WRITE, MAP_SHARED, system->shm.ctrl_fd, 0);
    system->shm.mram =
        mmap(NULL, system->shm.mram_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, system->shm.mram_fd, 0);
    if (system->shm.ctrl == MAP_FAILED || system->shm.mram == MAP_FAILED) {
        int saved = errno;
        if (system->shm.ctrl == MAP_FAILED) {
            system->shm.ctrl = NULL;
        }
        if (system->shm.mram == MAP_FAILED) {
            system->shm.mram = NULL;
        }
        destroy_system(system);
        return fail(DPU_ERR_SYSTEM, "cannot map emulator shared memory (%u DPUs): %s", nr_dpus, strerror(saved));
    }
    for (uint32_t d = 0; d < nr_dpus; d++) {
        block_of(system, d)->state.fault_tasklet = -1;
    }
    set->kind = DPU_SET_RANKS;
    set->list.nr_ranks = system->nr_ranks;
    set->list.ranks = system->rank_pointers;
    return ok();
}

/* What dpu_alloc and dpu_alloc_ranks check before they size the machine. */
static dpu_error_t begin_alloc(const char *caller, const char *profile_text, const struct dpu_set_t *dpu_set,
                               struct profile *profile)
{
    if (!dpu_set) {
        return fail(DPU_ERR_INVALID_DPU_SET, "%s: NULL dpu_set", caller);
    }
    struct updlrm_emu_fault_plan *faults = NULL;
    char why[256];
    const char *rules = getenv(UPDLRM_EMU_FAULTS_ENV);
    if (updlrm_emu_fault_plan_parse(rules, &faults, why, sizeof why)) {
        return fail(DPU_ERR_INVALID_PROFILE, "%s: %s: %s", caller, UPDLRM_EMU_FAULTS_ENV, why);
    }
    bool refused = updlrm_emu_fault_plan_refuses_alloc(faults);
    updlrm_emu_fault_plan_free(faults);
    if (refused) {
        return fail(DPU_ERR_ALLOCATION, "%s: refused by the fault injection hook (%s=%s)", caller,
                    UPDLRM_EMU_FAULTS_ENV, rules);
    }
    return parse_profile(profile_text, profile);
}

EXPORT dpu_error_t dpu_alloc(uint32_t nr_dpus, const char *profile_text, struct dpu_set_t *dpu_set)
{
    struct profile profile;
    dpu_error_t status = begin_alloc("dpu_alloc", profile_text, dpu_set, &profile);
    if (status != DPU_OK) {
        return status;
    }
    uint64_t available = (uint64_t)profile.nr_ranks_available * profile.dpus_per_rank;
    if (nr_dpus == DPU_ALLOCATE_ALL) {
        nr_dpus = (uint32_t)available;
    }
    if (nr_dpus == 0) {
        return fail(DPU_ERR_ALLOCATION, "dpu_alloc: cannot allocate 0 DPUs");
    }
    if (nr_dpus > available) {
        return fail(DPU_ERR_ALLOCATION,
                    "dpu_alloc: %u DPUs requested but the emulated machine has %u ranks x %u DPUs = %llu "
                    "(set nrRanks=N in the profile or UPDLRM_EMU_NR_RANKS)",
                    nr_dpus, profile.nr_ranks_available, profile.dpus_per_rank, (unsigned long long)available);
    }
    return create_system(nr_dpus, &profile, dpu_set);
}

EXPORT dpu_error_t dpu_alloc_ranks(uint32_t nr_ranks, const char *profile_text, struct dpu_set_t *dpu_set)
{
    struct profile profile;
    dpu_error_t status = begin_alloc("dpu_alloc_ranks", profile_text, dpu_set, &profile);
    if (status != DPU_OK) {
        return status;
    }
    if (nr_ranks == DPU_ALLOCATE_ALL) {
        nr_ranks = profile.nr_ranks_available;
    }
    if (nr_ranks == 0 || nr_ranks > profile.nr_ranks_available) {
        return fail(DPU_ERR_ALLOCATION, "dpu_alloc_ranks: %u ranks requested, %u available", nr_ranks,
                    profile.nr_ranks_available);
    }
    return create_system(nr_ranks * profile.dpus_per_rank, &profile, dpu_set);
}


static void destroy_system(struct emu_system *system)
{
    for (struct dpu_program_t *p = system->programs, *next; p; p = next) {
        next = p->next;
        free_program(p);
    }
    if (system->shm.ctrl) {
        munmap(system->shm.ctrl, system->shm.ctrl_size);
    }
    if (system->shm.mram) {
        munmap(system->shm.mram, system->shm.mram_size);
    }
    if (system->shm.ctrl_fd >= 0) {
        close(system->shm.ctrl_fd);
    }
    if (system->shm.mram_fd >= 0) {
        close(system->shm.mram_fd);
    }
    pthread_mutex_destroy(&system->launch.lock);
    pthread_cond_destroy(&system->launch.idle);
    free(system->ranks);
    free(system->rank_pointers);
    free(system->dpus);
    free(system->program_of);
    free(system->launch.dpus);
    updlrm_emu_fault_plan_free(system->faults);
    free_environment(system->worker_env);
    free(system);
}

EXPORT dpu_error_t dpu_free(struct dpu_set_t dpu_set)
{
    struct emu_system *system = NULL;
    if (check_set(dpu_set, &system) != DPU_OK) {
        return DPU_ERR_INVALID_DPU_SET;
    }
    if (dpu_set.kind != DPU_SET_RANKS || dpu_set.list.ranks != system->rank_pointers) {
        return fail(DPU_ERR_INVALID_DPU_SET, "dpu_free: the set was not returned by dpu_alloc");
    }
    enter(system);
    leave(system);
    destroy_system(system);
    return ok();
}

EXPORT dpu_error_t dpu_get_nr_ranks(struct dpu_set_t dpu_set, uint32_t *nr_ranks)
{
    struct emu_system *system = NULL;
    if (check_set(dpu_set, &system) != DPU_OK) {
        return DPU_ERR_INVALID_DPU_SET;
    }
    *nr_ranks = dpu_set.kind == DPU_SET_DPU ? 1 : dpu_set.list.nr_ranks;
    return ok();
}

EXPORT dpu_error_t dpu_get_nr_dpus(struct dpu_set_t dpu_set, uint32_t *nr_dpus)
{
    struct emu_system *system = NULL;
    if (check_set(dpu_set, &system) != DPU_OK) {
        return DPU_ERR_INVALID_DPU_SET;
    }
    *nr_dpus = count_dpus(dpu_set);
    return ok();
}
