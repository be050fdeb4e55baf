/* train/nat_classify.c — nat-classify: the top-K classes of image files under a checkpoint (a weights
 * file from nat_model_save or scripts/nat_convert.py, or a nat-train checkpoint).
 *
 * Preprocessing is nat-eval's on an image folder (nat_train_eval_transforms, varying sizes): with
 * --config, that config's [data]; else the config stored in a training checkpoint; else, for 3-channel
 * models, timm's NAT/DiNAT evaluation (shorter side to floor(img_size / 0.875) bicubic, centre crop,
 * ImageNet mean/std), and for 1-channel models a resize to img_size with Fashion-MNIST's constants.
 * Labels: --labels FILE (one per line), else the checkpoint's `labels` metadata (the converter keeps
 * Hugging Face's id2label), else ImageNet-1k's names for 1000 classes, Fashion-MNIST's for a 10-class
 * 1-channel model, else "class K". An image that cannot be read is reported and skipped; the others
 * still run. Exit status: 0 all classified, 1 an image or the checkpoint failed, 2 bad command line.
 */
#define _POSIX_C_SOURCE 200809L /* strdup, strndup, clock_gettime */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "nat/data.h"
#include "nat/model.h"
#include "nat/ops.h"
#include "nat/safetensors.h"
#include "train/train.h"

#ifndef NAT_DATA_DIR
#define NAT_DATA_DIR "/usr/share/nat"
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "usage: nat-classify --checkpoint FILE [--top K] [--labels FILE] [--config FILE] [--set k=v ...] [--ema]\n"
            "                    [--json] [--save FILE] IMAGE...\n"
            "       nat-classify --checkpoint FILE --tensor FILE [--save FILE] [--json]\n"
            "Prints the top-K classes of each image with their probabilities, and images/s.\n"
            "  --checkpoint FILE  weights (nat_model_save, scripts/nat_convert.py) or a nat-train checkpoint/run directory\n"
            "  --top K            classes per image (default 5)\n"
            "  --labels FILE      class names, one per line (default: the checkpoint's, else ImageNet-1k's for 1000\n"
            "                     classes, Fashion-MNIST's for 10 classes and 1 channel, else class numbers)\n"
            "  --config FILE      preprocessing from this config's [data] (img_size, crop_pct, interpolation, mean,\n"
            "                     std), as nat-eval uses it on an image folder; default: the checkpoint's stored config,\n"
            "                     else timm's NAT evaluation for 3 channels (crop_pct 0.875, bicubic, ImageNet mean/std)\n"
            "  --set k=v          override a config key (repeatable), e.g. --set data.crop_pct=1\n"
            "  --ema              use a training checkpoint's EMA weights\n"
            "  --json             one JSON document on stdout instead of text\n"
            "  --save FILE        write the preprocessed inputs (`input` [N, C, H, W]) and `logits` as safetensors\n"
            "  --tensor FILE      classify the `input` tensor of a safetensors file instead of image files\n"
            "  --help             this text\n"
            "Exit status: 0 every image classified, 1 an image (or the checkpoint) failed, 2 bad command line.\n");
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Class names: n strings (owned, freed by labels_free), or NULL entries where unknown. */
typedef struct labels {
    char **v;
    int n;
} labels;

static void labels_free(labels *l)
{
    for (int i = 0; l->v && i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
}

/* Splits text at newlines into l (n entries); fails when the count differs. */
static nat_status labels_from_text(labels *l, const char *text, int n, const char *what)
{
    l->v = calloc((size_t)n, sizeof *l->v);
    l->n = n;
    if (!l->v)
        return nat_error(NAT_ERR_OOM, "labels: no memory");
    int k = 0;
    for (const char *p = text; *p && k <= n;) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        while (len && (p[len - 1] == '\r' || p[len - 1] == ' '))
            len--;
        if (k < n && !(l->v[k] = strndup(p, len)))
            return nat_error(NAT_ERR_OOM, "labels: no memory");
        k++;
        p = e ? e + 1 : p + strlen(p);
    }
    if (k != n)
        return nat_error(NAT_ERR_FORMAT, "%s: %d class names for a model of %d classes", what, k, n);
    return NAT_OK;
}

