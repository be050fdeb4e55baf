/* train/progress.c — see train/train.h (section progress). */
#define _POSIX_C_SOURCE 200809L
#include "train/train.h"

#include <time.h>
#include <unistd.h>

double nat_wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void nat_format_duration(double s, char *buf, size_t cap)
{
    if (s < 0)
        s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, cap, "%ldh%02ldm", t / 3600, (t / 60) % 60);
    else if (t >= 60)
        snprintf(buf, cap, "%ldm%02lds", t / 60, t % 60);
    else
        snprintf(buf, cap, "%lds", t);
}

void nat_progress_start(nat_progress *p, FILE *out, long total_steps, int every)
{
    p->out = out;
    p->tty = isatty(fileno(out));
    p->total = total_steps;
    p->every = every > 0 ? every : 1;
    p->t0 = p->last_print = nat_wall_now();
}

void nat_progress_update(nat_progress *p, long step, int epoch, double loss, double lr, double images_per_s)
{
    double now = nat_wall_now();
    bool last = step >= p->total;
    /* A terminal is redrawn at most 10 times a second; a log gets every `every`-th step. */
    if (p->tty ? (!last && now - p->last_print < 0.1) : (!last && step % p->every != 0))
        return;
    p->last_print = now;
    double elapsed = now - p->t0;
    double eta = step > 0 ? elapsed / (double)step * (double)(p->total - step) : 0.0;
    char e1[32], e2[32], ep[32] = "";
    nat_format_duration(elapsed, e1, sizeof e1);
    nat_format_duration(eta, e2, sizeof e2);
    if (epoch >= 0)
        snprintf(ep, sizeof ep, "epoch %d  ", epoch);
    fprintf(p->out, "%s%sstep %ld/%ld (%3.0f%%)  loss %.4f  lr %.2e  %.0f img/s  elapsed %s  ETA %s%s",
            p->tty ? "\r\033[K" : "", ep, step, p->total, 100.0 * (double)step / (double)p->total, loss, lr,
            images_per_s, e1, e2, p->tty ? "" : "\n");
    fflush(p->out);
}

void nat_progress_end(nat_progress *p)
{
    if (p->tty)
        fputc('\n', p->out);
    fflush(p->out);
}
