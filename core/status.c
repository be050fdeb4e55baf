/* core/status.c — thread-local error messages behind nat_status (see include/nat/status.h). */
#include "nat/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define NAT_ERROR_CAP 1024

/* One buffer per thread: two models on two threads never overwrite each other's message. */
static _Thread_local char error_buf[NAT_ERROR_CAP];

const char *nat_status_name(nat_status s)
{
    switch (s) {
    case NAT_OK: return "ok";
    case NAT_ERR_INVALID_ARG: return "invalid argument";
    case NAT_ERR_SHAPE: return "shape mismatch";
    case NAT_ERR_OOM: return "out of memory";
    case NAT_ERR_IO: return "i/o error";
    case NAT_ERR_FORMAT: return "malformed input";
    case NAT_ERR_UNSUPPORTED: return "unsupported";
    case NAT_ERR_CUDA: return "cuda error";
    case NAT_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

const char *nat_error_message(void) { return error_buf; }

void nat_error_clear(void) { error_buf[0] = '\0'; }

nat_status nat_error(nat_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error_buf, sizeof error_buf, fmt, ap);
    va_end(ap);
    return code;
}

nat_status nat_error_context(nat_status code, const char *fmt, ...)
{
    char old[NAT_ERROR_CAP];
    memcpy(old, error_buf, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(error_buf, sizeof error_buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof error_buf - 3)
        return code;
    /* Append ": " and the old message, truncated to what fits. */
    size_t at = (size_t)n;
    error_buf[at++] = ':';
    error_buf[at++] = ' ';
    size_t room = sizeof error_buf - at - 1, len = strlen(old);
    memcpy(error_buf + at, old, len < room ? len : room);
    error_buf[at + (len < room ? len : room)] = '\0';
    return code;
}
