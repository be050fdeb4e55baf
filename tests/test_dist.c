/* tests/test_dist.c — train/dist.h without MPI: the TCP rendezvous of launches by RANK, WORLD_SIZE,
 * MASTER_ADDR and MASTER_PORT (what a multi-GPU run shares its NCCL id through), run as real processes
 * on loopback: a 128-byte id (NCCL's ncclUniqueId size) broadcast from rank 0, the rank-order
 * all-reduce, a rank that dies and a rank that stops answering, each named by rank. The MPI engine is
 * tested by tests/tools/test_mpi.sh under mpirun. */
#define _POSIX_C_SOURCE 200809L
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/harness.h"
#include "train/dist.h"

/* A port nothing listens on now (the kernel's pick for port 0). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

typedef int (*rank_fn)(int rank, int size);

/* Runs fn in `size` processes launched as torchrun would (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT);
 * every process must exit 0 (fn's return value). */
static void launch(int size, rank_fn fn)
{
    char port[16];
    snprintf(port, sizeof port, "%d", free_port());
    pid_t pid[8];
    for (int r = 0; r < size; r++) {
        pid[r] = fork();
        ck_assert_int_ge(pid[r], 0);
        if (pid[r] == 0) {
            char rank[16], world[16];
            snprintf(rank, sizeof rank, "%d", r);
            snprintf(world, sizeof world, "%d", size);
            unsetenv("OMPI_COMM_WORLD_SIZE");
            unsetenv("PMI_SIZE");
            unsetenv("PMIX_RANK");
            setenv("RANK", rank, 1);
            setenv("WORLD_SIZE", world, 1);
            setenv("MASTER_ADDR", "127.0.0.1", 1);
            setenv("MASTER_PORT", port, 1);
            _exit(fn(r, size));
        }
    }
    for (int r = 0; r < size; r++) {
        int st = 0;
        ck_assert_int_eq(waitpid(pid[r], &st, 0), pid[r]);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "rank %d of %d: exit status %d (%s)", r, size,
                      WIFEXITED(st) ? WEXITSTATUS(st) : -1, WIFEXITED(st) ? "exited" : "killed");
    }
}

#define FAIL_IF(cond, ...)                                                                                             \
    do {                                                                                                               \
        if (cond) {                                                                                                    \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fputc('\n', stderr);                                                                                       \
            return 1;                                                                                                  \
        }                                                                                                              \
    } while (0)

/* Rank r's element e: element 0 is 1e8, 1, -1e8 for ranks 0, 1, 2 (a sum whose value depends on order). */
static float value(int r, int e)
{
    static const float first[3] = {1e8f, 1.0f, -1e8f};
    return e == 0 ? first[r % 3] : (float)(r + 1) * 0.1f * (float)e;
}

static int id_and_sums(int rank, int size)
{
    nat_dist *d;
    FAIL_IF(nat_dist_init(&d, 20) != NAT_OK, "rank %d: %s", rank, nat_error_message());
    FAIL_IF(strcmp(nat_dist_engine(d), "tcp") || nat_dist_rank(d) != rank || nat_dist_size(d) != size,
            "rank %d: engine %s rank %d size %d", rank, nat_dist_engine(d), nat_dist_rank(d), nat_dist_size(d));
    /* the id: rank 0's bytes on every rank */
    unsigned char id[128];
    for (int i = 0; i < 128; i++)
        id[i] = rank == 0 ? (unsigned char)(i * 7 + 3) : 0;
    FAIL_IF(nat_dist_broadcast(d, id, sizeof id, 0) != NAT_OK, "broadcast: %s", nat_error_message());
    for (int i = 0; i < 128; i++)
        FAIL_IF(id[i] != (unsigned char)(i * 7 + 3), "rank %d: id byte %d is %d", rank, i, id[i]);
    /* rank order: 1e8 + 1 rounds to 1e8 in f32, so ((1e8 + 1) - 1e8) + ... = 0, while another order gives 1 */
    float buf[1000], want[1000];
    for (int e = 0; e < 1000; e++) {
        buf[e] = value(rank, e);
        want[e] = value(0, e);
        for (int r = 1; r < size; r++)
            want[e] += value(r, e);
    }
    FAIL_IF(nat_dist_allreduce_f32(d, buf, 1000) != NAT_OK, "all-reduce: %s", nat_error_message());
    FAIL_IF(memcmp(buf, want, sizeof buf) != 0, "rank %d: all-reduce differs from the rank-order sum (%g vs %g)", rank,
            (double)buf[0], (double)want[0]);
    FAIL_IF(nat_dist_barrier(d) != NAT_OK, "barrier: %s", nat_error_message());
    nat_dist_free(d);
    return 0;
}

