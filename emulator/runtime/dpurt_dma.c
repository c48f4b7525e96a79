/* updlrm emulator DPU runtime (dpurt.h): MRAM DMA (hot: mram_read/mram_write), the
 * address checks and the DPU's address decoding, MRAM atomics, the
 * sequential reader.
 */
#include "dpurt.h"

/* ---- DMA ---------------------------------------------------------------- */

static bool in_range(uintptr_t address, size_t size, uintptr_t start, size_t length)
{
    return address >= start && size <= length && address - start <= length - size;
}

/* WRAM on the emulator: the program's .data/.bss span, its .rodata (readable
 * only), the mem_alloc heap and the calling tasklet's stack. */
static bool is_wram(uintptr_t address, size_t size, bool for_write)
{
    struct tasklet *t = &rt.sched.tasklets[rt.sched.current];
    return in_range(address, size, rt.layout.wram_span_start, rt.layout.wram_span_size) ||
           in_range(address, size, (uintptr_t)rt.mem.heap, state()->heap_used) ||
           in_range(address, size, (uintptr_t)t->stack_lo, (size_t)(t->stack_hi - t->stack_lo)) ||
           (!for_write && in_range(address, size, rt.layout.rodata_start, rt.layout.rodata_size));
}

static void check_dma_slow(const char *what, uintptr_t *mram, uintptr_t *wram, unsigned int size,
                           bool wram_is_destination);

/* The common legal case in one predictable branch; the diagnosis of an
 * illegal DMA (or the hardware's alignment, when asked for) is left to the
 * slow path, which may adjust the addresses. */
static inline void check_dma(const char *what, uintptr_t *mram, uintptr_t *wram, unsigned int size,
                             bool wram_is_destination)
{
    bool ok = size - 8u <= 2040u && ((size | *mram | *wram) & 7u) == 0 &&
              *mram - EMU_MRAM_BASE <= EMU_MRAM_SIZE - size &&
              (in_range(*wram, size, rt.layout.wram_span_start, rt.layout.wram_span_size) ||
               in_range(*wram, size, (uintptr_t)rt.mem.heap, state()->heap_used));
    if (__builtin_expect(!ok, 0)) {
        check_dma_slow(what, mram, wram, size, wram_is_destination);
    }
}

/* A DMA the SDK forbids but the DPU's DMA engine serves by decoding the
 * address: a fault in strict mode; otherwise decoded, and in the default mode
 * recorded once per program site for the host to report with its source line. */
static void relaxed_dma(bool is_write, enum emu_dma_relaxation kind, uintptr_t address, uintptr_t decoded,
                        unsigned int size)
{
    struct emu_dma_warning w = {rt.dma.site, address, decoded, kind, (int32_t)rt.sched.current, size, is_write};
    if (rt.layout.dma_mode == EMU_DMA_STRICT) {
        char text[EMU_FAULT_MSG_SIZE];
        emu_describe_dma_relaxation(text, sizeof text, &w);
        fault(EMU_FAULT_DMA, true, "%s (UPDLRM_EMU_DMA=strict makes this a fault)", text);
    }
    if (rt.layout.dma_mode != EMU_DMA_DEFAULT) {
        return;
    }
    for (uint32_t i = 0; i < rt.dma.nr_warned_sites; i++) {
        if (rt.dma.warned[i].site == rt.dma.site && rt.dma.warned[i].kind == kind) {
            return;
        }
    }
    if (rt.dma.nr_warned_sites < sizeof rt.dma.warned / sizeof rt.dma.warned[0]) {
        rt.dma.warned[rt.dma.nr_warned_sites].site = rt.dma.site;
        rt.dma.warned[rt.dma.nr_warned_sites].kind = kind;
        rt.dma.nr_warned_sites++;
    }
    struct emu_dpu_state *s = state();
    if (s->nr_dma_warnings < EMU_MAX_DMA_WARNINGS) {
        s->dma_warnings[s->nr_dma_warnings++] = w;
    }
}

