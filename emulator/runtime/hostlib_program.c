/* updlrm emulator host library (hostlib.h): Programs: ELF parsing of emulator DPU executables, their symbols, and
 * loading them onto DPUs (dpu_load and variants).
 */
#include "hostlib.h"

void free_program(struct dpu_program_t *program)
{
    stop_workers(program);
    for (size_t i = 0; i < program->nr_symbols; i++) {
        free(program->symbols[i].name);
    }
    free(program->symbols);
    free(program->image_template);
    free(program->rodata);
    free(program->mram_init);
    free(program->diag.reported);
    if (program->temporary_path) {
        unlink(program->temporary_path);
        free(program->temporary_path);
    }
    free(program->path);
    free(program);
}
/* ---- ELF loading -------------------------------------------------------- */

static int compare_symbols(const void *a, const void *b)
{
    const struct emu_symbol *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c) {
        return c;
    }
    return (int)y->global - (int)x->global; /* globals first */
}

const struct emu_symbol *find_symbol(const struct dpu_program_t *program, const char *name)
{
    size_t lo = 0, hi = program->nr_symbols;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(program->symbols[mid].name, name);
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (lo < program->nr_symbols && !strcmp(program->symbols[lo].name, name)) {
        return &program->symbols[lo];
    }
    return NULL;
}

#if defined(__x86_64__)
#define EMU_ELF_MACHINE EM_X86_64
#elif defined(__aarch64__)
#define EMU_ELF_MACHINE EM_AARCH64
#endif

