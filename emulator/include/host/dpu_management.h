/* Identity of ranks and DPUs (the UPMEM SDK's <dpu_management.h>, the part a
 * host program uses), for the updlrm emulator.  A DPU's id is
 * rank << 16 | slice << 8 | member, as the SDK's dpu_get_id: on hardware
 * ranks a slice (control interface) holds 8 DPUs; with "backend=simulator"
 * every rank holds one DPU, so ids are 0x0, 0x10000, 0x20000, ... */
#ifndef DPU_MANAGEMENT_H
#define DPU_MANAGEMENT_H

#include <stdbool.h>

#include <dpu_types.h>

#ifdef __cplusplus
extern "C" {
#endif

dpu_id_t dpu_get_id(struct dpu_t *dpu);
dpu_id_t dpu_get_rank_id(struct dpu_rank_t *rank);
struct dpu_rank_t *dpu_get_rank(struct dpu_t *dpu);
dpu_slice_id_t dpu_get_slice_id(struct dpu_t *dpu);
dpu_member_id_t dpu_get_member_id(struct dpu_t *dpu);
bool dpu_is_enabled(struct dpu_t *dpu);
struct dpu_t *dpu_get(struct dpu_rank_t *rank, dpu_slice_id_t slice_id, dpu_member_id_t member_id);
struct dpu_set_t dpu_set_from_rank(struct dpu_rank_t **rank);
struct dpu_set_t dpu_set_from_dpu(struct dpu_t *dpu);
struct dpu_rank_t *dpu_rank_from_set(struct dpu_set_t set);
struct dpu_t *dpu_from_set(struct dpu_set_t set);

#ifdef __cplusplus
}
#endif

#endif