static void check_dma_slow(const char *what, uintptr_t *mram_address, uintptr_t *wram_address, unsigned int size,
                           bool wram_is_destination)
{
    /* mram.h of the SDK rejects constant sizes outside these rules at build
     * time and tells the compiler to assume them (__builtin_assume), so what
     * the DPU does with another size is undefined: always a fault here. */
    if (size < 8 || size > 2048 || size % 8) {
        fault(EMU_FAULT_DMA, true, "%s: size %u bytes is invalid (must be a multiple of 8 in [8, 2048])", what, size);
    }
    /* The DPU's DMA engine moves whole 8-byte words, ignoring the low three
     * address bits, and decodes an MRAM address modulo the 64 MiB bank; some
     * programs rely on that (bitmaps indexed by byte offset, MRAM offsets
     * used as addresses). */
    bool is_write = !wram_is_destination;
    uintptr_t mram = *mram_address, wram = *wram_address;
    if (mram % 8) {
        relaxed_dma(is_write, EMU_DMA_MRAM_UNALIGNED, mram, mram & ~(uintptr_t)7, size);
        mram &= ~(uintptr_t)7;
    }
    if (!in_range(mram, 8, EMU_MRAM_BASE, EMU_MRAM_SIZE)) {
        uintptr_t decoded = EMU_MRAM_BASE + (mram & (EMU_MRAM_SIZE - 1));
        relaxed_dma(is_write, EMU_DMA_MRAM_OUTSIDE, *mram_address, decoded, size);
        mram = decoded;
    }
    if (wram % 8) {
        relaxed_dma(is_write, EMU_DMA_WRAM_UNALIGNED, wram, wram & ~(uintptr_t)7, size);
        wram &= ~(uintptr_t)7;
    }
    /* a range running past the end of MRAM or WRAM is a DMA fault on the DPU */
    if (!in_range(mram, size, EMU_MRAM_BASE, EMU_MRAM_SIZE)) {
        fault(EMU_FAULT_DMA, true, "%s: MRAM range [0x%lx, +%u) runs past the end of MRAM [0x%x, 0x%x)", what,
              (unsigned long)mram, size, EMU_MRAM_BASE, EMU_MRAM_BASE + EMU_MRAM_SIZE);
    }
    if (!is_wram(wram, size, wram_is_destination)) {
        fault(EMU_FAULT_DMA, true, "%s: WRAM range [0x%lx, +%u) is outside WRAM", what, (unsigned long)wram, size);
    }
    *mram_address = mram;
    *wram_address = wram;
}

/* DMAs use the persistent mapping of all MRAMs rather than the window at the
 * DPU's MRAM address: the window is remapped for every DPU a worker runs and
 * would page-fault afresh each time, the persistent mapping keeps its page
 * tables across DPUs and launches. */
static inline uint8_t *mram_host(uintptr_t mram)
{
    return rt.mem.mram + (mram - EMU_MRAM_BASE);
}

/* A DPU tasklet waits for its DMA (mram_write: 61 + 0.5 cycles/byte, PrIM,
 * Gomez-Luna et al., IEEE Access 2022, Sec. 3.2.1) while the pipeline runs
 * the other tasklets.  Programs written for hardware rely on that: e.g.
 * after a barrier every tasklet computes its output address before the
 * last one, done with its mram_write, bumps the shared offset.  Handing the
 * turn to the next runnable tasklet after each MRAM write reproduces that
 * order, deterministically (round robin in id order).  Reads yield too, after
 * prefetching their source: the other tasklets then issue their own DMAs
 * while this one's lines arrive, so a read-heavy kernel has as many row
 * fetches in flight as it has tasklets, as on the DPU, instead of paying one
 * cache miss at a time (embedding gather on 64 DPUs x 16 tasklets: 35 -> 81 M
 * rows/s; engine kernel 40 -> 27 ms per batch). */
static inline void dma_yield(void)
{
    if (rt.sched.nr_tasklets > 1) {
        schedule();
    }
}

static void dma_read(const void *from, void *to, unsigned int nb_of_bytes)
{
    uintptr_t mram = (uintptr_t)from, wram = (uintptr_t)to;
    check_dma("mram_read", &mram, &wram, nb_of_bytes, true);
    if (__builtin_expect(updlrm_emu_fault_armed, 0)) {
        injected(updlrm_emu_fault_at_dma(rt.sched.current));
    }
    const uint8_t *source = mram_host(mram);
    /* MRAM DMAs are only 8-byte aligned, so a transfer may straddle one more
     * cache line than its size suggests (a 256-byte row at offset 24 touches
     * five lines): prefetch every line from the first byte's to the last's. */
    const uint8_t *last = source + nb_of_bytes - 1;
    for (const uint8_t *line = (const uint8_t *)((uintptr_t)source & ~(uintptr_t)63); line <= last; line += 64) {
        __builtin_prefetch(line);
    }
    dma_yield();
    memcpy((void *)wram, source, nb_of_bytes);
    struct emu_tasklet_counters *c = counters();
    c->mram_read_count++;
    c->mram_read_bytes += nb_of_bytes;
    charge(EMU_DMA_READ_ALPHA + nb_of_bytes * EMU_DMA_BETA_NUM / EMU_DMA_BETA_DEN);
}