static dpu_error_t parse_program(const char *path, struct dpu_program_t *program)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return fail(DPU_ERR_ELF_NO_SUCH_FILE, "cannot open DPU program '%s': %s", path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) || st.st_size < (off_t)sizeof(Elf64_Ehdr)) {
        close(fd);
        return fail(DPU_ERR_ELF_INVALID_FILE, "'%s' is not an ELF file", path);
    }
    size_t size = (size_t)st.st_size;
    uint8_t *file = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (file == MAP_FAILED) {
        return fail(DPU_ERR_SYSTEM, "cannot map '%s': %s", path, strerror(errno));
    }
    dpu_error_t status = DPU_OK;
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)file;
#define BAD(...)                                                                                                       \
    do {                                                                                                               \
        status = fail(DPU_ERR_ELF_INVALID_FILE, __VA_ARGS__);                                                          \
        goto out;                                                                                                      \
    } while (0)
    /* e_machine of the UPMEM SDK's DPU binaries (dpu-upmem-dpurte-clang emits
     * 32-bit little-endian ELF files for machine 245) */
    if (!memcmp(eh->e_ident, ELFMAG, SELFMAG) && eh->e_ident[EI_CLASS] == ELFCLASS32 &&
        ((const Elf32_Ehdr *)file)->e_machine == 245) {
        BAD("'%s' is a DPU binary built by the UPMEM SDK's compiler (32-bit ELF, machine EM_DPU): it runs on real "
            "DPUs or the SDK's simulator, not on the emulator. Build the DPU sources for the emulator instead: "
            "`updlrm emu build --dpu <sources>`, updlrm.emulator.compile_dpu_program, or the SDK's Makefile with "
            "`updlrm emu shims` on PATH",
            path);
    }
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) || eh->e_ident[EI_CLASS] != ELFCLASS64) {
        BAD("'%s' is not a 64-bit ELF file (DPU programs for the emulator are built with the updlrm compiler "
            "driver)",
            path);
    }
    if (eh->e_machine != EMU_ELF_MACHINE) {
        BAD("'%s' was built for another machine (e_machine %u); a program built by dpu-upmem-dpurte-clang for "
            "real DPUs cannot run on the emulator",
            path, eh->e_machine);
    }
    if (eh->e_type != ET_EXEC) {
        BAD("'%s' is not a non-PIE executable", path);
    }
    if (eh->e_shoff == 0 || eh->e_shentsize != sizeof(Elf64_Shdr) ||
        eh->e_shoff + (uint64_t)eh->e_shnum * sizeof(Elf64_Shdr) > size || eh->e_shstrndx >= eh->e_shnum) {
        BAD("'%s' has no valid section headers", path);
    }
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(file + eh->e_shoff);
    const Elf64_Shdr *shstr = &sh[eh->e_shstrndx];
    if (shstr->sh_offset + shstr->sh_size > size) {
        BAD("'%s': bad section name table", path);
    }
    const char *names = (const char *)file + shstr->sh_offset;
    const Elf64_Shdr *data = NULL, *bss = NULL, *rodata = NULL, *mram = NULL, *config = NULL, *symtab = NULL,
                     *atomic = NULL;
    int data_index = -1, bss_index = -1, rodata_index = -1, mram_index = -1, mram_noinit_index = -1, atomic_index = -1;
    for (int i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_name >= shstr->sh_size) {
            continue;
        }
        const char *name = names + sh[i].sh_name;
        if (!strcmp(name, ".data")) {
            data = &sh[i], data_index = i;
        } else if (!strcmp(name, ".bss")) {
            bss = &sh[i], bss_index = i;
        } else if (!strcmp(name, ".rodata")) {
            rodata = &sh[i], rodata_index = i;
        } else if (!strcmp(name, ".mram")) {
            mram = &sh[i], mram_index = i;
        } else if (!strcmp(name, ".mram.noinit")) {
            mram_noinit_index = i;
        } else if (!strcmp(name, EMU_CONFIG_SECTION)) {
            config = &sh[i];
        } else if (!strcmp(name, ".atomic")) {
            atomic = &sh[i], atomic_index = i;
        } else if (sh[i].sh_type == SHT_SYMTAB) {
            symtab = &sh[i];
        }
    }
    if (!config || config->sh_size < sizeof(struct emu_program_config) ||
        config->sh_offset + sizeof(struct emu_program_config) > size) {
        BAD("'%s' is not an updlrm emulator DPU program (no %s section); build it with "
            "updlrm.emulator.compile_dpu_program or `updlrm emu build`",
            path, EMU_CONFIG_SECTION);
    }
    struct emu_program_config cfg;
    memcpy(&cfg, file + config->sh_offset, sizeof cfg);
    if (cfg.magic != EMU_CONFIG_MAGIC || cfg.protocol_version != EMU_PROTOCOL_VERSION) {
        BAD("'%s' was built for another version of the updlrm emulator; rebuild it", path);
    }
    if (cfg.nr_tasklets > EMU_MAX_TASKLETS) {
        status = fail(DPU_ERR_TOO_MANY_TASKLETS, "'%s': NR_TASKLETS=%u but a DPU has %u hardware threads", path,
                      cfg.nr_tasklets, EMU_MAX_TASKLETS);
        goto out;
    }
    if (cfg.nr_tasklets == 0) {
        BAD("'%s': NR_TASKLETS=%u is out of range [1, %u]", path, cfg.nr_tasklets, EMU_MAX_TASKLETS);
    }
    if (!data || !bss || !symtab) {
        BAD("'%s' lacks .data, .bss or .symtab (was it stripped?)", path);
    }
    if (bss->sh_addr < data->sh_addr) {
        BAD("'%s': unexpected layout, .bss before .data", path);
    }

    struct emu_program_layout *layout = &program->layout;
    memset(layout, 0, sizeof *layout);
    layout->protocol_version = EMU_PROTOCOL_VERSION;
    layout->nr_tasklets = cfg.nr_tasklets;
    layout->wram_span_start = data->sh_addr;
    layout->wram_span_size = bss->sh_addr + bss->sh_size - data->sh_addr;
    if (atomic && atomic->sh_size) {
        if (atomic->sh_addr < layout->wram_span_start ||
            atomic->sh_addr + atomic->sh_size > layout->wram_span_start + layout->wram_span_size) {
            BAD("'%s': .atomic lies outside .data..bss", path);
        }
        layout->atomic_start = atomic->sh_addr;
        layout->atomic_size = atomic->sh_size;
    }
    layout->rodata_start = rodata ? rodata->sh_addr : 0;
    layout->rodata_size = rodata ? rodata->sh_size : 0;
    uint64_t stacks = 0;
    for (uint32_t t = 0; t < cfg.nr_tasklets; t++) {
        layout->stack_size[t] = cfg.stack_size[t];
        stacks += cfg.stack_size[t];
    }
    /* atomic bits live in the DPU's separate atomic register, not in WRAM */
    uint64_t globals = data->sh_size + bss->sh_size + (rodata ? rodata->sh_size : 0);
    if (globals + stacks > EMU_WRAM_SIZE) {
        BAD("'%s': WRAM overflow: globals %llu B (.data %llu + .bss %llu + .rodata %llu) + stacks %llu B "
            "(%u tasklets) = %llu B > %u B",
            path, (unsigned long long)globals, (unsigned long long)data->sh_size, (unsigned long long)bss->sh_size,
            (unsigned long long)(rodata ? rodata->sh_size : 0), (unsigned long long)stacks, cfg.nr_tasklets,
            (unsigned long long)(globals + stacks), EMU_WRAM_SIZE);
    }
    layout->heap_offset = (uint32_t)((layout->wram_span_size + 7) & ~7ull);
    layout->heap_capacity = (uint32_t)((EMU_WRAM_SIZE - globals - stacks) & ~7ull);
    if (layout->heap_offset + (uint64_t)layout->heap_capacity > EMU_IMAGE_SIZE) {
        BAD("'%s': WRAM span of %llu B does not fit the emulator's image", path,
            (unsigned long long)layout->wram_span_size);
    }

    program->image_template = calloc(1, layout->wram_span_size ? layout->wram_span_size : 1);
    if (!program->image_template) {
        BAD("out of memory");
    }
    if (data->sh_type == SHT_PROGBITS) {
        if (data->sh_offset + data->sh_size > size) {
            BAD("'%s': truncated .data", path);
        }
        memcpy(program->image_template, file + data->sh_offset, data->sh_size);
    }
    if (rodata && rodata->sh_type == SHT_PROGBITS && rodata->sh_offset + rodata->sh_size <= size) {
        program->rodata = malloc(rodata->sh_size ? rodata->sh_size : 1);
        if (!program->rodata) {
            BAD("out of memory");
        }
        memcpy(program->rodata, file + rodata->sh_offset, rodata->sh_size);
    }
    if (mram && mram->sh_type == SHT_PROGBITS && mram->sh_size) {
        if (mram->sh_addr < EMU_MRAM_BASE || mram->sh_offset + mram->sh_size > size) {
            BAD("'%s': bad .mram section", path);
        }
        program->mram_init_size = mram->sh_addr - EMU_MRAM_BASE + mram->sh_size;
        program->mram_init = calloc(1, program->mram_init_size);
        if (!program->mram_init) {
            BAD("out of memory");
        }
        memcpy(program->mram_init + (mram->sh_addr - EMU_MRAM_BASE), file + mram->sh_offset, mram->sh_size);
    }

    const Elf64_Shdr *strtab = &sh[symtab->sh_link < eh->e_shnum ? symtab->sh_link : 0];
    if (symtab->sh_offset + symtab->sh_size > size || strtab->sh_offset + strtab->sh_size > size) {
        BAD("'%s': bad symbol table", path);
    }
    const Elf64_Sym *syms = (const Elf64_Sym *)(file + symtab->sh_offset);
    size_t nr_syms = symtab->sh_size / sizeof(Elf64_Sym);
    const char *strings = (const char *)file + strtab->sh_offset;
    program->symbols = calloc(nr_syms ? nr_syms : 1, sizeof *program->symbols);
    if (!program->symbols) {
        BAD("out of memory");
    }
    bool found_heap_pointer = false;
    for (size_t i = 0; i < nr_syms; i++) {
        const Elf64_Sym *s = &syms[i];
        if (s->st_name >= strtab->sh_size || !strings[s->st_name]) {
            continue;
        }
        int type = ELF64_ST_TYPE(s->st_info);
        if (type != STT_OBJECT && type != STT_NOTYPE) {
            continue;
        }
        enum symbol_kind kind;
        int shndx = s->st_shndx;
        const char *name = strings + s->st_name;
        uint64_t symbol_size = s->st_size;
        if (!strcmp(name, DPU_MRAM_HEAP_POINTER_NAME)) {
            kind = SYMBOL_MRAM;
            if (s->st_value < EMU_MRAM_BASE || s->st_value > EMU_MRAM_BASE + EMU_MRAM_SIZE) {
                BAD("'%s': %s outside MRAM", path, name);
            }
            symbol_size = EMU_MRAM_BASE + EMU_MRAM_SIZE - s->st_value;
            program->mram_used = s->st_value - EMU_MRAM_BASE;
            found_heap_pointer = true;
        } else if (shndx == data_index || shndx == bss_index || shndx == atomic_index) {
            kind = SYMBOL_WRAM;
        } else if (shndx == rodata_index) {
            kind = SYMBOL_WRAM_READONLY;
        } else if (shndx == mram_index || shndx == mram_noinit_index) {
            kind = SYMBOL_MRAM;
        } else {
            continue;
        }
        if (type == STT_NOTYPE && kind != SYMBOL_MRAM) {
            continue; /* linker markers such as __bss_start */
        }
        struct emu_symbol *out = &program->symbols[program->nr_symbols++];
        out->name = strdup(name);
        if (!out->name) {
            BAD("out of memory");
        }
        out->address = s->st_value;
        out->size = symbol_size;
        out->kind = kind;
        out->global = ELF64_ST_BIND(s->st_info) != STB_LOCAL;
    }
    if (!found_heap_pointer) {
        BAD("'%s' lacks %s: not linked by the updlrm compiler driver", path, DPU_MRAM_HEAP_POINTER_NAME);
    }
    qsort(program->symbols, program->nr_symbols, sizeof *program->symbols, compare_symbols);
    /* keep the first (global) definition of each name */
    size_t unique = 0;
    for (size_t i = 0; i < program->nr_symbols; i++) {
        if (unique && !strcmp(program->symbols[unique - 1].name, program->symbols[i].name)) {
            free(program->symbols[i].name);
            continue;
        }
        program->symbols[unique++] = program->symbols[i];
    }
    program->nr_symbols = unique;
