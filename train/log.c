/* train/log.c — see train/train.h (section log). Every write is checked (fprintf, fflush, fclose): rows lost
 * on a full disk are an error naming the file, not a silent exit 0 with empty logs. */
#define _POSIX_C_SOURCE 200809L
#include "train/train.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static const char *const step_header = "step,epoch,loss,lr,grad_norm,images_per_s,mem_mib,peak_mib\n";
static const char *const eval_header = "step,epoch,weights,images,top1,top5,loss,seconds\n";

static nat_status write_error(const char *path, int e)
{
    return nat_error(NAT_ERR_IO, "log %s: write failed: %s", path, strerror(e ? e : EIO));
}

/* Rewrites `path` keeping its header and the rows whose first field (the step) is <= keep (keep < 0:
 * none, a new file), then opens it for appending. A missing file starts anew. */
static nat_status reopen_trimmed(const char *path, const char *header, int64_t keep, FILE **out)
{
    FILE *in = keep >= 0 ? fopen(path, "r") : NULL;
    char *kept = NULL;
    size_t n = 0;
    if (in) {
        FILE *mem = open_memstream(&kept, &n);
        char *line = NULL;
        size_t cap = 0;
        bool first = true;
        while (mem && getline(&line, &cap, in) > 0) {
            if (first || strtoll(line, NULL, 10) <= keep)
                fputs(line, mem);
            first = false;
        }
        free(line);
        fclose(in);
        if (!mem || fclose(mem) != 0) {
            free(kept);
            return nat_error(NAT_ERR_OOM, "log %s: out of memory", path);
        }
    }
    *out = fopen(path, "w");
    if (!*out) {
        free(kept);
        return nat_error(NAT_ERR_IO, "log %s: cannot write: %s", path, strerror(errno));
    }
    errno = 0;
    bool ok = fputs(kept && n ? kept : header, *out) >= 0 && fflush(*out) == 0;
    free(kept);
    return ok ? NAT_OK : write_error(path, errno);
}

nat_status nat_train_log_open(nat_train_log *log, const char *dir, int64_t resume_step, int64_t eval_keep)
{
    memset(log, 0, sizeof *log);
    int n1 = snprintf(log->steps_path, sizeof log->steps_path, "%s/train_log.csv", dir);
    int n2 = snprintf(log->evals_path, sizeof log->evals_path, "%s/eval_log.csv", dir);
    if (n1 < 0 || n2 < 0 || (size_t)n2 >= sizeof log->evals_path)
        return nat_error(NAT_ERR_INVALID_ARG, "log: directory %.80s... is too long a path", dir);
    nat_status s = reopen_trimmed(log->steps_path, step_header, resume_step, &log->steps);
    if (s == NAT_OK)
        s = reopen_trimmed(log->evals_path, eval_header, resume_step < 0 ? -1 : eval_keep, &log->evals);
    if (s != NAT_OK) {
        if (log->steps)
            fclose(log->steps);
        if (log->evals)
            fclose(log->evals);
        log->steps = log->evals = NULL;
    }
    return s;
}

/* fprintf's result and the flush: either failing means the row did not reach the file. */
static nat_status row_done(FILE *f, int printed, const char *path)
{
    if (printed < 0 || fflush(f) != 0)
        return write_error(path, errno);
    return NAT_OK;
}

nat_status nat_train_log_step(nat_train_log *log, int64_t step, double epoch, double loss, double lr, double grad_norm,
                              double images_per_s, double mem_mib, double peak_mib)
{
    if (!log->steps)
        return NAT_OK;
    errno = 0;
    int k = fprintf(log->steps, "%lld,%.4f,%.6f,%.6g,%.4f,%.1f,%.1f,%.1f\n", (long long)step, epoch, loss, lr, grad_norm,
                    images_per_s, mem_mib, peak_mib);
    return row_done(log->steps, k, log->steps_path);
}

nat_status nat_train_log_eval(nat_train_log *log, int64_t step, double epoch, const char *weights, int64_t images,
                              double top1, double top5, double loss, double seconds)
{
    if (!log->evals)
        return NAT_OK;
    errno = 0;
    int k = fprintf(log->evals, "%lld,%.4f,%s,%lld,%.4f,%.4f,%.6f,%.2f\n", (long long)step, epoch, weights,
                    (long long)images, top1, top5, loss, seconds);
    return row_done(log->evals, k, log->evals_path);
}

nat_status nat_train_log_close(nat_train_log *log)
{
    nat_status s = NAT_OK;
    errno = 0;
    if (log->steps && fclose(log->steps) != 0)
        s = write_error(log->steps_path, errno);
    errno = 0;
    if (log->evals && fclose(log->evals) != 0 && s == NAT_OK)
        s = write_error(log->evals_path, errno);
    log->steps = log->evals = NULL;
    return s;
}
