/* Sequential MRAM reader (UPMEM SDK <seqread.h>): a WRAM cache of
 * SEQREAD_CACHE_SIZE bytes refilled by DMA as the reader advances.
 *
 *   seqreader_buffer_t buf = seqread_alloc();
 *   seqreader_t sr;
 *   uint32_t *p = seqread_init(buf, mram_array, &sr);
 *   for (...) { use(*p); p = seqread_get(p, sizeof(*p), &sr); }
 */
#ifndef UPDLRM_DPU_SEQREAD_H
#define UPDLRM_DPU_SEQREAD_H

#include <stdint.h>
#include <attributes.h>

#ifndef SEQREAD_CACHE_SIZE
#define SEQREAD_CACHE_SIZE 256
#endif

/* the SDK's seqread.h refuses any other cache size at build time */
_Static_assert(SEQREAD_CACHE_SIZE == 32 || SEQREAD_CACHE_SIZE == 64 || SEQREAD_CACHE_SIZE == 128 ||
                   SEQREAD_CACHE_SIZE == 256 || SEQREAD_CACHE_SIZE == 512 || SEQREAD_CACHE_SIZE == 1024,
               "seqread error: invalid cache size defined");

#ifdef __cplusplus
extern "C" {
#endif

typedef uintptr_t seqreader_buffer_t;
typedef struct {
    seqreader_buffer_t wram_cache;
    uintptr_t mram_addr; /* MRAM address of wram_cache[0] */
    uint32_t cache_size;
} seqreader_t;

seqreader_buffer_t __updlrm_seqread_alloc(uint32_t cache_size);
void *__updlrm_seqread_init(seqreader_buffer_t cache, __mram_ptr void *mram_addr, seqreader_t *reader,
                            uint32_t cache_size);
void *__updlrm_seqread_get(void *ptr, uint32_t increment, seqreader_t *reader);
void *__updlrm_seqread_seek(__mram_ptr void *mram_addr, seqreader_t *reader);
__mram_ptr void *__updlrm_seqread_tell(void *ptr, seqreader_t *reader);

#define seqread_alloc()                        __updlrm_seqread_alloc(SEQREAD_CACHE_SIZE)
#define seqread_init(cache, mram_addr, reader) __updlrm_seqread_init((cache), (mram_addr), (reader), SEQREAD_CACHE_SIZE)
#define seqread_get(ptr, increment, reader)    __updlrm_seqread_get((ptr), (increment), (reader))
#define seqread_seek(mram_addr, reader)        __updlrm_seqread_seek((mram_addr), (reader))
#define seqread_tell(ptr, reader)              __updlrm_seqread_tell((ptr), (reader))

#ifdef __cplusplus
}
#endif

#endif
