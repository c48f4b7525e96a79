/* Whole-buffer I/O on the pipes and the socket between the host library and its worker
 * processes, shared by both sides (hostlib_launch.c, dpurt_worker.c). */
#ifndef UPDLRM_EMU_IO_H
#define UPDLRM_EMU_IO_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

enum emu_io { EMU_IO_READ, EMU_IO_WRITE, EMU_IO_SEND };

/* Moves all `size` bytes (read, write, or send without SIGPIPE), retrying after EINTR;
 * false at end of file or on any other error. */
static inline bool emu_io_full(int fd, void *buffer, size_t size, enum emu_io how)
{
    uint8_t *p = buffer;
    while (size) {
        ssize_t n = how == EMU_IO_READ    ? read(fd, p, size)
                    : how == EMU_IO_WRITE ? write(fd, p, size)
                                          : send(fd, p, size, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        p += n;
        size -= (size_t)n;
    }
    return true;
}

#endif /* UPDLRM_EMU_IO_H */
