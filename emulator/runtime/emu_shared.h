/* Layout of the memory shared between the host library (libupdlrm_dpu.so)
 * and the worker processes that run DPU programs (libupdlrm_dpurt.so).
 *
 * Two memfds exist per allocated DPU set:
 *   - the MRAM file: DPU d owns bytes [d * EMU_MRAM_SIZE, (d + 1) * EMU_MRAM_SIZE);
 *     sparse, so only touched pages cost memory;
 *   - the control file: DPU d owns the block at d * EMU_DPU_BLOCK_SIZE, laid out
 *     as struct emu_dpu_block (state + counters, WRAM image, log ring).
 * Both sides include this header, so a change here is a protocol change:
 * bump EMU_PROTOCOL_VERSION.
 */
#ifndef UPDLRM_EMU_SHARED_H
#define UPDLRM_EMU_SHARED_H

#include <stdint.h>
#include <stdio.h>

#define EMU_PROTOCOL_VERSION 6u

/* Address of MRAM as seen by DPU code: the SDK's host library classifies a
 * symbol as MRAM when its address has this bit (MRAM_MASK 0x08000000 in
 * backends/api/src/api/dpu_memory.c of the UPMEM SDK 2021.3). */
#define EMU_MRAM_BASE 0x08000000u
/* 64 MiB MRAM bank per DPU (UPMEM SDK documentation, "DPU chip characteristics"). */
#define EMU_MRAM_SIZE (64u << 20)
/* WRAM of a v1A DPU: DPU_WRAM_SIZE_V1A = 65536 in upmem/llvm-project
 * clang/lib/Driver/ToolChains/DPUCharacteristics.h. */
#define EMU_WRAM_SIZE 65536u
/* DPU_NR_THREADS_V1A = 24 (same file). */
#define EMU_MAX_TASKLETS 24u
/* 64 DPUs per rank (8 chips x 8 DPUs; UPMEM SDK documentation). */
#define EMU_DPUS_PER_RANK 64u

/* The WRAM image holds the program's .data+.bss span followed by the
 * mem_alloc heap.  Only EMU_WRAM_SIZE bytes of it can be in use (checked
 * at load), but x86-64 padding between sections can make the span a little
 * larger than the DPU's, hence the slack. */
#define EMU_IMAGE_SIZE     (2u * EMU_WRAM_SIZE)
#define EMU_LOG_SIZE       (64u << 10)
#define EMU_FAULT_MSG_SIZE 480u

enum emu_dpu_status {
    EMU_DPU_IDLE = 0,
    EMU_DPU_QUEUED = 1,
    EMU_DPU_RUNNING = 2,
    EMU_DPU_DONE = 3,
    EMU_DPU_FAULT = 4,
};

/* Why a DPU faulted; the host maps these to dpu_error_t and messages. */
enum emu_fault_kind {
    EMU_FAULT_NONE = 0,
    EMU_FAULT_DMA,           /* illegal mram_read / mram_write */
    EMU_FAULT_WRAM_OVERFLOW, /* mem_alloc beyond the WRAM heap */
    EMU_FAULT_HALT,          /* halt() */
    EMU_FAULT_ASSERT,        /* assert() in DPU code */
    EMU_FAULT_DEADLOCK,      /* every unfinished tasklet is blocked */
    EMU_FAULT_CRASH,         /* the worker process died (signal / exit) */
    EMU_FAULT_TIMEOUT,       /* the launch exceeded the configured timeout */
    EMU_FAULT_SYNC,          /* misuse of a synchronisation primitive */
    EMU_FAULT_INJECTED,      /* fault injection hook (fault_inject.h) */
};

/* What the fault injection hook (fault_inject.h) armed for a DPU's launch:
 * written by the host before each launch, read by the worker. */
enum emu_fault_inject_kind { EMU_INJECT_NONE = 0, EMU_INJECT_FAULT, EMU_INJECT_KILL, EMU_INJECT_HANG };
struct emu_fault_inject {
    uint32_t kind;       /* enum emu_fault_inject_kind */
    int32_t tasklet;     /* -1: the first tasklet that gets there */
    uint32_t dma;        /* at this MRAM DMA of the launch (from 1); 0: when the tasklet starts */
    uint32_t rule;       /* index of the rule (from 1), for the message */
    uint32_t no_timeout; /* a hang armed without a launch timeout: faults instead */
};