#undef BAD
out:
    munmap(file, size);
    return status;
}

static void detach_dpu(struct emu_system *system, uint32_t d)
{
    struct dpu_program_t *old = system->program_of[d];
    if (!old) {
        return;
    }
    system->program_of[d] = NULL;
    if (--old->nr_dpus) {
        return;
    }
    /* like the SDK's reference-counted programs: the last DPU frees it */
    for (struct dpu_program_t **link = &system->programs; *link; link = &(*link)->next) {
        if (*link == old) {
            *link = old->next;
            break;
        }
    }
    free_program(old);
}

static void reset_dpu(struct emu_system *system, uint32_t d, struct dpu_program_t *program)
{
    struct emu_dpu_block *b = block_of(system, d);
    struct emu_dpu_state *s = &b->state;
    s->status = EMU_DPU_IDLE;
    s->fault_kind = EMU_FAULT_NONE;
    s->fault_tasklet = -1;
    s->fault_msg[0] = 0;
    s->heap_used = 0;
    s->buddy_offset = 0;
    s->log_write_pos = 0;
    s->perfcounter_base = 0;
    s->perfcounter_mode = 1;
    s->dpu_cycles = 0;
    memcpy(b->image, program->image_template, program->layout.wram_span_size);
    if (program->mram_init_size) {
        memcpy(mram_of(system, d), program->mram_init, program->mram_init_size);
    }
}

