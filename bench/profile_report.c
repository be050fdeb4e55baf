/* bench/profile_report.c — nat-profile's output: the summary, the per-layer table and the CSV row
 * (columns in nat_profile_csv_header; docs/profile.md describes each). */
#define _POSIX_C_SOURCE 200809L
#include <omp.h> /* omp_get_max_threads */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "bench/profile.h"
#include "core/cpu/isa.h"
#include "core/cpu/onednn.h"

#define MIB (1024.0 * 1024.0)

static const char *attn_name(const nat_profile_opts *o)
{
    if (o->desc.attention == NAT_ATTN_WINDOW)
        return "window";
    return nat_profile_na_impl_name(o->na_impl);
}

static const char *precision_name(nat_precision p)
{
    return p == NAT_PREC_BF16 ? "bf16" : p == NAT_PREC_F16 ? "f16" : "f32";
}

/* A row that is not a part of the network: one time, no forward/backward split. */
static bool single_time(const nat_profile_row *r)
{
    return !strcmp(r->name, "optimizer") || !strncmp(r->name, "other", 5);
}

void nat_profile_print(FILE *f, const nat_profile_opts *o, const nat_profile_result *r)
{
    fprintf(f, "%s (%s%s) %s, batch %d, %dx%d, %s %s, %d threads\n", o->label,
            o->desc.attention == NAT_ATTN_WINDOW ? "window attention" : "NA ", o->desc.attention == NAT_ATTN_WINDOW ? "" : nat_profile_na_impl_name(o->na_impl),
            o->train ? "training" : "inference", o->batch, o->res, o->res, nat_device_name(o->dev), precision_name(o->precision),
            omp_get_max_threads());
    if (o->dev.kind == NAT_DEV_CPU) /* which code path ran: a slow one shows here */
        fprintf(f, "  CPU kernels: oneDNN %s at ISA %s; GEMM f32 %s, bf16 %s; NA bf16 %s\n", nat_dnn_version_string(),
                nat_dnn_isa_name(), nat_dnn_gemm_impl(false), nat_dnn_gemm_impl(true),
                nat_cpu_bf16_vector_native() ? "vdpbf16ps" : "emulated (f32 kernels)");
    fprintf(f, "  step: median %.1f ms (min %.1f, max %.1f) over %d steps; first step %.1f ms\n", r->step_median_s * 1e3,
            r->step_min_s * 1e3, r->step_max_s * 1e3, o->steps, r->first_step_s * 1e3);
    fprintf(f, "  throughput: %.2f images/s; %.2fM params, %.3f GMACs per image, %.1f GFLOP per image %s\n",
            r->images_per_s, (double)r->params / 1e6, (double)r->macs_per_image / 1e9, r->flop_per_image / 1e9,
            o->train ? "(2 x MACs x 3: forward + backward)" : "(2 x MACs)");
    fprintf(f, "  compute: %.1f GFLOP/s = %.1f%% of the %.1f GFLOP/s sgemm roofline (model FLOP utilisation)\n", r->gflops,
            100.0 * r->mfu, o->roofline_gflops);
    fprintf(f, "  memory: allocator peak %.1f MiB (persistent %.1f MiB: parameters%s); process RSS peak %.1f MiB\n",
            (double)r->alloc_peak / MIB, (double)r->alloc_persistent / MIB,
            o->train ? ", gradients, AdamW moments" : "", (double)r->rss_peak / MIB);
    if (!r->n_rows)
        return;
    fprintf(f, "  per layer (the traced step of median time: %.1f ms, %+.1f%% against the median step):\n",
            r->traced_total_s * 1e3, 100.0 * r->traced_overhead);
    fprintf(f, "  %-24s %9s %9s %9s %6s %9s %11s\n", "part", "fwd ms", "bwd ms", "total ms", "share", "act MiB", "params");
    double sf = 0, sb = 0;
    int64_t sa = 0, sp = 0;
    for (int i = 0; i < r->n_rows; i++) {
        const nat_profile_row *w = &r->rows[i];
        double tot = w->fwd_s + w->bwd_s;
        char fw[16], bw[16], act[16], par[16] = "";
        snprintf(fw, sizeof fw, single_time(w) ? "" : "%.1f", w->fwd_s * 1e3);
        snprintf(bw, sizeof bw, single_time(w) || !o->train ? "" : "%.1f", w->bwd_s * 1e3);
        snprintf(act, sizeof act, single_time(w) ? "" : "%.1f", (double)w->act_bytes / MIB);
        if (w->params)
            snprintf(par, sizeof par, "%lld", (long long)w->params);
        fprintf(f, "  %-24s %9s %9s %9.1f %5.1f%% %9s %11s\n", w->name, fw, bw, tot * 1e3, 100.0 * tot / r->traced_total_s,
                act, par);
        sf += w->fwd_s;
        sb += w->bwd_s;
        sa += w->act_bytes;
        sp += w->params;
    }
    fprintf(f, "  %-24s %9s %9s %9.1f %5.1f%% %9.1f %11lld\n", "total", "", "", (sf + sb) * 1e3,
            100.0 * (sf + sb) / r->traced_total_s, (double)sa / MIB, (long long)sp);
}