/* How DMAs treat what the SDK forbids but the DPU's DMA engine accepts
 * (UPDLRM_EMU_DMA): by default they are decoded as the DPU does and each
 * program site is reported once as a warning; strict faults; hardware
 * decodes silently. */
enum emu_dma_mode {
    EMU_DMA_DEFAULT = 0,
    EMU_DMA_HARDWARE = 1,
    EMU_DMA_STRICT = 2,
};

/* The DMA rules the DPU relaxes by decoding the address (its DMA engine
 * moves whole 8-byte words and sees MRAM modulo its 64 MiB bank). */
enum emu_dma_relaxation {
    EMU_DMA_MRAM_UNALIGNED = 1,
    EMU_DMA_WRAM_UNALIGNED = 2,
    EMU_DMA_MRAM_OUTSIDE = 3,
};

/* One relaxed DMA, recorded by the worker (first time per site) for the
 * host to report with the source line of `site`. */
struct emu_dma_warning {
    uint64_t site;    /* return address into the DPU program */
    uint64_t address; /* as the program gave it */
    uint64_t decoded; /* as the DPU uses it */
    uint32_t kind;    /* enum emu_dma_relaxation */
    int32_t tasklet;
    uint32_t size;
    uint32_t is_write;
};
#define EMU_MAX_DMA_WARNINGS 8u

/* The text of a relaxed DMA rule, shared by the worker's strict-mode fault
 * and the host's default-mode warning. */
static inline int emu_describe_dma_relaxation(char *out, size_t size, const struct emu_dma_warning *w)
{
    const char *op = w->is_write ? "mram_write" : "mram_read";
    unsigned long long address = (unsigned long long)w->address, decoded = (unsigned long long)w->decoded;
    switch (w->kind) {
    case EMU_DMA_MRAM_UNALIGNED:
        return snprintf(out, size,
                        "%s: MRAM address 0x%llx is not 8-byte aligned; the DPU drops the low 3 bits "
                        "and uses 0x%llx",
                        op, address, decoded);
    case EMU_DMA_WRAM_UNALIGNED:
        return snprintf(out, size,
                        "%s: WRAM address 0x%llx is not 8-byte aligned; the DPU drops the low 3 bits "
                        "and uses 0x%llx",
                        op, address, decoded);
    default:
        return snprintf(out, size,
                        "%s: MRAM address 0x%llx is outside MRAM [0x8000000, 0xc000000); the DPU "
                        "decodes it modulo its 64 MiB bank as 0x%llx",
                        op, address, decoded);
    }
}

/* Per-tasklet counters; all monotonically increasing until reset. */
struct emu_tasklet_counters {
    uint64_t mram_read_count; /* MRAM->WRAM DMAs */
    uint64_t mram_read_bytes;
    uint64_t mram_write_count; /* WRAM->MRAM DMAs */
    uint64_t mram_write_bytes;
    uint64_t barrier_waits;
    uint64_t mutex_waits; /* mutex_lock calls that had to block */
    uint64_t sem_waits;   /* sem_take calls that had to block */
    uint64_t handshake_waits;
    uint64_t switches; /* times the scheduler resumed this tasklet */
    uint64_t runtime_calls;
    uint64_t cycles; /* modelled cycles charged to this tasklet */
};
#define EMU_TASKLET_COUNTER_FIELDS 11u

struct emu_dpu_counters {
    uint64_t launches;
    uint64_t host_to_dpu_bytes;
    uint64_t dpu_to_host_bytes;
    uint64_t faults;
    uint64_t last_launch_cycles; /* modelled cycles of the last launch */
};
#define EMU_DPU_COUNTER_FIELDS 5u

/* State of one DPU.  Written by the host while the DPU is idle, by the
 * worker while it runs it. */