static nat_status labels_from_file(labels *l, const char *path, int n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return nat_error(NAT_ERR_IO, "labels %s: cannot open", path);
    char *text = NULL;
    size_t cap = 0, len = 0, got;
    char buf[8192];
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
        if (len + got + 1 > cap) {
            cap = (len + got + 1) * 2;
            char *t = realloc(text, cap);
            if (!t) {
                free(text);
                fclose(f);
                return nat_error(NAT_ERR_OOM, "labels %s: no memory", path);
            }
            text = t;
        }
        memcpy(text + len, buf, got);
        len += got;
    }
    fclose(f);
    if (!text)
        return nat_error(NAT_ERR_FORMAT, "labels %s: empty file", path);
    text[len] = 0;
    if (len && text[len - 1] == '\n')
        text[len - 1] = 0; /* a final newline ends the last name */
    nat_status s = labels_from_text(l, text, n, path);
    free(text);
    return s;
}

/* The default labels described at the top of the file; a missing ImageNet file only loses the names. */
static nat_status labels_default(labels *l, const nat_st_file *f, const nat_model_desc *d)
{
    const char *meta = nat_st_metadata(f, "labels");
    if (meta)
        return labels_from_text(l, meta, d->num_classes, nat_st_path(f));
    if (d->num_classes == 10 && d->in_chans == 1) {
        const char *const *names = nat_fashion_mnist_class_names();
        l->v = calloc(10, sizeof *l->v);
        l->n = 10;
        for (int i = 0; l->v && i < 10; i++)
            l->v[i] = strdup(names[i]);
        return l->v ? NAT_OK : nat_error(NAT_ERR_OOM, "labels: no memory");
    }
    if (d->num_classes == 1000) {
        /* The build tree's copy first (tests run uninstalled), then the installed one. */
        const char *env = getenv("NAT_DATA_DIR");
        const char *dirs[3] = {env, NAT_SOURCE_DATA_DIR, NAT_DATA_DIR};
        for (int i = 0; i < 3; i++) {
            char p[4096];
            if (!dirs[i])
                continue;
            snprintf(p, sizeof p, "%s/imagenet_classes.txt", dirs[i]);
            FILE *t = fopen(p, "rb");
            if (t) {
                fclose(t);
                return labels_from_file(l, p, 1000);
            }
        }
    }
    return NAT_OK;
}

typedef struct result {
    const char *path;
    char error[512];
    int w, h;
    int *top;
    float *prob;
} result;

/* The whole tool; sets and images have room for argc entries each and are main's to free, so every
 * early return leaves nothing behind. */
