/* train/train_log.c — see train/train_log.h. */
#define _POSIX_C_SOURCE 200809L
#include "train/train_log.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static const char *const step_header = "step,epoch,loss,lr,grad_norm,images_per_s,mem_mib,peak_mib\n";
static const char *const eval_header = "step,epoch,weights,images,top1,top5,loss,seconds\n";

/* Rewrites `path` keeping its header and the rows whose first field (the step) is <= keep, then opens it
 * for appending. A missing file starts anew. */
static FILE *reopen_trimmed(const char *path, const char *header, int64_t keep)
{
    FILE *in = fopen(path, "r");
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
        if (mem)
            fclose(mem);
    }
    FILE *out = fopen(path, "w");
    if (!out) {
        free(kept);
        return NULL;
    }
    fputs(kept && n ? kept : header, out);
    free(kept);
    fflush(out);
    return out;
}

nat_status nat_train_log_open(nat_train_log *log, const char *dir, int64_t resume_step)
{
    char p1[1024], p2[1024];
    snprintf(p1, sizeof p1, "%s/train_log.csv", dir);
    snprintf(p2, sizeof p2, "%s/eval_log.csv", dir);
    log->steps = resume_step < 0 ? fopen(p1, "w") : reopen_trimmed(p1, step_header, resume_step);
    if (log->steps && resume_step < 0)
        fputs(step_header, log->steps);
    log->evals = resume_step < 0 ? fopen(p2, "w") : reopen_trimmed(p2, eval_header, resume_step);
    if (log->evals && resume_step < 0)
        fputs(eval_header, log->evals);
    if (!log->steps || !log->evals) {
        int e = errno;
        nat_train_log_close(log);
        return nat_error(NAT_ERR_IO, "log: cannot write %s: %s", !log->steps ? p1 : p2, strerror(e));
    }
    return NAT_OK;
}

void nat_train_log_step(nat_train_log *log, int64_t step, double epoch, double loss, double lr, double grad_norm,
                        double images_per_s, double mem_mib, double peak_mib)
{
    if (!log->steps)
        return;
    fprintf(log->steps, "%lld,%.4f,%.6f,%.6g,%.4f,%.1f,%.1f,%.1f\n", (long long)step, epoch, loss, lr, grad_norm,
            images_per_s, mem_mib, peak_mib);
    fflush(log->steps);
}

void nat_train_log_eval(nat_train_log *log, int64_t step, double epoch, const char *weights, int64_t images, double top1,
                        double top5, double loss, double seconds)
{
    if (!log->evals)
        return;
    fprintf(log->evals, "%lld,%.4f,%s,%lld,%.4f,%.4f,%.6f,%.2f\n", (long long)step, epoch, weights, (long long)images,
            top1, top5, loss, seconds);
    fflush(log->evals);
}

void nat_train_log_close(nat_train_log *log)
{
    if (log->steps)
        fclose(log->steps);
    if (log->evals)
        fclose(log->evals);
    log->steps = log->evals = NULL;
}