static void dma_write(const void *from, void *to, unsigned int nb_of_bytes)
{
    uintptr_t mram = (uintptr_t)to, wram = (uintptr_t)from;
    check_dma("mram_write", &mram, &wram, nb_of_bytes, false);
    if (__builtin_expect(updlrm_emu_fault_armed, 0)) {
        injected(updlrm_emu_fault_at_dma(rt.sched.current));
    }
    memcpy(mram_host(mram), (const void *)wram, nb_of_bytes);
    struct emu_tasklet_counters *c = counters();
    c->mram_write_count++;
    c->mram_write_bytes += nb_of_bytes;
    charge(EMU_DMA_WRITE_ALPHA + nb_of_bytes * EMU_DMA_BETA_NUM / EMU_DMA_BETA_DEN);
}

EXPORT void mram_read(const void *from, void *to, unsigned int nb_of_bytes)
{
    NOTE_SITE();
    dma_read(from, to, nb_of_bytes);
}

EXPORT void mram_write(const void *from, void *to, unsigned int nb_of_bytes)
{
    NOTE_SITE();
    dma_write(from, to, nb_of_bytes);
    dma_yield();
}

/* Splits an arbitrary aligned range into legal DMA transfers. */
static void dma_read_range(uintptr_t mram, uint8_t *wram, size_t size)
{
    uintptr_t site = rt.dma.site; /* other tasklets run during each chunk's DMA */
    while (size) {
        unsigned int chunk = size > 2048 ? 2048u : (unsigned int)size;
        rt.dma.site = site;
        dma_read((const void *)mram, wram, chunk);
        mram += chunk;
        wram += chunk;
        size -= chunk;
    }
}

static void dma_write_range(const uint8_t *wram, uintptr_t mram, size_t size)
{
    uintptr_t site = rt.dma.site;
    while (size) {
        unsigned int chunk = size > 2048 ? 2048u : (unsigned int)size;
        rt.dma.site = site;
        dma_write(wram, (void *)mram, chunk);
        mram += chunk;
        wram += chunk;
        size -= chunk;
    }
}

EXPORT void *mram_read_unaligned(const void *from, void *buffer, unsigned int nb_of_bytes)
{
    NOTE_SITE();
    uintptr_t start = (uintptr_t)from & ~(uintptr_t)7;
    uintptr_t end = ((uintptr_t)from + nb_of_bytes + 7) & ~(uintptr_t)7;
    if (nb_of_bytes == 0 || end - start > 2048) {
        fault(EMU_FAULT_DMA, true, "mram_read_unaligned: size %u bytes is invalid", nb_of_bytes);
    }
    dma_read_range(start, buffer, end - start);
    return (uint8_t *)buffer + ((uintptr_t)from - start);
}

EXPORT void mram_write_unaligned(const void *from, void *dest, unsigned int nb_of_bytes)
{
    NOTE_SITE();
    uintptr_t start = (uintptr_t)dest & ~(uintptr_t)7;
    uintptr_t end = ((uintptr_t)dest + nb_of_bytes + 7) & ~(uintptr_t)7;
    if (nb_of_bytes == 0 || end - start > 2048) {
        fault(EMU_FAULT_DMA, true, "mram_write_unaligned: size %u bytes is invalid", nb_of_bytes);
    }
    /* the DMA engine moves whole 8-byte words: source and destination must
     * share their alignment (SDK "Unaligned MRAM Accesses", fault 8) */
    if (((uintptr_t)from ^ (uintptr_t)dest) & 7) {
        fault(EMU_FAULT_DMA, true, "mram_write_unaligned: wrong alignment: WRAM %p and MRAM 0x%lx differ modulo 8",
              from, (unsigned long)(uintptr_t)dest);
    }
    /* the SDK stages the surrounding words through the tasklet's stack */
    uint64_t staging[2048 / 8];
    dma_read_range(start, (uint8_t *)staging, end - start);
    memcpy((uint8_t *)staging + ((uintptr_t)dest - start), from, nb_of_bytes);
    dma_write_range((const uint8_t *)staging, start, end - start);
    dma_yield();
}

/* The word is staged on the tasklet's stack, 8-aligned, like the SDK's
 * per-tasklet buffer; no yield can happen between the two DMAs. */
static uint64_t *atomic_word_begin(const char *what, uintptr_t dest, unsigned int alignment, uint64_t *word)
{
    if (dest % alignment) {
        fault(EMU_FAULT_DMA, true, "%s: MRAM address 0x%lx is not %u-byte aligned", what, (unsigned long)dest,
              alignment);
    }
    dma_read((const void *)(dest & ~(uintptr_t)7), word, 8);
    return word;
}

