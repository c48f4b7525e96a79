/* updlrm emulator DPU runtime (dpurt.h): the worker process: maps the shared memory,
 * receives launches from the host library and runs each DPU of them.
 */
#include "dpurt.h"
#include "emu_io.h"

struct dpurt_state rt;
user_main_t user_main;

/* Called by the start file the compiler driver links into every program. */
EXPORT void __updlrm_register_main(user_main_t main_function)
{
    user_main = main_function;
}

/* ---- helpers ------------------------------------------------------------ */

/* Copies without memcpy and without instrumentation: under AddressSanitizer
 * the redzones between the globals of the WRAM span are poisoned, yet the
 * whole span is the DPU's state. */
__attribute__((optimize("no-tree-loop-distribute-patterns"), no_sanitize_address)) static void
raw_copy(void *dst, const void *src, size_t size)
{
    uint8_t *d = dst;
    const uint8_t *s = src;
    while (size >= 8) {
        uint64_t word;
        __builtin_memcpy(&word, s, 8);
        __builtin_memcpy(d, &word, 8);
        d += 8;
        s += 8;
        size -= 8;
    }
    while (size--) {
        *d++ = *s++;
    }
}

void die(const char *what)
{
    char message[256];
    int length = snprintf(message, sizeof message, "updlrm emulator worker: %s: %s\n", what, strerror(errno));
    if (length > 0 && write(STDERR_FILENO, message, (size_t)length) < 0) {
        _exit(3);
    }
    _exit(3);
}

/* ---- running a DPU ------------------------------------------------------ */

static void map_mram(uint32_t dpu)
{
    if (rt.mem.resident_mram_dpu == dpu) {
        return;
    }
    void *window = mmap((void *)(uintptr_t)EMU_MRAM_BASE, EMU_MRAM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                        EMU_WORKER_MRAM_FD, (off_t)dpu * EMU_MRAM_SIZE);
    if (window == MAP_FAILED) {
        die("map MRAM window");
    }
    rt.mem.resident_mram_dpu = dpu;
}

static void run_dpu(uint32_t dpu)
{
    rt.block = (struct emu_dpu_block *)(rt.mem.ctrl + (size_t)dpu * EMU_DPU_BLOCK_SIZE);
    struct emu_dpu_state *s = state();
    s->current_tasklet = 0;
    s->fault_kind = EMU_FAULT_NONE;
    s->fault_tasklet = -1;
    s->fault_msg[0] = 0;
    s->fault_site = 0;
    s->nr_dma_warnings = 0;
    s->log_write_pos = 0;
    updlrm_emu_fault_begin(&s->inject);
    s->status = EMU_DPU_RUNNING;
    s->dpu_counters.launches++;
    uint64_t start_cycles = s->dpu_cycles;

    map_mram(dpu);
    rt.mem.mram = rt.mem.mram_all + (size_t)dpu * EMU_MRAM_SIZE;
    raw_copy((void *)(uintptr_t)rt.layout.wram_span_start, rt.block->image, rt.layout.wram_span_size);
    raw_copy(rt.mem.heap, rt.block->image + rt.layout.heap_offset, s->heap_used);
    /* boot releases every atomic bit, as the SDK's crt0 does */
    uint8_t *atomic = (uint8_t *)(uintptr_t)rt.layout.atomic_start;
    for (uint64_t i = 0; i < rt.layout.atomic_size; i++) {
        atomic[i] = 0;
    }

    run_tasklets();

    raw_copy(rt.block->image, (void *)(uintptr_t)rt.layout.wram_span_start, rt.layout.wram_span_size);
    raw_copy(rt.block->image + rt.layout.heap_offset, rt.mem.heap, s->heap_used);
    s->dpu_counters.last_launch_cycles = s->dpu_cycles - start_cycles;
    if (rt.sched.faulted) {
        s->dpu_counters.faults++;
    }
    __atomic_store_n(&s->status, rt.sched.faulted ? EMU_DPU_FAULT : EMU_DPU_DONE, __ATOMIC_RELEASE);
}

/* Tasklet stacks and the heap must sit below 4 GiB so that DPU code may
 * keep their addresses in 32-bit integers, as it does on a DPU. */
