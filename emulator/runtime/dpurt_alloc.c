/* updlrm emulator DPU runtime (dpurt.h): the WRAM heap (mem_alloc) and the buddy
 * allocator, kept inside the DPU's WRAM.
 */
#include "dpurt.h"

/* ---- WRAM heap ---------------------------------------------------------- */

EXPORT void *mem_alloc(size_t size)
{
    runtime_call();
    struct emu_dpu_state *s = state();
    size_t start = s->heap_used;
    size_t rounded = (size + 7) & ~(size_t)7;
    if (rounded < size || rounded > rt.layout.heap_capacity - start) {
        fault(EMU_FAULT_WRAM_OVERFLOW, true, "mem_alloc(%zu): WRAM heap exhausted (%zu of %u bytes already allocated)",
              size, start, rt.layout.heap_capacity);
    }
    s->heap_used = (uint32_t)(start + rounded);
    return rt.mem.heap + start;
}

EXPORT void *mem_reset(void)
{
    runtime_call();
    state()->heap_used = 0;
    state()->buddy_offset = 0;
    return rt.mem.heap;
}

/* Buddy allocator kept entirely inside WRAM (so that it is per DPU): a
 * header, a tree of "largest free block" orders, then the arena. */
#define BUDDY_MIN_ORDER 5u /* 32-byte blocks */
#define BUDDY_MAX_SIZE  (32u << 10)

struct buddy_header {
    uint32_t arena_size; /* power of two */
    uint32_t nr_leaves;
    uint8_t tree[]; /* 2 * nr_leaves - 1 nodes: 0 = nothing free, k = 2^(k-1) leaves free */
};

static struct buddy_header *buddy(void)
{
    uint32_t offset = state()->buddy_offset;
    if (!offset) {
        fault(EMU_FAULT_WRAM_OVERFLOW, true, "buddy allocator used before buddy_init");
    }
    return (struct buddy_header *)(rt.mem.heap + offset - 1);
}

static uint8_t *buddy_arena(struct buddy_header *h)
{
    return (uint8_t *)h + ((sizeof *h + 2 * h->nr_leaves + 7) & ~(size_t)7);
}

static uint8_t leaf_order_value(uint32_t leaves)
{
    uint8_t value = 1;
    while (leaves > 1) {
        leaves >>= 1;
        value++;
    }
    return value;
}

EXPORT void buddy_reset(void)
{
    struct buddy_header *h = buddy();
    uint32_t level_leaves = h->nr_leaves;
    uint32_t first = 0, count = 1;
    while (count <= h->nr_leaves) {
        for (uint32_t i = 0; i < count; i++) {
            h->tree[first + i] = leaf_order_value(level_leaves);
        }
        first += count;
        count *= 2;
        level_leaves /= 2;
    }
}

EXPORT void buddy_init(size_t size_of_heap)
{
    uint32_t arena = 1u << BUDDY_MIN_ORDER;
    while (arena < size_of_heap && arena < BUDDY_MAX_SIZE) {
        arena *= 2;
    }
    uint32_t leaves = arena >> BUDDY_MIN_ORDER;
    size_t header = (sizeof(struct buddy_header) + 2 * leaves + 7) & ~(size_t)7;
    uint8_t *memory = mem_alloc(header + arena);
    struct buddy_header *h = (struct buddy_header *)memory;
    h->arena_size = arena;
    h->nr_leaves = leaves;
    state()->buddy_offset = (uint32_t)(memory - rt.mem.heap) + 1;
    buddy_reset();
}

EXPORT void *buddy_alloc(size_t size)
{
    runtime_call();
    struct buddy_header *h = buddy();
    uint32_t leaves = 1;
    while ((size_t)leaves << BUDDY_MIN_ORDER < size) {
        leaves *= 2;
    }
    if (size == 0 || leaves > h->nr_leaves) {
        return NULL;
    }
    uint8_t need = leaf_order_value(leaves);
    if (h->tree[0] < need) {
        return NULL;
    }
    uint32_t node = 0, node_leaves = h->nr_leaves;
    while (node_leaves > leaves) {
        uint32_t left = 2 * node + 1;
        node = h->tree[left] >= need ? left : left + 1;
        node_leaves /= 2;
    }
    h->tree[node] = 0;
    uint32_t level_first = 0, level_count = 1;
    for (uint32_t l = h->nr_leaves; l > node_leaves; l /= 2) {
        level_first += level_count;
        level_count *= 2;
    }
    uint32_t offset = (node - level_first) * (node_leaves << BUDDY_MIN_ORDER);
    while (node) {
        node = (node - 1) / 2;
        uint8_t l = h->tree[2 * node + 1], r = h->tree[2 * node + 2];
        h->tree[node] = l > r ? l : r;
    }
    return buddy_arena(h) + offset;
}

EXPORT void buddy_free(void *pointer)
{
    runtime_call();
    if (!pointer) {
        return;
    }
    struct buddy_header *h = buddy();
    uint32_t offset = (uint32_t)((uint8_t *)pointer - buddy_arena(h));
    if ((uint8_t *)pointer < buddy_arena(h) || offset >= h->arena_size || offset % (1u << BUDDY_MIN_ORDER)) {
        fault(EMU_FAULT_WRAM_OVERFLOW, true, "buddy_free: %p was not returned by buddy_alloc", pointer);
    }
    /* start at the leaf and climb to the allocated node (the first with value 0) */
    uint32_t node = h->nr_leaves - 1 + (offset >> BUDDY_MIN_ORDER);
    uint32_t node_leaves = 1;
    while (h->tree[node] != 0) {
        if (!node) {
            fault(EMU_FAULT_WRAM_OVERFLOW, true, "buddy_free: %p is not allocated", pointer);
        }
        node = (node - 1) / 2;
        node_leaves *= 2;
    }
    h->tree[node] = leaf_order_value(node_leaves);
    while (node) {
        node = (node - 1) / 2;
        node_leaves *= 2;
        uint8_t l = h->tree[2 * node + 1], r = h->tree[2 * node + 2];
        uint8_t half = leaf_order_value(node_leaves / 2);
        h->tree[node] = (l == half && r == half) ? leaf_order_value(node_leaves) : (l > r ? l : r);
    }
}

EXPORT void *buddy_realloc(void *pointer, size_t size)
{
    if (!pointer) {
        return buddy_alloc(size);
    }
    struct buddy_header *h = buddy();
    uint32_t offset = (uint32_t)((uint8_t *)pointer - buddy_arena(h));
    uint32_t node = h->nr_leaves - 1 + (offset >> BUDDY_MIN_ORDER);
    uint32_t block = 1u << BUDDY_MIN_ORDER;
    while (node && h->tree[node] != 0) {
        node = (node - 1) / 2;
        block *= 2;
    }
    if (size <= block) {
        return pointer;
    }
    void *fresh = buddy_alloc(size);
    if (fresh) {
        memcpy(fresh, pointer, block);
        buddy_free(pointer);
    }
    return fresh;
}