static dpu_error_t load_path(struct dpu_set_t set, const char *path, const char *temporary_path,
                             struct dpu_program_t **program_out)
{
    struct emu_system *system = NULL;
    if (check_set(set, &system) != DPU_OK) {
        return DPU_ERR_INVALID_DPU_SET;
    }
    struct dpu_program_t *program = calloc(1, sizeof *program);
    if (!program) {
        return fail(DPU_ERR_SYSTEM, "out of memory");
    }
    program->system = system;
    program->path = realpath(path, NULL);
    dpu_error_t status = parse_program(path, program);
    if (status == DPU_OK && !program->path) {
        status = fail(DPU_ERR_ELF_NO_SUCH_FILE, "cannot resolve '%s'", path);
    }
    if (status != DPU_OK) {
        free_program(program);
        return status;
    }
    if (temporary_path) {
        program->temporary_path = strdup(temporary_path);
    }
    enter(system);
    FOR_EACH_DPU_OF_SET(set, dpu, {
        detach_dpu(system, dpu->index);
        system->program_of[dpu->index] = program;
        program->nr_dpus++;
        reset_dpu(system, dpu->index, program);
    });
    program->next = system->programs;
    system->programs = program;
    leave(system);
    if (program_out) {
        *program_out = program;
    }
    return ok();
}

