/* DPU-side <stdio.h>: the system header, with printf/puts/putchar sent to
 * the DPU's log buffer (read on the host with dpu_log_read), as in the SDK. */
#ifndef UPDLRM_DPU_STDIO_H
#define UPDLRM_DPU_STDIO_H

#include_next <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

int __updlrm_printf(const char *format, ...) __attribute__((format(printf, 1, 2)));
int __updlrm_puts(const char *text);
int __updlrm_putchar(int character);

#ifdef __cplusplus
}
#endif

/* The SDK's way to size the log buffer; checked as the SDK checks it.  The
 * emulator's log ring stays 64 KiB whatever the size (emulator/README.md). */
#define STDOUT_BUFFER_INIT(size)                                                                                       \
    _Static_assert(((size) >= 8) && (((size) & 7) == 0), "stdout buffer size must be a multiple of 8 and > 0");        \
    __attribute__((section(".mram.noinit"), aligned(8), used)) unsigned char __stdout_buffer[(size)];                  \
    const unsigned int __stdout_buffer_size = (size)

#define printf  __updlrm_printf
#define puts    __updlrm_puts
#define putchar __updlrm_putchar

#endif
