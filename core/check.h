/* core/check.h — the NULL-argument check at the entry of public functions. Not part of the public API.
 *
 * A NULL where the API needs a pointer is a caller's mistake, not a crash: the function returns
 * NAT_ERR_INVALID_ARG with "<fn>: <name> is NULL". The message is one string literal (no formatting,
 * no allocation), so the check costs a compare on valid input and the no-heap-call test is unaffected. */
#ifndef NAT_CORE_CHECK_H
#define NAT_CORE_CHECK_H

#include "nat/status.h"

/* fn and name must be string literals. */
#define NAT_CHECK_ARG(ptr, fn, name)                                               \
    do {                                                                           \
        if ((ptr) == NULL)                                                         \
            return nat_error(NAT_ERR_INVALID_ARG, "%s", fn ": " name " is NULL");  \
    } while (0)

#endif
