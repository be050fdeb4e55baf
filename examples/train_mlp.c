/* examples/train_mlp.c — a training loop written against nat's public API alone: trains a GELU MLP on
 * Fashion-MNIST (Debian's dataset-fashion-mnist) with AdamW, printing the mean loss of each epoch and an
 * ETA, then its test accuracy. It shows the pieces a C program strings together for its own loop: the
 * IDX reader, linear/GELU/cross-entropy with label smoothing, the tape, AdamW with parameter groups,
 * grad-norm clipping and per-step contexts. nat-train does the same for NAT models from a config. */
#define _POSIX_C_SOURCE 199309L /* clock_gettime */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h> /* clock_gettime: the example times itself */

#include "nat/idx.h"
#include "nat/ops.h"
#include "nat/optim.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct demo_opts {
    const char *data;
    int epochs, batch, hidden, limit;
    float lr, weight_decay, smoothing;
    unsigned long long seed;
} demo_opts;

static void usage(FILE *f)
{
    fprintf(f, "usage: train_mlp [options]\n"
               "Trains a 784-H-10 GELU MLP on Fashion-MNIST with AdamW and reports test accuracy.\n"
               "  --data DIR        folder with {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]\n"
               "                    (default /usr/share/datasets/fashion-mnist)\n"
               "  --epochs N        passes over the training set (default 3)\n"
               "  --batch N         batch size (default 128)\n"
               "  --hidden N        hidden width (default 256)\n"
               "  --lr X            peak learning rate, cosine-decayed to 0 (default 2e-3)\n"
               "  --weight-decay X  AdamW decoupled weight decay on weights, not biases (default 0.05)\n"
               "  --smoothing X     label smoothing (default 0.1)\n"
               "  --limit N         use only the first N training images (default all)\n"
               "  --seed N          seed of init and data order (default 0)\n");
}

static int parse_args(int argc, char **argv, demo_opts *o)
{
    *o = (demo_opts){"/usr/share/datasets/fashion-mnist", 3, 128, 256, 0, 2e-3f, 0.05f, 0.1f, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "train_mlp: unknown option or missing value: '%s' (try --help)\n", a);
            return 2;
        }
        const char *v = argv[++i];
        char *end;
        double x = strtod(v, &end);
        int bad = *end != '\0';
        if (!strcmp(a, "--data"))
            o->data = v, bad = 0;
        else if (!strcmp(a, "--epochs"))
            o->epochs = (int)x, bad |= x < 1;
        else if (!strcmp(a, "--batch"))
            o->batch = (int)x, bad |= x < 1;
        else if (!strcmp(a, "--hidden"))
            o->hidden = (int)x, bad |= x < 1;
        else if (!strcmp(a, "--limit"))
            o->limit = (int)x, bad |= x < 0;
        else if (!strcmp(a, "--lr"))
            o->lr = (float)x, bad |= !(x > 0);
        else if (!strcmp(a, "--weight-decay"))
            o->weight_decay = (float)x, bad |= !(x >= 0);
        else if (!strcmp(a, "--smoothing"))
            o->smoothing = (float)x, bad |= !(x >= 0 && x < 1);
        else if (!strcmp(a, "--seed"))
            o->seed = (unsigned long long)x, bad |= x < 0;
        else {
            fprintf(stderr, "train_mlp: unknown option '%s' (try --help)\n", a);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "train_mlp: bad value '%s' for %s (try --help)\n", v, a);
            return 2;
        }
    }
    return 0;
}

