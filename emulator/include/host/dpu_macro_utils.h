/* Helper macros of the UPMEM host API (argument counting for DPU_FOREACH). */
#ifndef DPU_MACRO_UTILS_H
#define DPU_MACRO_UTILS_H

#define _CONCAT_X(x, y) x##y
#define _CONCAT(x, y)   _CONCAT_X(x, y)
#define _STR_X(x)       #x
#define _STR(x)         _STR_X(x)

/* Expands to X for (set, dpu) and to I for (set, dpu, index). */
#define _DPU_FOREACH_SELECT(_1, _2, _3, NAME, ...) NAME
#define _DPU_FOREACH_VARIANT(...)                  _DPU_FOREACH_SELECT(__VA_ARGS__, I, X, _)

#endif
