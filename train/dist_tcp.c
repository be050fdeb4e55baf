/* train/dist_tcp.c — the TCP engine of train/dist.h: the rendezvous of launches without MPI, from the
 * variables torchrun and most schedulers set: RANK, WORLD_SIZE, MASTER_ADDR (default 127.0.0.1) and
 * MASTER_PORT (default 29500). Rank 0 listens on MASTER_PORT; every other rank connects to it (retrying
 * until the timeout: rank 0 may start last) and says who it is. The result is a star: each rank talks to
 * rank 0 only, which is all the NCCL id broadcast needs (dist.c routes collectives through rank 0).
 *
 * Hello: 16 bytes, "natd" magic, version 1, rank, world size (little-endian u32 each); rank 0 checks
 * them (a rank from another job, a rank given twice, a different WORLD_SIZE are errors naming both).
 * exchange() runs every connection at once with poll(2), so two large messages crossing cannot block
 * each other; a peer whose connection closes is named ("rank 1 closed its connection").
 */
#define _POSIX_C_SOURCE 200809L
#include "train/dist.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct tcp_impl {
    int rank, size;
    int *fd; /* [size]: rank 0 holds one per peer; the others fd[0] only; -1 elsewhere */
} tcp_impl;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static bool env_int(const char *name, long lo, long hi, long *out)
{
    const char *v = getenv(name);
    char *end;
    if (!v || !*v)
        return false;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || x < lo || x > hi)
        return false;
    *out = x;
    return true;
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Reads or writes exactly len bytes of a blocking socket before the deadline. */
static bool full_io(int fd, void *buf, size_t len, bool writing, double deadline)
{
    for (size_t at = 0; at < len;) {
        struct pollfd p = {fd, writing ? POLLOUT : POLLIN, 0};
        int ms = (int)((deadline - now()) * 1000);
        if (ms <= 0 || poll(&p, 1, ms) <= 0)
            return false;
        ssize_t k = writing ? send(fd, (char *)buf + at, len - at, MSG_NOSIGNAL) : recv(fd, (char *)buf + at, len - at, 0);
        if (k <= 0 && !(k < 0 && (errno == EINTR || errno == EAGAIN)))
            return false;
        if (k > 0)
            at += (size_t)k;
    }
    return true;
}

static void tune(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
}

static nat_status tcp_exchange(void *impl, void *const *out, const size_t *send_bytes, void *const *in,
                               const size_t *recv_bytes, double timeout_s)
{
    tcp_impl *t = impl;
    size_t sent[64] = {0}, got[64] = {0};
    struct pollfd pf[64];
    int peer[64], n = 0;
    for (int p = 0; p < t->size && n < 64; p++) {
        if (p == t->rank || (!send_bytes[p] && !recv_bytes[p]))
            continue;
        if (t->fd[p] < 0)
            return nat_error(NAT_ERR_INTERNAL, "distributed (tcp): rank %d has no connection to rank %d", t->rank, p);
        peer[n++] = p;
    }
    const double deadline = now() + timeout_s;
    for (;;) {
        int live = 0;
        for (int i = 0; i < n; i++) {
            const int p = peer[i];
            short ev = (short)((sent[i] < send_bytes[p] ? POLLOUT : 0) | (got[i] < recv_bytes[p] ? POLLIN : 0));
            pf[i] = (struct pollfd){ev ? t->fd[p] : -1, ev, 0};
            live += ev != 0;
        }
        if (!live)
            return NAT_OK;
        int ms = (int)((deadline - now()) * 1000);
        int k = ms > 0 ? poll(pf, (nfds_t)n, ms) : 0;
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            char who[256] = "";
            size_t at = 0;
            for (int i = 0; i < n; i++)
                if (pf[i].fd >= 0) {
                    int w = snprintf(who + at, sizeof who - at, "%s%d", at ? ", " : "", peer[i]);
                    if (w > 0 && (size_t)w < sizeof who - at)
                        at += (size_t)w;
                }
            return nat_error(NAT_ERR_IO, "rank(s) %s did not answer within %g s (train.dist_timeout): dead, stopped or "
                                         "far slower; aborting the job", who, timeout_s);
        }
        for (int i = 0; i < n; i++) {
            const int p = peer[i];
            if (pf[i].fd < 0 || !pf[i].revents)
                continue;
            if (pf[i].revents & POLLOUT) {
                ssize_t w = send(t->fd[p], (char *)out[p] + sent[i], send_bytes[p] - sent[i], MSG_NOSIGNAL | MSG_DONTWAIT);
                if (w > 0)
                    sent[i] += (size_t)w;
                else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                    return nat_error(NAT_ERR_IO, "rank %d closed its connection (it exited or was killed): %s", p,
                                     strerror(errno));
            }
            if (pf[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                if (got[i] >= recv_bytes[p]) {
                    if (pf[i].revents & (POLLHUP | POLLERR))
                        return nat_error(NAT_ERR_IO, "rank %d closed its connection (it exited or was killed)", p);
                    continue;
                }
                ssize_t r = recv(t->fd[p], (char *)in[p] + got[i], recv_bytes[p] - got[i], MSG_DONTWAIT);
                if (r > 0)
                    got[i] += (size_t)r;
                else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
                    return nat_error(NAT_ERR_IO, "rank %d closed its connection (it exited or was killed)", p);
            }
        }
    }
}

