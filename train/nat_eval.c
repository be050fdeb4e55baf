/* train/nat_eval.c — nat-eval: evaluates a checkpoint (a nat-train checkpoint, or weights saved by
 * nat_model_save) on a dataset split and prints top-1 and top-5 accuracy, the loss, per-class accuracy,
 * the confusion matrix and images/s. The network comes from the checkpoint's nat.* metadata; the data
 * and evaluation settings from --config, else the checkpoint's stored config, else the defaults, with
 * --set overrides on top. Exit status: 0 done, 1 error, 2 bad command line or config. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nat/model.h"
#include "nat/safetensors.h"
#include "train/train.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: nat-eval --checkpoint FILE [--config FILE] [--set section.key=value ...] [--ema] [--split test|train]\n"
            "                [--tta none|flip|flip-shift]\n"
            "       nat-eval --checkpoint FILE [--ema] --export WEIGHTS\n"
            "Evaluates a checkpoint: top-1 and top-5 accuracy, loss, per-class accuracy, the confusion matrix and\n"
            "images/s.\n"
            "  --checkpoint FILE       a nat-train checkpoint (or run directory: its newest checkpoint), or a\n"
            "                          weights file written by nat_model_save\n"
            "  --config FILE           data and evaluation settings ([data], train.eval_batch_size, ...); default:\n"
            "                          the config stored in the checkpoint, else the defaults (Fashion-MNIST)\n"
            "  --set section.key=value override one key (repeatable), e.g. --set data.root=/data/imagenet\n"
            "                          --set train.eval_batch_size=64 --set data.test_limit=1000\n"
            "  --ema                   evaluate the EMA weights stored in a training checkpoint\n"
            "  --split test|train      which split (default test)\n"
            "  --tta none|flip|flip-shift\n"
            "                          test-time augmentation: classify each image by the mean softmax of its\n"
            "                          views: flip = the image and its mirror image (2 views), flip-shift = those\n"
            "                          two, each also shifted one pixel up, down, left and right (10 views);\n"
            "                          default none\n"
            "  --export FILE           write the weights (the model's, or the EMA's with --ema) as a plain weights\n"
            "                          file, which nat_model_load and examples/classify read, and exit\n"
            "                          without evaluating\n"
            "  --help                  this text\n"
            "Threads: train.threads or OMP_NUM_THREADS.\n");
}

static int fail(const char *what)
{
    fprintf(stderr, "nat-eval: %s%s%s\n", what ? what : "", what ? ": " : "", nat_error_message());
    return 1;
}

int main(int argc, char **argv)
{
    nat_train_passive_omp(argv);
    const char *ckpt = NULL, *config = NULL, *split = "test", *export_path = NULL, *tta_name = "none";
    const char **sets = calloc((size_t)argc, sizeof *sets);
    int n_sets = 0;
    bool ema = false;
    if (!sets)
        return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            free(sets);
            return 0;
        } else if (!strcmp(a, "--ema")) {
            ema = true;
        } else if (!strcmp(a, "--checkpoint") || !strcmp(a, "--config") || !strcmp(a, "--set") || !strcmp(a, "--split") ||
                   !strcmp(a, "--export") || !strcmp(a, "--tta")) {
            if (!next) {
                fprintf(stderr, "nat-eval: %s needs a value (try --help)\n", a);
                free(sets);
                return 2;
            }
            if (!strcmp(a, "--checkpoint"))
                ckpt = next;
            else if (!strcmp(a, "--config"))
                config = next;
            else if (!strcmp(a, "--set"))
                sets[n_sets++] = next;
            else if (!strcmp(a, "--export"))
                export_path = next;
            else if (!strcmp(a, "--tta"))
                tta_name = next;
            else
                split = next;
            i++;
        } else {
            fprintf(stderr, "nat-eval: unknown argument '%s' (try --help)\n", a);
            free(sets);
            return 2;
        }
    }
    nat_tta tta = {0};
    if (nat_tta_parse(tta_name, &tta.kind) != NAT_OK) {
        fprintf(stderr, "nat-eval: --tta: %s\n", nat_error_message());
        free(sets);
        return 2;
    }
    if (!ckpt || (strcmp(split, "test") && strcmp(split, "train"))) {
        fprintf(stderr, ckpt ? "nat-eval: --split must be test or train\n" : "nat-eval: --checkpoint is required\n");
        usage(stderr);
        free(sets);
        return 2;
    }

    char path[NAT_CFG_STR + 64];
    nat_config cfg; /* filled by nat_checkpoint_config */
    nat_status s = nat_checkpoint_resolve(ckpt, path, sizeof path);
    if (s == NAT_OK)
        s = nat_checkpoint_config(&cfg, config, path, false, NULL);
    if (s == NAT_OK)
        s = nat_config_set_all(&cfg, sets, n_sets);
    free(sets);
    if (s == NAT_OK)
        s = nat_config_resolve(&cfg);
    if (s != NAT_OK) {
        fprintf(stderr, "nat-eval: %s\n", nat_error_message());
        return s == NAT_ERR_IO ? 1 : 2;
    }
    nat_device dev;
    if (nat_train_device(&cfg, &dev) != NAT_OK) { /* before anything is read: no silent CPU fallback */
        fprintf(stderr, "nat-eval: %s\n", nat_error_message());
        return 1;
    }
    if (cfg.train.threads > 0)
        omp_set_num_threads(cfg.train.threads);

    int rc = 0;
    nat_st_file *f = NULL;
    nat_model *m = NULL;
    nat_dataset *ds = NULL;
    nat_loader *L = NULL;
    nat_ctx *ctx = NULL;
    nat_metrics met = {0};
    nat_model_desc d;
    if (nat_st_open(&f, path) || nat_model_desc_read(f, &d) || nat_model_new(&m, &d) || nat_checkpoint_read_weights(m, f, ema)) {
        rc = fail(NULL);
        goto done;
    }
    if (export_path) {
        /* Provenance in the file's metadata: which checkpoint, which weights, which step. */
        const char *step = nat_st_metadata(f, "train.step");
        const char *keys[3] = {"source", "source.weights", "source.step"};
        const char *vals[3] = {path, ema ? "ema" : "model", step ? step : "0"};
        if (nat_model_save(m, export_path, 3, keys, vals)) {
            rc = fail("--export"); /* the message names the file */
            goto done;
        }
        printf("nat-eval: wrote the %s weights of %s (%.3fM parameters) to %s\n", ema ? "EMA" : "model", path,
               (double)nat_model_param_count(m) / 1e6, export_path);
        goto done;
    }
    if (nat_model_to(m, dev)) {
        rc = fail(NULL);
        goto done;
    }
    nat_split sp = !strcmp(split, "train") ? NAT_SPLIT_TRAIN : NAT_SPLIT_TEST;
    if (nat_train_open_dataset(&cfg, sp, &ds) || nat_train_resolve_data(&cfg, ds)) {
        rc = fail(NULL);
        goto done;
    }
    int ch;
    nat_dataset_shape(ds, &ch, NULL, NULL);
    if (ch != d.in_chans || nat_dataset_classes(ds) != d.num_classes) {
        fprintf(stderr, "nat-eval: the checkpoint's model takes %d channel(s) and %d classes; %s has %d and %d\n",
                d.in_chans, d.num_classes, nat_dataset_name(ds), ch, nat_dataset_classes(ds));
        rc = 1;
        goto done;
    }
    if (nat_train_loader_new(&cfg, ds, false, &L) || nat_ctx_new(&ctx, dev) || nat_metrics_init(&met, d.num_classes)) {
        rc = fail(NULL);
        goto done;
    }
    nat_ctx_set_precision(ctx, nat_config_precision(&cfg));
    nat_train_tta_fill(&cfg, ch, tta.fill);
    const char *step = nat_st_metadata(f, "train.step");
    printf("nat-eval: %s%s (model %s%s%s, %.3fM parameters) on %s, %s split: %lld images at %dx%d, %d threads, "
           "device %s, precision %s, test-time augmentation %s (%d view%s)\n",
           path, ema ? " [EMA weights]" : "", d.name, step ? ", step " : "", step ? step : "",
           (double)nat_model_param_count(m) / 1e6, nat_dataset_name(ds), split, (long long)nat_dataset_count(ds),
           cfg.data.img_size, cfg.data.img_size, omp_get_max_threads(), nat_device_name(dev), cfg.train.precision,
           nat_tta_name(tta.kind), nat_tta_views(tta.kind), nat_tta_views(tta.kind) > 1 ? "s" : "");
    fflush(stdout);
    nat_train_signals_install(NAT_SIGNAL_STOP);
    double secs;
    bool complete;
    if (nat_evaluate(m, ctx, L, &met, &tta, nat_train_stop_flag(), &secs, &complete)) {
        rc = fail("evaluation");
        goto done;
    }
    if (!complete) {
        fprintf(stderr, "nat-eval: interrupted after %lld images\n", (long long)met.n);
        rc = 130;
        goto done;
    }
    nat_metrics_print(&met, ds, stdout);
    printf("top-1 %.2f%%  top-5 %.2f%%  loss %.4f  (%lld images in %.2f s: %.1f images/s)\n", nat_metrics_top1(&met),
           nat_metrics_top5(&met), nat_metrics_loss(&met), (long long)met.n, secs, (double)met.n / (secs > 0 ? secs : 1e-9));
done:
    nat_metrics_free(&met);
    nat_ctx_free(ctx);
    nat_loader_free(L);
    nat_dataset_free(ds);
    nat_model_free(m);
    nat_st_close(f);
    return rc;
}