/* Loads images (scaled to [0,1], normalised with Fashion-MNIST's mean/std) and labels. */
static int load_split(const char *dir, const char *split, float **x, int32_t **y, int *n)
{
    char ipath[1024], lpath[1024];
    snprintf(ipath, sizeof ipath, "%s/%s-images-idx3-ubyte.gz", dir, split);
    snprintf(lpath, sizeof lpath, "%s/%s-labels-idx1-ubyte.gz", dir, split);
    nat_idx im, lb;
    if (nat_idx_load(ipath, &im) != NAT_OK) {
        fprintf(stderr, "train_mlp: %s\n  (install Debian's dataset-fashion-mnist, or pass --data DIR)\n",
                nat_error_message());
        return 1;
    }
    if (nat_idx_load(lpath, &lb) != NAT_OK) {
        fprintf(stderr, "train_mlp: %s\n", nat_error_message());
        nat_idx_free(&im);
        return 1;
    }
    if (im.ndim != 3 || lb.ndim != 1 || im.dims[0] != lb.dims[0] || im.dims[1] * im.dims[2] != 784) {
        fprintf(stderr, "train_mlp: %s and %s do not hold matching 28x28 images and labels\n", ipath, lpath);
        nat_idx_free(&im);
        nat_idx_free(&lb);
        return 1;
    }
    *n = (int)im.dims[0];
    *x = malloc((size_t)*n * 784 * sizeof **x);
    *y = malloc((size_t)*n * sizeof **y);
    for (size_t i = 0; i < (size_t)*n * 784; i++)
        (*x)[i] = ((float)im.data[i] / 255.0f - 0.2860f) / 0.3530f;
    for (int i = 0; i < *n; i++)
        (*y)[i] = lb.data[i];
    nat_idx_free(&im);
    nat_idx_free(&lb);
    return 0;
}

typedef struct mlp {
    nat_tensor *w1, *b1, *w2, *b2;
} mlp;

static nat_status mlp_forward(nat_ctx *ctx, const mlp *m, nat_tensor *x, nat_tensor **logits)
{
    nat_tensor *h;
    NAT_TRY(nat_linear(ctx, x, m->w1, m->b1, &h));
    NAT_TRY(nat_gelu(ctx, h, &h));
    return nat_linear(ctx, h, m->w2, m->b2, logits);
}

static int fail(const char *what)
{
    fprintf(stderr, "train_mlp: %s: %s\n", what, nat_error_message());
    return 1;
}