EXPORT void __updlrm_mram_update_int_atomic(void *dest, void (*update)(int *, void *), void *args)
{
    NOTE_SITE();
    uint64_t word;
    atomic_word_begin("mram_update_int_atomic", (uintptr_t)dest, 4, &word);
    update((int *)((uint8_t *)&word + ((uintptr_t)dest & 7)), args);
    dma_write(&word, (void *)((uintptr_t)dest & ~(uintptr_t)7), 8);
    dma_yield();
}

EXPORT void __updlrm_mram_update_byte_atomic(void *dest, void (*update)(uint8_t *, void *), void *args)
{
    NOTE_SITE();
    uint64_t word;
    atomic_word_begin("mram_update_byte_atomic", (uintptr_t)dest, 1, &word);
    update((uint8_t *)&word + ((uintptr_t)dest & 7), args);
    dma_write(&word, (void *)((uintptr_t)dest & ~(uintptr_t)7), 8);
    dma_yield();
}

EXPORT void __updlrm_mram_write_int_atomic(void *dest, int value)
{
    NOTE_SITE();
    uint64_t word;
    atomic_word_begin("mram_write_int_atomic", (uintptr_t)dest, 4, &word);
    memcpy((uint8_t *)&word + ((uintptr_t)dest & 7), &value, sizeof value);
    dma_write(&word, (void *)((uintptr_t)dest & ~(uintptr_t)7), 8);
    dma_yield();
}

EXPORT void __updlrm_mram_write_byte_atomic(void *dest, uint8_t value)
{
    NOTE_SITE();
    uint64_t word;
    atomic_word_begin("mram_write_byte_atomic", (uintptr_t)dest, 1, &word);
    ((uint8_t *)&word)[(uintptr_t)dest & 7] = value;
    dma_write(&word, (void *)((uintptr_t)dest & ~(uintptr_t)7), 8);
    dma_yield();
}

/* ---- sequential reader -------------------------------------------------- */

EXPORT seqreader_buffer_t __updlrm_seqread_alloc(uint32_t cache_size)
{
    if (cache_size < 32 || cache_size > 1024 || (cache_size & (cache_size - 1))) {
        fault(EMU_FAULT_SYNC, true, "seqread: SEQREAD_CACHE_SIZE %u must be 32, 64, ..., 1024", cache_size);
    }
    return (seqreader_buffer_t)mem_alloc(2u * cache_size);
}

static void seqread_fill(seqreader_t *reader)
{
    size_t size = 2u * reader->cache_size;
    uintptr_t limit = EMU_MRAM_BASE + EMU_MRAM_SIZE;
    if (reader->mram_addr + size > limit) {
        size = limit - reader->mram_addr;
    }
    dma_read_range(reader->mram_addr, (uint8_t *)reader->wram_cache, size);
}

static void *seqread_seek(void *mram_addr, seqreader_t *reader)
{
    uintptr_t address = (uintptr_t)mram_addr;
    reader->mram_addr = address & ~(uintptr_t)7;
    seqread_fill(reader);
    return (uint8_t *)reader->wram_cache + (address - reader->mram_addr);
}

EXPORT void *__updlrm_seqread_seek(void *mram_addr, seqreader_t *reader)
{
    NOTE_SITE();
    return seqread_seek(mram_addr, reader);
}

EXPORT void *__updlrm_seqread_init(seqreader_buffer_t cache, void *mram_addr, seqreader_t *reader, uint32_t cache_size)
{
    NOTE_SITE();
    reader->wram_cache = cache;
    reader->cache_size = cache_size;
    return seqread_seek(mram_addr, reader);
}

EXPORT void *__updlrm_seqread_get(void *ptr, uint32_t increment, seqreader_t *reader)
{
    if (increment > reader->cache_size) {
        fault(EMU_FAULT_SYNC, true, "seqread_get: increment %u exceeds the cache size %u", increment,
              reader->cache_size);
    }
    uintptr_t offset = (uintptr_t)ptr + increment - reader->wram_cache;
    if (offset < reader->cache_size) {
        return (uint8_t *)ptr + increment;
    }
    NOTE_SITE();
    return seqread_seek((void *)(reader->mram_addr + offset), reader);
}

EXPORT void *__updlrm_seqread_tell(void *ptr, seqreader_t *reader)
{
    return (void *)(reader->mram_addr + ((uintptr_t)ptr - reader->wram_cache));
}