static int classify(int argc, char **argv, const char **sets, const char **images)
{
    const char *ckpt = NULL, *labels_path = NULL, *config = NULL, *save = NULL, *tensor_path = NULL;
    int n_sets = 0, n_images = 0, top = 5;
    bool json = false, ema = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--ema")) {
            ema = true;
        } else if (!strcmp(a, "--checkpoint") || !strcmp(a, "--top") || !strcmp(a, "--labels") || !strcmp(a, "--config") ||
                   !strcmp(a, "--set") || !strcmp(a, "--save") || !strcmp(a, "--tensor")) {
            if (!next) {
                fprintf(stderr, "nat-classify: %s needs a value (try --help)\n", a);
                return 2;
            }
            if (!strcmp(a, "--checkpoint"))
                ckpt = next;
            else if (!strcmp(a, "--labels"))
                labels_path = next;
            else if (!strcmp(a, "--config"))
                config = next;
            else if (!strcmp(a, "--set"))
                sets[n_sets++] = next;
            else if (!strcmp(a, "--save"))
                save = next;
            else if (!strcmp(a, "--tensor"))
                tensor_path = next;
            else {
                char *end;
                long k = strtol(next, &end, 10);
                if (*end || k < 1 || k > 100000) {
                    fprintf(stderr, "nat-classify: --top '%s' is not a positive integer\n", next);
                    return 2;
                }
                top = (int)k;
            }
            i++;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "nat-classify: unknown option '%s' (try --help)\n", a);
            return 2;
        } else {
            images[n_images++] = a;
        }
    }
    if (!ckpt || (n_images == 0) == !tensor_path) {
        fprintf(stderr, !ckpt ? "nat-classify: --checkpoint is required\n"
                              : "nat-classify: give image files, or --tensor FILE (not both)\n");
        usage(stderr);
        return 2;
    }

    /* The checkpoint and its network. */
    char path[NAT_CFG_STR + 64];
    nat_st_file *f = NULL;
    nat_model *m = NULL;
    nat_model_desc d;
    if (nat_checkpoint_resolve(ckpt, path, sizeof path) || nat_st_open(&f, path) || nat_model_desc_read(f, &d) ||
        nat_model_new(&m, &d) || nat_checkpoint_read_weights(m, f, ema)) {
        fprintf(stderr, "nat-classify: %s\n", nat_error_message());
        nat_model_free(m);
        nat_st_close(f);
        return 1;
    }

    /* Preprocessing: --config, else the stored config, else the model's usual evaluation. */
    nat_config cfg; /* filled by nat_checkpoint_config */
    nat_status s = NAT_OK;
    /* Everything below is released at `out`, whichever way the run ends. */
    labels lab = {0};
    int n_in = n_images, rc = 0;
    nat_tensor *given = NULL, *x = NULL, *all_in = NULL, *all_logits = NULL;
    result *res = NULL;
    nat_ctx *ctx = NULL;
    bool stored;
    s = nat_checkpoint_config(&cfg, config, path, false, &stored);
    if (s == NAT_OK && !config && !stored) { /* a plain weights file: the model's usual evaluation */
        if (d.in_chans == 3) {
            snprintf(cfg.data.format, sizeof cfg.data.format, "folder");
            snprintf(cfg.data.interpolation, sizeof cfg.data.interpolation, "bicubic");
            cfg.data.crop_pct = 0.875f;
        } else {
            cfg.data.crop_pct = 1.0f; /* a 28x28 Fashion-MNIST image stays as it is */
        }
    }
    if (s == NAT_OK)
        s = nat_config_set_all(&cfg, sets, n_sets);
    if (s != NAT_OK) {
        fprintf(stderr, "nat-classify: %s\n", nat_error_message());
        rc = 2;
        goto out;
    }
    if (cfg.train.threads > 0)
        omp_set_num_threads(cfg.train.threads);
    if (cfg.data.img_size <= 0)
        cfg.data.img_size = d.img_size;
    const int C = d.in_chans, S = cfg.data.img_size;
    nat_transform tf[4];
    int n_tf;
    /* Files vary in size: the image-folder path, whichever dataset the config names. */
    nat_train_eval_transforms(&cfg, C, true, 0, 0, tf, &n_tf);
    if (cfg.data.mean.n && cfg.data.mean.n != C) {
        fprintf(stderr, "nat-classify: data.mean/std have %d values for a %d-channel model\n", cfg.data.mean.n, C);
        rc = 2;
        goto out;
    }

    s = labels_path ? labels_from_file(&lab, labels_path, d.num_classes) : labels_default(&lab, f, &d);
    if (s != NAT_OK) {
        fprintf(stderr, "nat-classify: %s\n", nat_error_message());
        rc = labels_path ? 2 : 1;
        goto out;
    }
    if (top > d.num_classes)
        top = d.num_classes;

    /* Inputs: the tensor file's batch, or the image files one by one. */
    if (tensor_path) {
        nat_st_file *tf_file = NULL;
        nat_dtype dt;
        int nd;
        int64_t shape[8];
        int idx = -1;
        s = nat_st_open(&tf_file, tensor_path);
        if (s == NAT_OK && (idx = nat_st_find(tf_file, "input")) < 0)
            s = nat_error(NAT_ERR_FORMAT, "%s: no tensor named 'input'", tensor_path);
        if (s == NAT_OK)
            s = nat_st_info(tf_file, idx, &dt, &nd, shape);
        if (s == NAT_OK && (nd != 4 || shape[1] != C))
            s = nat_error(NAT_ERR_SHAPE, "%s: input must be [N, %d, H, W]", tensor_path, C);
        if (s == NAT_OK)
            s = nat_tensor_new(&given, NAT_F32, NAT_CPU, 4, shape);
        if (s == NAT_OK)
            s = nat_st_read_f32(tf_file, "input", nat_tensor_f32(given), nat_tensor_numel(given));
        nat_st_close(tf_file);
        if (s != NAT_OK) {
            fprintf(stderr, "nat-classify: %s\n", nat_error_message());
            rc = 1;
            goto out;
        }
        n_in = (int)shape[0];
    }
    res = calloc((size_t)n_in, sizeof *res);
    int64_t xs[4] = {1, C, S, S};
    if (!res || nat_tensor_new(&x, NAT_F32, NAT_CPU, 4, xs) || nat_ctx_new(&ctx, NAT_CPU)) {
        fprintf(stderr, "nat-classify: %s\n", nat_error_message());
        rc = 1;
        goto out;
    }
    if (given) {
        nat_tensor_free(x);
        x = NULL;
    }
    if (save) {
        int64_t is[4] = {n_in, C, given ? given->shape[2] : S, given ? given->shape[3] : S};
        int64_t ls[2] = {n_in, d.num_classes};
        if (nat_tensor_new(&all_in, NAT_F32, NAT_CPU, 4, is) || nat_tensor_new(&all_logits, NAT_F32, NAT_CPU, 2, ls)) {
            fprintf(stderr, "nat-classify: %s\n", nat_error_message());
            rc = 1;
            goto out;
        }
    }
    nat_ctx_set_grad_enabled(ctx, false);
    nat_image img = {0}, tmp = {0};
    int failed = 0, done = 0;
    double t0 = now_s();
    for (int i = 0; i < n_in; i++) {
        result *r = &res[i];
        r->path = given ? tensor_path : images[i];
        nat_tensor *in = NULL;
        if (given) {
            int64_t one[4] = {1, C, given->shape[2], given->shape[3]};
            s = nat_tensor_new(&in, NAT_F32, NAT_CPU, 4, one);
            if (s == NAT_OK)
                memcpy(nat_tensor_f32(in), nat_tensor_f32(given) + (size_t)i * nat_tensor_numel(in),
                       (size_t)nat_tensor_numel(in) * sizeof(float));
        } else {
            s = nat_image_load(r->path, C, &img);
            if (s == NAT_OK) {
                r->w = img.w;
                r->h = img.h;
                s = nat_transforms_apply(tf, n_tf, &img, &tmp, NULL);
                if (s == NAT_OK && (img.h != S || img.w != S))
                    s = nat_error(NAT_ERR_SHAPE, "preprocessing gave %dx%d, not %dx%d", img.w, img.h, S, S);
                if (s != NAT_OK)
                    s = nat_error_context(s, "%s", r->path);
            }
            if (s == NAT_OK)
                memcpy(nat_tensor_f32(x), img.data, (size_t)C * S * S * sizeof(float));
            in = x;
        }
        nat_tensor *logits = NULL, *prob = NULL;
        if (s == NAT_OK)
            s = nat_model_forward(m, ctx, in, false, NULL, &logits);
        if (s == NAT_OK)
            s = nat_softmax(ctx, logits, &prob);
        if (s != NAT_OK) {
            snprintf(r->error, sizeof r->error, "%s", nat_error_message());
            failed++;
            if (!json)
                fprintf(stderr, "nat-classify: %s\n", r->error);
        } else {
            const float *p = nat_tensor_f32(prob);
            r->top = calloc((size_t)top, sizeof *r->top);
            r->prob = calloc((size_t)top, sizeof *r->prob);
            for (int t = 0; r->top && r->prob && t < top; t++) { /* selection: K is small */
                int best = -1;
                for (int k = 0; k < d.num_classes; k++) {
                    bool used = false;
                    for (int u = 0; u < t; u++)
                        used |= r->top[u] == k;
                    if (!used && (best < 0 || p[k] > p[best]))
                        best = k;
                }
                r->top[t] = best;
                r->prob[t] = p[best];
            }
            if (all_in) {
                size_t ni = (size_t)nat_tensor_numel(in), nl = (size_t)d.num_classes;
                memcpy(nat_tensor_f32(all_in) + (size_t)done * ni, nat_tensor_f32(in), ni * sizeof(float));
                memcpy(nat_tensor_f32(all_logits) + (size_t)done * nl, nat_tensor_f32(logits), nl * sizeof(float));
            }
            done++;
        }
        if (given)
            nat_tensor_free(in);
        nat_ctx_reset(ctx);
    }
    double secs = now_s() - t0;
    nat_image_free(&img);
    nat_image_free(&tmp);

    if (save && done > 0) {
        /* Only the images that went through, in order: shrink the batch dimension to `done`. */
        nat_st_writer *w = NULL;
        nat_tensor *vi = NULL, *vl = NULL;
        int64_t is[4] = {done, C, all_in->shape[2], all_in->shape[3]}, ls[2] = {done, d.num_classes};
        s = nat_tensor_new(&vi, NAT_F32, NAT_CPU, 4, is);
        if (s == NAT_OK)
            s = nat_tensor_new(&vl, NAT_F32, NAT_CPU, 2, ls);
        if (s == NAT_OK) {
            memcpy(nat_tensor_f32(vi), nat_tensor_f32(all_in), (size_t)nat_tensor_numel(vi) * sizeof(float));
            memcpy(nat_tensor_f32(vl), nat_tensor_f32(all_logits), (size_t)nat_tensor_numel(vl) * sizeof(float));
            s = nat_st_writer_new(&w);
        }
        if (s == NAT_OK)
            s = nat_st_writer_add(w, "input", vi);
        if (s == NAT_OK)
            s = nat_st_writer_add(w, "logits", vl);
        if (s == NAT_OK)
            s = nat_st_writer_save(w, save);
        nat_st_writer_free(w);
        nat_tensor_free(vi);
        nat_tensor_free(vl);
        if (s != NAT_OK) {
            fprintf(stderr, "nat-classify: %s\n", nat_error_message());
            failed++;
        }
    }

    const double ips = secs > 0 ? done / secs : 0.0;
    if (json) {
        cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "images");
        cJSON_AddStringToObject(root, "checkpoint", path);
        cJSON_AddStringToObject(root, "model", d.name);
        cJSON_AddNumberToObject(root, "classes", d.num_classes);
        for (int i = 0; i < n_in; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "path", res[i].path);
            if (res[i].error[0]) {
                cJSON_AddStringToObject(o, "error", res[i].error);
            } else {
                cJSON *ts = cJSON_AddArrayToObject(o, "top");
                for (int t = 0; t < top; t++) {
                    cJSON *e = cJSON_CreateObject();
                    int k = res[i].top[t];
                    cJSON_AddNumberToObject(e, "class", k);
                    if (lab.v && lab.v[k])
                        cJSON_AddStringToObject(e, "label", lab.v[k]);
                    cJSON_AddNumberToObject(e, "prob", res[i].prob[t]);
                    cJSON_AddItemToArray(ts, e);
                }
            }
            cJSON_AddItemToArray(arr, o);
        }
        cJSON_AddNumberToObject(root, "failed", failed);
        cJSON_AddNumberToObject(root, "seconds", secs);
        cJSON_AddNumberToObject(root, "images_per_second", ips);
        char *out = cJSON_Print(root);
        if (out)
            printf("%s\n", out);
        free(out);
        cJSON_Delete(root);
    } else {
        for (int i = 0; i < n_in; i++) {
            if (res[i].error[0])
                continue;
            if (given)
                printf("%s [%d]:\n", res[i].path, i);
            else
                printf("%s (%dx%d):\n", res[i].path, res[i].w, res[i].h);
            for (int t = 0; t < top; t++) {
                int k = res[i].top[t];
                if (lab.v && lab.v[k])
                    printf("  %2d. %.4f  %s (%d)\n", t + 1, res[i].prob[t], lab.v[k], k);
                else
                    printf("  %2d. %.4f  class %d\n", t + 1, res[i].prob[t], k);
            }
        }
        printf("%d image(s) classified with %s (%s, %d classes) in %.3f s: %.1f images/s%s\n", done, path, d.name,
               d.num_classes, secs, ips, failed ? "; some failed (see above)" : "");
    }
    rc = failed ? 1 : 0;
out:
    for (int i = 0; res && i < n_in; i++) {
        free(res[i].top);
        free(res[i].prob);
    }
    free(res);
    labels_free(&lab);
    nat_tensor_free(x);
    nat_tensor_free(given);
    nat_tensor_free(all_in);
    nat_tensor_free(all_logits);
    nat_ctx_free(ctx);
    nat_model_free(m);
    nat_st_close(f);
    return rc;
}

int main(int argc, char **argv)
{
    nat_train_passive_omp(argv);
    const char **sets = calloc((size_t)argc, sizeof *sets), **images = calloc((size_t)argc, sizeof *images);
    int rc = sets && images ? classify(argc, argv, sets, images) : 1;
    free((void *)sets);
    free((void *)images);
    return rc;
}