int main(int argc, char **argv)
{
    demo_opts o;
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc;
    float *xtr, *xte;
    int32_t *ytr, *yte;
    int ntr, nte;
    if (load_split(o.data, "train", &xtr, &ytr, &ntr) || load_split(o.data, "t10k", &xte, &yte, &nte))
        return 1;
    if (o.limit > 0 && o.limit < ntr)
        ntr = o.limit;
    if (o.batch > ntr) {
        fprintf(stderr, "train_mlp: --batch %d is larger than the %d training images\n", o.batch, ntr);
        return 2;
    }
    printf("train_mlp: Fashion-MNIST from %s: %d training, %d test images; MLP 784-%d-10, batch %d, %d epochs\n",
           o.data, ntr, nte, o.hidden, o.batch, o.epochs);

    nat_rng rng;
    nat_rng_seed(&rng, o.seed);
    mlp m;
    int64_t s_w1[2] = {o.hidden, 784}, s_b1[1] = {o.hidden}, s_w2[2] = {10, o.hidden}, s_b2[1] = {10};
    if (nat_tensor_new(&m.w1, NAT_F32, NAT_CPU, 2, s_w1) || nat_tensor_new(&m.b1, NAT_F32, NAT_CPU, 1, s_b1) ||
        nat_tensor_new(&m.w2, NAT_F32, NAT_CPU, 2, s_w2) || nat_tensor_new(&m.b2, NAT_F32, NAT_CPU, 1, s_b2))
        return fail("allocating the model");
    /* PyTorch's nn.Linear default: uniform(±1/sqrt(fan_in)). */
    nat_rng_fill_uniform(&rng, nat_tensor_f32(m.w1), 784 * (size_t)o.hidden, -1 / 28.0f, 1 / 28.0f);
    float a2 = 1.0f / sqrtf((float)o.hidden);
    nat_rng_fill_uniform(&rng, nat_tensor_f32(m.w2), 10 * (size_t)o.hidden, -a2, a2);
    nat_tensor *weights[2] = {m.w1, m.w2}, *biases[2] = {m.b1, m.b2}, *all[4] = {m.w1, m.b1, m.w2, m.b2};
    for (int i = 0; i < 4; i++)
        nat_set_requires_grad(all[i], true);
    nat_optim *opt;
    nat_optim_config cfg = nat_optim_adamw_config(0.9f, 0.999f, 1e-8f);
    if (nat_optim_new(&opt, &cfg) || nat_optim_add_group(opt, weights, 2, o.weight_decay) ||
        nat_optim_add_group(opt, biases, 2, 0.0f))
        return fail("optimizer");

    nat_ctx *ctx;
    if (nat_ctx_new(&ctx, NAT_CPU))
        return fail("context");
    int steps_per_epoch = ntr / o.batch; /* drop-last */
    long total = (long)steps_per_epoch * o.epochs, step = 0;
    uint32_t *order = malloc((size_t)ntr * sizeof *order);
    for (int i = 0; i < ntr; i++)
        order[i] = (uint32_t)i;
    int64_t xs[2] = {o.batch, 784};
    int32_t *labels = malloc((size_t)o.batch * sizeof *labels);
    double t_start = now_s();
    for (int ep = 1; ep <= o.epochs; ep++) {
        nat_rng_shuffle(&rng, order, (size_t)ntr);
        double epoch_loss = 0;
        for (int b = 0; b < steps_per_epoch; b++) {
            nat_tensor *x, *logits, *loss;
            if (nat_ctx_empty(ctx, &x, NAT_F32, 2, xs))
                return fail("batch");
            for (int i = 0; i < o.batch; i++) {
                uint32_t j = order[b * o.batch + i];
                memcpy(nat_tensor_f32(x) + (size_t)i * 784, xtr + (size_t)j * 784, 784 * sizeof(float));
                labels[i] = ytr[j];
            }
            if (mlp_forward(ctx, &m, x, &logits) || nat_cross_entropy(ctx, logits, labels, o.smoothing, &loss) ||
                nat_backward(ctx, loss))
                return fail("training step");
            float lossv = nat_tensor_f32(loss)[0];
            step++;
            /* Cosine decay to zero over the run. */
            float lr = o.lr * 0.5f * (1.0f + cosf(3.14159265f * (float)(step - 1) / (float)total));
            if (nat_clip_grad_norm(all, 4, 5.0f, NULL) || nat_optim_step(opt, lr))
                return fail("optimizer step");
            nat_optim_zero_grad(opt);
            nat_ctx_reset(ctx);
            epoch_loss += lossv;
        }
        double spent = now_s() - t_start;
        printf("epoch %d/%d  mean loss %.4f  %.0f images/s  ETA %.0f s\n", ep, o.epochs, epoch_loss / steps_per_epoch,
               (double)step * o.batch / spent, spent / ep * (o.epochs - ep));
        fflush(stdout);
    }
    double train_s = now_s() - t_start;

    /* Evaluation without the tape. */
    nat_ctx_set_grad_enabled(ctx, false);
    int correct = 0;
    for (int i0 = 0; i0 < nte; i0 += o.batch) {
        int nb = nte - i0 < o.batch ? nte - i0 : o.batch;
        int64_t es[2] = {nb, 784};
        nat_tensor *x, *logits;
        if (nat_ctx_empty(ctx, &x, NAT_F32, 2, es))
            return fail("eval batch");
        memcpy(nat_tensor_f32(x), xte + (size_t)i0 * 784, (size_t)nb * 784 * sizeof(float));
        if (mlp_forward(ctx, &m, x, &logits))
            return fail("evaluation");
        const float *l = nat_tensor_f32(logits);
        for (int i = 0; i < nb; i++) {
            int best = 0;
            for (int c = 1; c < 10; c++)
                if (l[i * 10 + c] > l[i * 10 + best])
                    best = c;
            correct += best == yte[i0 + i];
        }
        nat_ctx_reset(ctx);
    }
    nat_mem_stats ms = nat_mem_get_stats(NAT_CPU);
    printf("train_mlp: trained %ld steps in %.1f s (%.0f images/s); peak nat memory %.1f MiB\n", total, train_s,
           (double)total * o.batch / train_s, ms.peak / 1048576.0);
    printf("train_mlp: test accuracy %.2f%% (%d/%d)\n", 100.0 * correct / nte, correct, nte);

    nat_ctx_free(ctx);
    nat_optim_free(opt);
    for (int i = 0; i < 4; i++)
        nat_tensor_free(all[i]);
    free(order);
    free(labels);
    free(xtr);
    free(ytr);
    free(xte);
    free(yte);
    return 0;
}