/* ---- CSV ---- */

static const char *const COLUMNS =
    "date_utc,cpu,threads,model,attention,na_impl,mode,device,dtype,batch,res,params,gmacs_per_image,"
    "gflop_per_image,steps,step_ms_median,step_ms_min,step_ms_max,images_per_s,gflops,roofline_gflops,mfu,"
    "alloc_peak_mib,alloc_persistent_mib,rss_peak_mib,loadavg1";

void nat_profile_csv_header(FILE *f) { fprintf(f, "%s\n", COLUMNS); }

/* Copies s into buf with commas and line breaks replaced, so a field never splits the row. */
static const char *field(const char *s, char *buf, size_t cap)
{
    size_t n = 0;
    for (; s && *s && n + 1 < cap; s++)
        buf[n++] = *s == ',' || *s == '\n' || *s == '\r' || *s == '"' ? ';' : *s;
    buf[n] = 0;
    return buf;
}

static void cpu_name(char *buf, size_t cap)
{
    snprintf(buf, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (!strncmp(line, "model name", 10) && colon) {
            colon += 2;
            colon[strcspn(colon, "\n")] = 0;
            snprintf(buf, cap, "%s", colon);
            break;
        }
    }
    fclose(f);
}

static double loadavg1(void)
{
    double v = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

void nat_profile_csv_row(FILE *f, const nat_profile_opts *o, const nat_profile_result *r)
{
    char date[32], cpu[128], cpuf[128], label[80];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &tm);
    cpu_name(cpu, sizeof cpu);
    fprintf(f, "%s,%s,%d,%s,%s,%s,%s,%s,%s,%d,%d,%lld,%.4f,%.3f,%d,%.2f,%.2f,%.2f,%.4f,%.2f,%.1f,%.4f,%.1f,%.1f,%.1f,%.2f\n",
            date, field(cpu, cpuf, sizeof cpuf), omp_get_max_threads(), field(o->label, label, sizeof label),
            o->desc.attention == NAT_ATTN_WINDOW ? "window" : "na", attn_name(o), o->train ? "train" : "infer",
            nat_device_name(o->dev), precision_name(o->precision), o->batch,
            o->res, (long long)r->params, (double)r->macs_per_image / 1e9, r->flop_per_image / 1e9, o->steps,
            r->step_median_s * 1e3, r->step_min_s * 1e3, r->step_max_s * 1e3, r->images_per_s, r->gflops,
            o->roofline_gflops, r->mfu, (double)r->alloc_peak / MIB, (double)r->alloc_persistent / MIB,
            (double)r->rss_peak / MIB, loadavg1());
}

nat_status nat_profile_csv_append(const char *path, const nat_profile_opts *o, const nat_profile_result *r)
{
    struct stat st;
    bool fresh = stat(path, &st) != 0 || st.st_size == 0;
    FILE *f = fopen(path, "a");
    if (!f)
        return nat_error(NAT_ERR_IO, "profile: cannot open %s for appending", path);
    if (fresh)
        nat_profile_csv_header(f);
    nat_profile_csv_row(f, o, r);
    if (fclose(f) != 0)
        return nat_error(NAT_ERR_IO, "profile: writing %s failed", path);
    return NAT_OK;
}
