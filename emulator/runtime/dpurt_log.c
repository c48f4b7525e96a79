/* updlrm emulator DPU runtime (dpurt.h): the DPU's printf log, a ring in shared memory.
 */
#include "dpurt.h"

/* ---- log ---------------------------------------------------------------- */

static void log_append(const char *text, size_t length)
{
    struct emu_dpu_state *s = state();
    for (size_t i = 0; i < length; i++) {
        rt.block->log[(s->log_write_pos + i) % EMU_LOG_SIZE] = text[i];
    }
    s->log_write_pos += (uint32_t)length;
}

EXPORT int __updlrm_printf(const char *format, ...)
{
    runtime_call();
    char buffer[4096];
    va_list args;
    va_start(args, format);
    int length = vsnprintf(buffer, sizeof buffer, format, args);
    va_end(args);
    if (length > 0) {
        log_append(buffer, (size_t)length < sizeof buffer ? (size_t)length : sizeof buffer - 1);
    }
    return length;
}

EXPORT int __updlrm_puts(const char *text)
{
    runtime_call();
    log_append(text, strlen(text));
    log_append("\n", 1);
    return 1;
}

EXPORT int __updlrm_putchar(int character)
{
    runtime_call();
    char c = (char)character;
    log_append(&c, 1);
    return (unsigned char)c;
}
