/* DPU-side <assert.h>: a failed assert faults the DPU (reported on the host
 * as DPU_ERR_DPU_FAULT naming the DPU and tasklet) instead of aborting the
 * emulator worker. */
#undef assert
#ifdef NDEBUG
#define assert(expression) ((void)0)
#else
#ifdef __cplusplus
extern "C"
#endif
    void
    __updlrm_assert_fail(const char *expression, const char *file, unsigned int line) __attribute__((noreturn));
#define assert(expression) ((expression) ? (void)0 : __updlrm_assert_fail(#expression, __FILE__, __LINE__))
#endif
#ifndef __cplusplus
#ifndef static_assert
#define static_assert _Static_assert
#endif
#endif
