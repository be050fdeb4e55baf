/* nat/status.h — status codes and error messages.
 *
 * Every call that can fail on user input returns a nat_status. On failure the library stores a
 * message in the calling thread's error buffer (read it with nat_error_message()); the message names
 * what was wrong in the user's terms: the shapes, the file and line, the values. The library never
 * exits the process.
 */
#ifndef NAT_STATUS_H
#define NAT_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum nat_status {
    NAT_OK = 0,
    NAT_ERR_INVALID_ARG,  /* a value out of range, a NULL where one is required */
    NAT_ERR_SHAPE,        /* tensor shapes that do not fit together */
    NAT_ERR_OOM,          /* an allocation failed */
    NAT_ERR_IO,           /* a file could not be opened, read or written */
    NAT_ERR_FORMAT,       /* a file's contents are malformed (config, checkpoint, image, dataset) */
    NAT_ERR_UNSUPPORTED,  /* valid request this build or device cannot serve (e.g. no CUDA) */
    NAT_ERR_CUDA,         /* a CUDA, cuBLAS or cuDNN call failed */
    NAT_ERR_INTERNAL      /* a bug in nat */
} nat_status;

/* Short name of a status code, e.g. "shape mismatch". Never NULL. */
const char *nat_status_name(nat_status s);

/* The calling thread's last error message ("" when none). Borrowed: valid until the next failing call
 * on this thread. */
const char *nat_error_message(void);

/* Stores a printf-style message for this thread and returns `code` (so `return nat_error(...)` works). */
nat_status nat_error(nat_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Prefixes the current message with "<prefix>: " (to add context while an error travels up) and
 * returns `code`. */
nat_status nat_error_context(nat_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Clears this thread's message. */
void nat_error_clear(void);

/* Returns from the enclosing function when `expr` fails. */
#define NAT_TRY(expr)                       \
    do {                                    \
        nat_status nat_try_s_ = (expr);     \
        if (nat_try_s_ != NAT_OK)           \
            return nat_try_s_;              \
    } while (0)

#ifdef __cplusplus
}
#endif
#endif
