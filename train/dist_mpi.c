/* train/dist_mpi.c — the MPI engine of train/dist.h (Open MPI on Debian: libopenmpi-dev; any MPI-3
 * library works). exchange() is nonblocking point-to-point (MPI_Irecv / MPI_Isend on MPI_COMM_WORLD)
 * polled with MPI_Test against the timeout, so a wait is bounded and the ranks that did not answer are
 * known by name; a blocking MPI_Alltoallv could hang forever on a rank that stopped without exiting.
 * Built when CMake finds MPI (NAT_HAVE_MPI); otherwise nat_dist_mpi_open says how to get it. */
#define _POSIX_C_SOURCE 200809L
#include "train/dist.h"

#ifdef NAT_HAVE_MPI
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* MPI counts are int: longer messages go as pieces of this many bytes, tagged in order. */
#define PIECE ((size_t)1 << 30)
#define TAG 0x6e61

typedef struct mpi_impl {
    int rank, size;
    MPI_Request *reqs;
    int *req_peer; /* the peer of each request; -1 for sends */
    int cap;
} mpi_impl;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static nat_status grow(mpi_impl *m, int need)
{
    if (need <= m->cap)
        return NAT_OK;
    MPI_Request *r = realloc(m->reqs, (size_t)need * sizeof *r);
    if (r)
        m->reqs = r;
    int *p = realloc(m->req_peer, (size_t)need * sizeof *p);
    if (p)
        m->req_peer = p;
    if (!r || !p)
        return nat_error(NAT_ERR_OOM, "distributed (mpi): out of memory");
    m->cap = need;
    return NAT_OK;
}

static nat_status mpi_exchange(void *impl, void *const *send, const size_t *send_bytes, void *const *recv,
                               const size_t *recv_bytes, double timeout_s)
{
    mpi_impl *m = impl;
    int n = 0;
    for (int p = 0; p < m->size; p++)
        if (p != m->rank)
            n += (int)((send_bytes[p] + PIECE - 1) / PIECE + (recv_bytes[p] + PIECE - 1) / PIECE);
    NAT_TRY(grow(m, n > 0 ? n : 1));
    n = 0;
    /* receives first, so a peer's send finds its buffer posted */
    for (int p = 0; p < m->size; p++) {
        if (p == m->rank)
            continue;
        for (size_t off = 0, k = 0; off < recv_bytes[p]; off += PIECE, k++) {
            size_t len = recv_bytes[p] - off < PIECE ? recv_bytes[p] - off : PIECE;
            m->req_peer[n] = p;
            MPI_Irecv((char *)recv[p] + off, (int)len, MPI_BYTE, p, TAG + (int)k, MPI_COMM_WORLD, &m->reqs[n++]);
        }
    }
    for (int p = 0; p < m->size; p++) {
        if (p == m->rank)
            continue;
        for (size_t off = 0, k = 0; off < send_bytes[p]; off += PIECE, k++) {
            size_t len = send_bytes[p] - off < PIECE ? send_bytes[p] - off : PIECE;
            m->req_peer[n] = -1 - p;
            MPI_Isend((char *)send[p] + off, (int)len, MPI_BYTE, p, TAG + (int)k, MPI_COMM_WORLD, &m->reqs[n++]);
        }
    }
    /* Poll: spin briefly (the common case is a peer a few microseconds behind), then sleep 50 µs between
     * tests so a waiting rank leaves the core to a computing one on a shared machine. */
    const double deadline = now() + timeout_s;
    for (long spin = 0;; spin++) {
        int done = 0;
        MPI_Testall(n, m->reqs, &done, MPI_STATUSES_IGNORE);
        if (done)
            return NAT_OK;
        if (spin > 2000) {
            if (now() > deadline)
                break;
            nanosleep(&(struct timespec){0, 50000}, NULL);
        }
    }
    /* Timed out: name the peers whose messages have not arrived (or not left). */
    char who[256] = "";
    size_t at = 0;
    bool *late = calloc((size_t)m->size, sizeof *late);
    for (int i = 0; late && i < n; i++) {
        int done = 0;
        if (m->reqs[i] != MPI_REQUEST_NULL)
            MPI_Test(&m->reqs[i], &done, MPI_STATUS_IGNORE);
        else
            done = 1;
        int p = m->req_peer[i] >= 0 ? m->req_peer[i] : -1 - m->req_peer[i];
        if (!done && !late[p]) {
            late[p] = true;
            int w = snprintf(who + at, sizeof who - at, "%s%d", at ? ", " : "", p);
            if (w > 0 && (size_t)w < sizeof who - at)
                at += (size_t)w;
        }
    }
    free(late);
    return nat_error(NAT_ERR_IO,
                     "rank(s) %s did not answer within %g s (train.dist_timeout): dead, stopped or far slower; "
                     "aborting the job",
                     who[0] ? who : "?", timeout_s);
}

static void mpi_abort(void *impl, int code)
{
    (void)impl;
    MPI_Abort(MPI_COMM_WORLD, code);
}

static void mpi_finalize(void *impl)
{
    mpi_impl *m = impl;
    free(m->reqs);
    free(m->req_peer);
    free(m);
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin)
        MPI_Finalize();
}

bool nat_dist_have_mpi(void) { return true; }

static const nat_dist_backend mpi_backend = {"mpi", mpi_exchange, mpi_abort, mpi_finalize};

nat_status nat_dist_mpi_open(void **impl, const nat_dist_backend **be, int *rank, int *size)
{
    mpi_impl *m = calloc(1, sizeof *m);
    if (!m)
        return nat_error(NAT_ERR_OOM, "distributed (mpi): out of memory");
    int init = 0;
    MPI_Initialized(&init);
    if (!init && MPI_Init(NULL, NULL) != MPI_SUCCESS) {
        free(m);
        return nat_error(NAT_ERR_IO, "distributed (mpi): MPI_Init failed");
    }
    /* errors come back as codes (a dead peer is then reported by us, not by a default handler's abort) */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &m->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &m->size);
    *impl = m;
    *be = &mpi_backend;
    *rank = m->rank;
    *size = m->size;
    return NAT_OK;
}

#else

bool nat_dist_have_mpi(void) { return false; }

nat_status nat_dist_mpi_open(void **impl, const nat_dist_backend **be, int *rank, int *size)
{
    (void)impl, (void)be, (void)rank, (void)size;
    return nat_error(NAT_ERR_UNSUPPORTED, "launched by mpirun/srun, but this nat-train was built without MPI "
                                          "(install libopenmpi-dev and configure again with CMake)");
}

#endif