static void tcp_close_all(tcp_impl *t)
{
    for (int p = 0; p < t->size; p++)
        if (t->fd[p] >= 0)
            close(t->fd[p]);
}

static void tcp_abort(void *impl, int code)
{
    (void)code;
    tcp_close_all(impl); /* the peers' waits end with "rank N closed its connection" */
}

static void tcp_finalize(void *impl)
{
    tcp_impl *t = impl;
    tcp_close_all(t);
    free(t->fd);
    free(t);
}

static const nat_dist_backend tcp_backend = {"tcp", tcp_exchange, tcp_abort, tcp_finalize};

static nat_status rank0_accept(tcp_impl *t, const char *port, double deadline)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
    int e = getaddrinfo(NULL, port, &hints, &ai);
    if (e)
        return nat_error(NAT_ERR_IO, "distributed (tcp): MASTER_PORT %s: %s", port, gai_strerror(e));
    int ls = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol), one = 1;
    if (ls >= 0)
        setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ls < 0 || bind(ls, ai->ai_addr, ai->ai_addrlen) != 0 || listen(ls, t->size) != 0) {
        int err = errno;
        freeaddrinfo(ai);
        if (ls >= 0)
            close(ls);
        return nat_error(NAT_ERR_IO, "distributed (tcp): rank 0 cannot listen on port %s (MASTER_PORT): %s", port,
                         strerror(err));
    }
    freeaddrinfo(ai);
    for (int joined = 1; joined < t->size;) {
        struct pollfd p = {ls, POLLIN, 0};
        int ms = (int)((deadline - now()) * 1000);
        if (ms <= 0 || poll(&p, 1, ms) <= 0) {
            close(ls);
            return nat_error(NAT_ERR_IO, "distributed (tcp): rank 0 waited for %d rank(s) of WORLD_SIZE %d on port %s; "
                                         "only %d joined before the timeout", t->size - 1, t->size, port, joined - 1);
        }
        int fd = accept(ls, NULL, NULL);
        if (fd < 0)
            continue;
        tune(fd);
        unsigned char h[16];
        if (!full_io(fd, h, sizeof h, false, deadline) || memcmp(h, "natd", 4) || get32(h + 4) != 1) {
            close(fd); /* not one of ours: ignore it */
            continue;
        }
        uint32_t r = get32(h + 8), w = get32(h + 12);
        nat_status s = NAT_OK;
        if (w != (uint32_t)t->size)
            s = nat_error(NAT_ERR_INVALID_ARG, "distributed (tcp): rank %u says WORLD_SIZE %u, rank 0 has %d", r, w, t->size);
        else if (r == 0 || r >= (uint32_t)t->size || t->fd[r] >= 0)
            s = nat_error(NAT_ERR_INVALID_ARG, "distributed (tcp): RANK %u joined twice or is out of range 1..%d", r,
                          t->size - 1);
        if (s != NAT_OK) {
            close(fd);
            close(ls);
            return s;
        }
        t->fd[r] = fd;
        joined++;
    }
    close(ls);
    return NAT_OK;
}