EXPORT dpu_error_t dpu_load(struct dpu_set_t dpu_set, const char *binary_path, struct dpu_program_t **program)
{
    if (!binary_path) {
        return fail(DPU_ERR_ELF_NO_SUCH_FILE, "dpu_load: NULL path");
    }
    return load_path(dpu_set, binary_path, NULL, program);
}

EXPORT dpu_error_t dpu_load_from_memory(struct dpu_set_t dpu_set, uint8_t *buffer, size_t buffer_size,
                                        struct dpu_program_t **program)
{
    const char *dir = getenv("TMPDIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/updlrm-dpu-XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) {
        return fail(DPU_ERR_SYSTEM, "dpu_load_from_memory: cannot create %s: %s", path, strerror(errno));
    }
    bool written = write(fd, buffer, buffer_size) == (ssize_t)buffer_size && fchmod(fd, 0700) == 0;
    close(fd);
    if (!written) {
        unlink(path);
        return fail(DPU_ERR_SYSTEM, "dpu_load_from_memory: cannot write %s", path);
    }
    dpu_error_t status = load_path(dpu_set, path, path, program);
    if (status != DPU_OK) {
        unlink(path);
    }
    return status;
}

EXPORT dpu_error_t dpu_load_from_incbin(struct dpu_set_t dpu_set, struct dpu_incbin_t *incbin,
                                        struct dpu_program_t **program)
{
    return dpu_load_from_memory(dpu_set, incbin->buffer, incbin->size, program);
}

EXPORT dpu_error_t dpu_get_symbol(struct dpu_program_t *program, const char *symbol_name, struct dpu_symbol_t *symbol)
{
    if (!program || !symbol_name || !symbol) {
        return fail(DPU_ERR_INVALID_SYMBOL_ACCESS, "dpu_get_symbol: NULL argument");
    }
    const struct emu_symbol *s = find_symbol(program, symbol_name);
    if (!s) {
        return fail(DPU_ERR_UNKNOWN_SYMBOL, "unknown symbol '%s' in %s", symbol_name, program->path);
    }
    symbol->address = (uint32_t)s->address;
    symbol->size = (uint32_t)s->size;
    return ok();
}

/* The symbols a host can name in transfers, by index (sorted by name). */
EXPORT dpu_error_t updlrm_emu_program_symbol(struct dpu_program_t *program, uint32_t index, const char **name)
{
    if (!program || !name) {
        return fail(DPU_ERR_INVALID_SYMBOL_ACCESS, "updlrm_emu_program_symbol: NULL argument");
    }
    if (index >= program->nr_symbols) {
        return fail(DPU_ERR_INVALID_SYMBOL_ACCESS, "symbol index %u out of range (%zu symbols)", index,
                    program->nr_symbols);
    }
    *name = program->symbols[index].name;
    return ok();
}
