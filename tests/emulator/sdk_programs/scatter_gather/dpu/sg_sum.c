/*
 * Adds 1 to every 64-bit word of `words[0..nr_words)` and sums the words it
 * read, so the host can check both what its gather wrote and what its scatter
 * reads back.  Tasklets take 256-byte blocks in turn.
 */
#include <stdint.h>

#include <barrier.h>
#include <defs.h>
#include <mram.h>

#define BLOCK_WORDS 32
#define MAX_WORDS 8192

__mram_noinit uint64_t words[MAX_WORDS];
__host uint32_t nr_words;
__host uint64_t tasklet_sums[NR_TASKLETS];
__dma_aligned uint64_t cache[NR_TASKLETS][BLOCK_WORDS];

int
main(void)
{
    uint32_t id = me();
    uint64_t sum = 0;
    for (uint32_t first = id * BLOCK_WORDS; first < nr_words; first += NR_TASKLETS * BLOCK_WORDS) {
        mram_read(&words[first], cache[id], sizeof(cache[id]));
        for (uint32_t i = 0; i < BLOCK_WORDS && first + i < nr_words; i++) {
            sum += cache[id][i];
            cache[id][i] += 1;
        }
        mram_write(cache[id], &words[first], sizeof(cache[id]));
    }
    tasklet_sums[id] = sum;
    return 0;
}