static nat_status rank_connect(tcp_impl *t, const char *host, const char *port, double deadline)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    int e = getaddrinfo(host, port, &hints, &ai);
    if (e)
        return nat_error(NAT_ERR_IO, "distributed (tcp): MASTER_ADDR %s port %s: %s", host, port, gai_strerror(e));
    int fd = -1, err = 0;
    while (fd < 0 && now() < deadline) { /* rank 0 may not listen yet */
        fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            err = errno;
            close(fd);
            fd = -1;
            nanosleep(&(struct timespec){0, 100000000}, NULL);
        }
    }
    freeaddrinfo(ai);
    if (fd < 0)
        return nat_error(NAT_ERR_IO, "distributed (tcp): rank %d cannot reach rank 0 at %s:%s (MASTER_ADDR:MASTER_PORT) "
                                     "before the timeout: %s", t->rank, host, port, strerror(err));
    tune(fd);
    unsigned char h[16];
    memcpy(h, "natd", 4);
    put32(h + 4, 1);
    put32(h + 8, (uint32_t)t->rank);
    put32(h + 12, (uint32_t)t->size);
    if (!full_io(fd, h, sizeof h, true, deadline)) {
        close(fd);
        return nat_error(NAT_ERR_IO, "distributed (tcp): rank %d: the hello to rank 0 failed", t->rank);
    }
    t->fd[0] = fd;
    return NAT_OK;
}

nat_status nat_dist_tcp_open(void **impl, const nat_dist_backend **be, int *rank, int *size, double timeout_s)
{
    long r, w;
    if (!env_int("WORLD_SIZE", 1, 64, &w))
        return nat_error(NAT_ERR_INVALID_ARG, "distributed (tcp): WORLD_SIZE='%s': must be 1..64",
                         getenv("WORLD_SIZE") ? getenv("WORLD_SIZE") : "");
    if (!env_int("RANK", 0, w - 1, &r))
        return nat_error(NAT_ERR_INVALID_ARG, "distributed (tcp): RANK='%s': must be 0..%ld (WORLD_SIZE - 1)",
                         getenv("RANK") ? getenv("RANK") : "", w - 1);
    const char *host = getenv("MASTER_ADDR") && *getenv("MASTER_ADDR") ? getenv("MASTER_ADDR") : "127.0.0.1";
    const char *port = getenv("MASTER_PORT") && *getenv("MASTER_PORT") ? getenv("MASTER_PORT") : "29500";
    tcp_impl *t = calloc(1, sizeof *t);
    if (t)
        t->fd = malloc((size_t)w * sizeof *t->fd);
    if (!t || !t->fd) {
        free(t);
        return nat_error(NAT_ERR_OOM, "distributed (tcp): out of memory");
    }
    t->rank = (int)r, t->size = (int)w;
    for (int p = 0; p < t->size; p++)
        t->fd[p] = -1;
    const double deadline = now() + timeout_s;
    nat_status s = w == 1 ? NAT_OK : r == 0 ? rank0_accept(t, port, deadline) : rank_connect(t, host, port, deadline);
    if (s != NAT_OK) {
        tcp_finalize(t);
        return s;
    }
    *impl = t;
    *be = &tcp_backend;
    *rank = t->rank;
    *size = t->size;
    return NAT_OK;
}