START_TEST(tcp_rendezvous_shares_an_id_and_sums_in_rank_order)
{
    launch(2, id_and_sums);
    launch(3, id_and_sums);
}
END_TEST

/* Rank 1 joins, then exits; rank 0's next collective must fail naming it, not wait. */
static int one_dies(int rank, int size)
{
    (void)size;
    nat_dist *d;
    FAIL_IF(nat_dist_init(&d, 20) != NAT_OK, "rank %d: %s", rank, nat_error_message());
    if (rank == 1)
        _exit(0); /* the socket closes with the process, as on a crash */
    float x[4] = {1, 2, 3, 4};
    nat_status s = nat_dist_allreduce_f32(d, x, 4);
    FAIL_IF(s != NAT_ERR_IO, "rank 0: all-reduce with a dead rank returned %d", (int)s);
    FAIL_IF(!strstr(nat_error_message(), "rank 1 closed its connection"), "rank 0: message '%s'", nat_error_message());
    nat_dist_free(d);
    return 0;
}

START_TEST(tcp_dead_rank_is_named)
{
    launch(2, one_dies);
}
END_TEST

/* Rank 1 joins, then sleeps past rank 0's timeout. */
static int one_hangs(int rank, int size)
{
    (void)size;
    nat_dist *d;
    FAIL_IF(nat_dist_init(&d, rank == 0 ? 1 : 20) != NAT_OK, "rank %d: %s", rank, nat_error_message());
    if (rank == 1) {
        sleep(3);
        _exit(0);
    }
    char one = 1, all[2];
    nat_status s = nat_dist_allgather(d, &one, all, 1);
    FAIL_IF(s != NAT_ERR_IO, "rank 0: all-gather with a silent rank returned %d", (int)s);
    FAIL_IF(!strstr(nat_error_message(), "rank(s) 1 did not answer within 1 s"), "rank 0: message '%s'",
            nat_error_message());
    nat_dist_free(d);
    return 0;
}

START_TEST(tcp_silent_rank_times_out_named)
{
    launch(2, one_hangs);
}
END_TEST

START_TEST(without_a_launcher_one_rank)
{
    unsetenv("OMPI_COMM_WORLD_SIZE");
    unsetenv("PMI_SIZE");
    unsetenv("PMIX_RANK");
    unsetenv("RANK");
    unsetenv("WORLD_SIZE");
    ck_assert_str_eq(nat_dist_detect(), "single");
    nat_dist *d;
    ck_assert_int_eq(nat_dist_init(&d, 10), NAT_OK);
    ck_assert_int_eq(nat_dist_size(d), 1);
    ck_assert_int_eq(nat_dist_rank(d), 0);
    float x[2] = {1.5f, -2};
    ck_assert_int_eq(nat_dist_allreduce_f32(d, x, 2), NAT_OK);
    ck_assert(x[0] == 1.5f && x[1] == -2);
    ck_assert_int_eq(nat_dist_barrier(d), NAT_OK);
    nat_dist_free(d);
}
END_TEST

START_TEST(bad_rank_variables_are_refused)
{
    unsetenv("OMPI_COMM_WORLD_SIZE");
    unsetenv("PMI_SIZE");
    unsetenv("PMIX_RANK");
    setenv("WORLD_SIZE", "2", 1);
    setenv("RANK", "2", 1);
    nat_dist *d;
    ck_assert_int_eq(nat_dist_init(&d, 1), NAT_ERR_INVALID_ARG);
    ck_assert_msg(strstr(nat_error_message(), "RANK='2': must be 0..1"), "%s", nat_error_message());
    setenv("WORLD_SIZE", "two", 1);
    ck_assert_int_eq(nat_dist_init(&d, 1), NAT_ERR_INVALID_ARG);
    ck_assert_msg(strstr(nat_error_message(), "WORLD_SIZE='two'"), "%s", nat_error_message());
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dist");
    struct {
        const char *name;
        const TTest *fn;
    } cases[] = {
        {"tcp_rendezvous_shares_an_id_and_sums_in_rank_order", tcp_rendezvous_shares_an_id_and_sums_in_rank_order},
        {"tcp_dead_rank_is_named", tcp_dead_rank_is_named},
        {"tcp_silent_rank_times_out_named", tcp_silent_rank_times_out_named},
        {"without_a_launcher_one_rank", without_a_launcher_one_rank},
        {"bad_rank_variables_are_refused", bad_rank_variables_are_refused},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_add_test(tc, cases[i].fn);
        tcase_set_timeout(tc, 60);
        suite_add_tcase(s, tc);
    }
    return th_run_suite(s);
}