static void allocate_low_region(void)
{
    size_t per_stack = EMU_HOST_STACK_SIZE + EMU_GUARD_SIZE;
    size_t size = EMU_MAX_TASKLETS * per_stack + 2 * EMU_WRAM_SIZE;
    for (uintptr_t hint = 0x20000000u; hint + size < 0xF0000000u; hint += 0x01000000u) {
        void *p =
            mmap((void *)hint, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (p == MAP_FAILED) {
            continue;
        }
        if (p != (void *)hint) {
            munmap(p, size);
            continue;
        }
        rt.mem.low_region = p;
        break;
    }
    if (!rt.mem.low_region) {
        die("reserve low memory for tasklet stacks");
    }
    for (uint32_t id = 0; id < EMU_MAX_TASKLETS; id++) {
        uint8_t *base = rt.mem.low_region + id * per_stack;
        if (mprotect(base, EMU_GUARD_SIZE, PROT_NONE)) {
            die("stack guard page");
        }
        rt.sched.tasklets[id].stack_lo = base + EMU_GUARD_SIZE;
        rt.sched.tasklets[id].stack_hi = base + per_stack;
    }
    rt.mem.heap = rt.mem.low_region + EMU_MAX_TASKLETS * per_stack;
}

static int worker_loop(void)
{
    struct stat st;
    if (fstat(EMU_WORKER_CTRL_FD, &st)) {
        die("stat control memory");
    }
    rt.mem.ctrl_size = (size_t)st.st_size;
    rt.mem.ctrl = mmap(NULL, rt.mem.ctrl_size, PROT_READ | PROT_WRITE, MAP_SHARED, EMU_WORKER_CTRL_FD, 0);
    if (rt.mem.ctrl == MAP_FAILED) {
        die("map control memory");
    }
    if (fstat(EMU_WORKER_MRAM_FD, &st)) {
        die("stat MRAM");
    }
    rt.mem.mram_all =
        mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, EMU_WORKER_MRAM_FD, 0);
    if (rt.mem.mram_all == MAP_FAILED) {
        die("map MRAM");
    }
    allocate_low_region();
    rt.mem.resident_mram_dpu = -1;
    rt.sched.asan = __sanitizer_start_switch_fiber != NULL;

    uint32_t *dpus = NULL;
    uint32_t capacity = 0;
    for (;;) {
        struct emu_launch_msg msg;
        if (!emu_io_full(EMU_WORKER_CMD_FD, &msg, sizeof msg, EMU_IO_READ)) {
            break; /* host closed the socket: the DPU set was freed */
        }
        if (msg.magic != EMU_LAUNCH_MAGIC || msg.layout.protocol_version != EMU_PROTOCOL_VERSION ||
            msg.layout.nr_tasklets == 0 || msg.layout.nr_tasklets > EMU_MAX_TASKLETS) {
            errno = EPROTO;
            die("bad launch message");
        }
        if (msg.nr_dpus > capacity) {
            capacity = msg.nr_dpus;
            dpus = realloc(dpus, capacity * sizeof *dpus);
            if (!dpus) {
                die("allocate DPU list");
            }
        }
        if (!emu_io_full(EMU_WORKER_CMD_FD, dpus, msg.nr_dpus * sizeof *dpus, EMU_IO_READ)) {
            break;
        }
        rt.layout = msg.layout;
        rt.sched.nr_tasklets = msg.layout.nr_tasklets;
        for (uint32_t i = 0; i < msg.nr_dpus; i++) {
            if ((size_t)(dpus[i] + 1) * EMU_DPU_BLOCK_SIZE > rt.mem.ctrl_size) {
                errno = ERANGE;
                die("DPU index out of range");
            }
            run_dpu(dpus[i]);
        }
        struct emu_launch_reply reply = {EMU_LAUNCH_MAGIC, msg.nr_dpus};
        if (!emu_io_full(EMU_WORKER_REPLY_FD, &reply, sizeof reply, EMU_IO_WRITE)) {
            die("reply to host");
        }
    }
    free(dpus);
    return 0;
}

EXPORT int main(int argc, char **argv)
{
    (void)argc;
    if (!getenv(EMU_WORKER_ENV)) {
        static const char usage[] = "This is a DPU program built for the updlrm emulator; load it from a host "
                                    "program with dpu_load(), or run it with `updlrm emu run`.\n";
        if (write(STDERR_FILENO, usage, sizeof usage - 1) < 0) {
            return 2;
        }
        return 2;
    }
    (void)argv;
    if (!user_main) {
        errno = ENOENT;
        die("no DPU main registered (program not built by the updlrm compiler driver)");
    }
    /* a crashing DPU program should not leave core files behind */
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    return worker_loop();
}