struct emu_dpu_state {
    volatile uint32_t status;          /* enum emu_dpu_status */
    volatile uint32_t current_tasklet; /* tasklet the worker is executing */
    uint32_t fault_kind;               /* enum emu_fault_kind */
    int32_t fault_tasklet;             /* -1 when not tasklet specific */
    uint32_t heap_used;                /* mem_alloc'ed bytes, persists across boots */
    uint32_t log_write_pos;            /* total bytes ever written to the log */
    uint64_t perfcounter_base;         /* cycle value at perfcounter_config(reset) */
    uint64_t dpu_cycles;               /* modelled DPU cycles since load */
    uint32_t perfcounter_mode;
    uint32_t buddy_offset; /* 1 + heap offset of the buddy allocator, 0: none */
    char fault_msg[EMU_FAULT_MSG_SIZE];
    uint64_t fault_site;      /* return address of the faulting runtime call, 0: none */
    uint32_t nr_dma_warnings; /* relaxed DMAs recorded during the last launch */
    uint32_t pad0;
    struct emu_dma_warning dma_warnings[EMU_MAX_DMA_WARNINGS];
    struct emu_dpu_counters dpu_counters;
    struct emu_tasklet_counters tasklet[EMU_MAX_TASKLETS];
    struct emu_fault_inject inject; /* armed for the current launch */
};

struct emu_dpu_block {
    struct emu_dpu_state state;
    uint8_t pad[8192 - sizeof(struct emu_dpu_state) % 8192];
    uint8_t image[EMU_IMAGE_SIZE]; /* WRAM .data+.bss span, then the heap */
    char log[EMU_LOG_SIZE];        /* ring buffer written by printf */
};
#define EMU_DPU_BLOCK_SIZE (sizeof(struct emu_dpu_block))

/* What a worker needs to know about the program it runs; sent with every
 * launch so that a respawned worker needs no other state. */
struct emu_program_layout {
    uint32_t protocol_version;
    uint32_t nr_tasklets;
    uint64_t wram_span_start; /* vaddr of the first byte of .data */
    uint64_t wram_span_size;  /* .data..end of .bss */
    uint64_t rodata_start;
    uint64_t rodata_size;
    uint64_t atomic_start; /* .atomic: released (zeroed) at every boot */
    uint64_t atomic_size;
    uint32_t heap_offset;                  /* where the heap sits in the image */
    uint32_t heap_capacity;                /* WRAM left for mem_alloc */
    uint32_t dma_mode;                     /* enum emu_dma_mode */
    uint32_t stack_size[EMU_MAX_TASKLETS]; /* logical DPU stack sizes */
};

/* One launch request from host to worker, followed by nr_dpus uint32 ids. */
struct emu_launch_msg {
    uint32_t magic;
    uint32_t nr_dpus;
    struct emu_program_layout layout;
};
#define EMU_LAUNCH_MAGIC 0x55504d45u /* "UPME" */

/* Worker reply after finishing the whole list. */
struct emu_launch_reply {
    uint32_t magic;
    uint32_t nr_done;
};

/* Section the compiler driver adds to every emulator DPU executable. */
struct emu_program_config {
    uint32_t magic;
    uint32_t protocol_version;
    uint32_t nr_tasklets;
    uint32_t stack_size[EMU_MAX_TASKLETS];
};
#define EMU_CONFIG_MAGIC   0x55444c52u /* "UDLR" */
#define EMU_CONFIG_SECTION ".updlrm_config"

/* File descriptors a worker finds open at exec. */
#define EMU_WORKER_CTRL_FD 3
#define EMU_WORKER_MRAM_FD 4
/* one stream socket carries launch requests in and replies out */
#define EMU_WORKER_CMD_FD   5
#define EMU_WORKER_REPLY_FD 5
#define EMU_WORKER_ENV      "UPDLRM_EMU_WORKER"

/* DMA cost model, PrIM (Gomez-Luna et al., "Benchmarking a New Paradigm: An
 * Experimental Analysis of a Real Processing-in-Memory Architecture",
 * IEEE Access 2022, Sec. 3.2.1, Fig. 5): latency = alpha + beta * size with
 * alpha ~ 77 cycles (mram_read), ~ 61 cycles (mram_write), beta = 0.5 cycle/B. */
#define EMU_DMA_READ_ALPHA  77u
#define EMU_DMA_WRITE_ALPHA 61u
#define EMU_DMA_BETA_NUM    1u
#define EMU_DMA_BETA_DEN    2u
/* Flat charge for every other runtime call (call + a few instructions, each
 * >= 11 cycles apart for one tasklet: PrIM Sec. 2.2, pipeline revolver). */
#define EMU_RUNTIME_CALL_CYCLES 22u

#endif /* UPDLRM_EMU_SHARED_H */
