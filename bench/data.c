/* bench/data.c — nat-bench data: images/s the loader delivers, on two workloads.
 *
 *  - Fashion-MNIST train (Debian's package), 1x28x28, random crop 28 with padding 4 + horizontal flip,
 *    batch 128 — the small-image case, where per-batch overheads show;
 *  - an image folder of JPEGs at 224x224 this benchmark writes into a temporary directory (synthetic
 *    scenes: gradients, discs and noise, quality 90, about the bytes of a photo of that size), random-
 *    resized crop 224 + flip + ImageNet normalisation, batch 32 — the decode-bound case NAT trains on.
 *
 * Each runs with the batches built in the calling thread (workers 0, the baseline) and with 1 and 2
 * worker threads; the consumer only takes batches, so this is the loader's ceiling. Figures are medians
 * over --reps runs. The loader must deliver at least 10x the images/s of a training step; the printout
 * compares against the training rates given by --train-ips-mnist and --train-ips-224.
 */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stb_image_write.h> /* stbi_write_jpg (Debian's libstb) */

#include "nat/data.h"
#include "bench/bench.h"
#include "train/train.h"

typedef struct bench_cfg {
    int reps, mnist_batches, folder_images, folder_epochs;
    double train_mnist, train_224;
    const char *folder; /* an existing folder to use instead of generating one */
} bench_cfg;

/* Median images/s of `reps` runs of `batches` batches, timed from the loader's creation (so batches
 * prefetched before the first one is taken are not free). */
static nat_status measure(const nat_dataset *ds, nat_loader_opts o, int64_t batches, int reps, double *ips)
{
    double *v = malloc((size_t)reps * sizeof *v);
    if (!v)
        return nat_error(NAT_ERR_OOM, "bench data: no memory");
    nat_status s = NAT_OK;
    for (int r = 0; r < reps && s == NAT_OK; r++) {
        o.seed = (uint64_t)r;
        double t0 = nat_wall_now();
        nat_loader *L;
        s = nat_loader_new(ds, &o, &L);
        if (s != NAT_OK)
            break;
        int64_t images = 0;
        for (int64_t i = 0; i < batches && s == NAT_OK; i++) {
            nat_batch b;
            s = nat_loader_next(L, &b);
            images += b.n;
        }
        v[r] = (double)images / (nat_wall_now() - t0);
        nat_loader_free(L);
    }
    if (s == NAT_OK)
        *ips = nat_bench_median(v, reps);
    free(v);
    return s;
}

/* A 224x224 RGB scene from rng: two gradients, a few discs, pixel noise. */
static void scene(nat_rng *rng, unsigned char *px, int w, int h)
{
    float base[3], gx[3], gy[3];
    for (int c = 0; c < 3; c++) {
        base[c] = 255.0f * nat_rng_uniform(rng);
        gx[c] = (nat_rng_uniform(rng) - 0.5f) * 2.0f;
        gy[c] = (nat_rng_uniform(rng) - 0.5f) * 2.0f;
    }
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                px[(y * w + x) * 3 + c] = (unsigned char)((int)(base[c] + gx[c] * x + gy[c] * y) & 255);
    for (int d = 0; d < 6; d++) {
        int cx = (int)nat_rng_below(rng, (uint32_t)w), cy = (int)nat_rng_below(rng, (uint32_t)h);
        int r = 10 + (int)nat_rng_below(rng, 50);
        unsigned char col[3] = {(unsigned char)nat_rng_below(rng, 256), (unsigned char)nat_rng_below(rng, 256),
                                (unsigned char)nat_rng_below(rng, 256)};
        for (int y = cy - r; y < cy + r; y++)
            for (int x = cx - r; x < cx + r; x++)
                if (y >= 0 && y < h && x >= 0 && x < w && (x - cx) * (x - cx) + (y - cy) * (y - cy) < r * r)
                    memcpy(px + (y * w + x) * 3, col, 3);
    }
    for (int i = 0; i < w * h * 3; i++) {
        int v = px[i] + (int)nat_rng_below(rng, 17) - 8;
        px[i] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st, (void)flag, (void)f;
    return remove(path);
}

/* Writes `n` JPEGs in 4 class folders under a new temporary directory (its path into root). */
static nat_status make_folder(int n, char *root, size_t cap, double *bytes_per_image)
{
    snprintf(root, cap, "/tmp/nat_bench_data_XXXXXX");
    if (!mkdtemp(root))
        return nat_error(NAT_ERR_IO, "bench data: cannot make a temporary directory");
    enum { S = 224 };
    unsigned char *px = malloc(S * S * 3);
    if (!px)
        return nat_error(NAT_ERR_OOM, "bench data: no memory");
    nat_rng rng;
    nat_rng_seed(&rng, 2024);
    double total = 0.0;
    char path[512];
    nat_status s = NAT_OK;
    for (int k = 0; k < 4 && s == NAT_OK; k++) {
        snprintf(path, sizeof path, "%s/class%d", root, k);
        if (mkdir(path, 0755) != 0)
            s = nat_error(NAT_ERR_IO, "bench data: cannot make %s", path);
    }
    for (int i = 0; i < n && s == NAT_OK; i++) {
        scene(&rng, px, S, S);
        snprintf(path, sizeof path, "%s/class%d/%05d.jpg", root, i % 4, i);
        struct stat st;
        if (!stbi_write_jpg(path, S, S, 3, px, 90) || stat(path, &st) != 0)
            s = nat_error(NAT_ERR_IO, "bench data: cannot write %s", path);
        else
            total += (double)st.st_size;
    }
    free(px);
    *bytes_per_image = n ? total / n : 0.0;
    return s;
}

static int fail(const char *what)
{
    fprintf(stderr, "nat-bench data: %s: %s\n", what, nat_error_message());
    return 1;
}

int nat_bench_data(int argc, char **argv)
{
    bench_cfg cfg = {.reps = 3, .mnist_batches = 150, .folder_images = 256, .folder_epochs = 2,
                     .train_mnist = 300.0, .train_224 = 5.0, .folder = NULL};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has = i + 1 < argc;
        if (!strcmp(a, "--reps") && has)
            cfg.reps = atoi(argv[++i]);
        else if (!strcmp(a, "--mnist-batches") && has)
            cfg.mnist_batches = atoi(argv[++i]);
        else if (!strcmp(a, "--images") && has)
            cfg.folder_images = atoi(argv[++i]);
        else if (!strcmp(a, "--folder") && has)
            cfg.folder = argv[++i];
        else if (!strcmp(a, "--train-ips-mnist") && has)
            cfg.train_mnist = atof(argv[++i]);
        else if (!strcmp(a, "--train-ips-224") && has)
            cfg.train_224 = atof(argv[++i]);
        else if (!strcmp(a, "--help")) {
            printf("usage: nat-bench data [--reps N] [--mnist-batches N] [--images N] [--folder DIR]\n"
                   "                      [--train-ips-mnist X] [--train-ips-224 X]\n"
                   "Images/s of nat's loader (median of N runs, default 3), batches built in the calling thread\n"
                   "(workers 0, the baseline) and by 1 and 2 worker threads:\n"
                   "  fashion-mnist  %s train split, random crop 28 pad 4 + flip, batch 128,\n"
                   "                 --mnist-batches batches per run (default 150)\n"
                   "  folder224      JPEGs at 224x224 written to a temporary folder (--images, default 256, in 4\n"
                   "                 classes; or an existing image folder with --folder), random-resized crop 224 +\n"
                   "                 flip + ImageNet normalisation, batch 32, two epochs per run\n"
                   "The loader must deliver >= 10x a training step's images/s; the table divides by the training\n"
                   "rates given (defaults: 300 images/s for Fashion-MNIST, 5 for 224x224).\n",
                   NAT_FASHION_MNIST_DIR);
            return 0;
        } else {
            fprintf(stderr, "nat-bench data: unknown option '%s' (try --help)\n", a);
            return 2;
        }
    }
    if (cfg.reps < 1 || cfg.mnist_batches < 1 || cfg.folder_images < 32 || cfg.train_mnist <= 0 || cfg.train_224 <= 0) {
        fprintf(stderr,
                "nat-bench data: --reps and --mnist-batches must be >= 1, --images >= 32, training rates > 0\n");
        return 2;
    }
    const int workers[3] = {0, 1, 2};
    double mnist[3] = {0, 0, 0}, folder[3] = {0, 0, 0};
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    printf("cpus online: %ld; medians of %d runs\n", cpus, cfg.reps);
    printf("%-44s %12s %12s %12s %10s\n", "loader (images/s)", "in-thread", "1 worker", "2 workers", "2w / train");

    /* Fashion-MNIST */
    nat_dataset *ds = NULL;
    bool have_mnist = nat_dataset_open("fashion-mnist", NAT_FASHION_MNIST_DIR, NAT_SPLIT_TRAIN, &ds) == NAT_OK;
    if (!have_mnist) {
        printf("%-44s skipped: %s\n", "fashion-mnist", nat_error_message());
    } else {
        nat_transform tf[2] = {nat_tf_random_crop(28, 28, 4), nat_tf_hflip(0.5f)};
        nat_loader_opts o = nat_loader_defaults();
        o.batch_size = 128;
        o.transforms = tf;
        o.n_transforms = 2;
        for (int k = 0; k < 3; k++) {
            o.workers = workers[k];
            if (measure(ds, o, cfg.mnist_batches, cfg.reps, &mnist[k]) != NAT_OK) {
                nat_dataset_free(ds);
                return fail("fashion-mnist");
            }
        }
        nat_dataset_free(ds);
        printf("%-44s %12.0f %12.0f %12.0f %9.0fx\n", "fashion-mnist 28² crop+flip, batch 128", mnist[0], mnist[1],
               mnist[2], mnist[2] / cfg.train_mnist);
    }

    /* 224² JPEG folder */
    char root[256] = "";
    double jpeg_bytes = 0.0;
    const char *dir = cfg.folder;
    if (!dir) {
        double t0 = nat_wall_now();
        if (make_folder(cfg.folder_images, root, sizeof root, &jpeg_bytes) != NAT_OK) {
            if (root[0])
                nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
            return fail("writing the JPEG folder");
        }
        printf("(wrote %d JPEGs of 224x224, %.1f KB each, in %.1f s)\n", cfg.folder_images, jpeg_bytes / 1024.0,
               nat_wall_now() - t0);
        dir = root;
    }
    nat_status s = nat_dataset_open_folder(dir, 3, &ds);
    if (s == NAT_OK) {
        nat_transform tf[3] = {nat_tf_random_resized_crop(224, 224), nat_tf_hflip(0.5f),
                               nat_tf_normalize(3, (const float[])NAT_IMAGENET_MEAN, (const float[])NAT_IMAGENET_STD)};
        nat_loader_opts o = nat_loader_defaults();
        o.batch_size = 32;
        o.transforms = tf;
        o.n_transforms = 3;
        int64_t batches = (cfg.folder_epochs * nat_dataset_count(ds) + o.batch_size - 1) / o.batch_size;
        for (int k = 0; k < 3 && s == NAT_OK; k++) {
            o.workers = workers[k];
            s = measure(ds, o, batches, cfg.reps, &folder[k]);
        }
        nat_dataset_free(ds);
    }
    if (root[0])
        nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (s != NAT_OK)
        return fail("image folder");
    printf("%-44s %12.0f %12.0f %12.0f %9.0fx\n", "folder 224² JPEG rrc+flip+norm, batch 32", folder[0], folder[1],
           folder[2], folder[2] / cfg.train_224);
    printf("speed-up of 2 workers over in-thread: fashion-mnist %.2fx, folder224 %.2fx\n",
           mnist[0] > 0 ? mnist[2] / mnist[0] : 0.0, folder[2] / folder[0]);
    printf("RESULT bench=data mnist_w0_ips=%.0f mnist_w1_ips=%.0f mnist_w2_ips=%.0f folder224_w0_ips=%.1f "
           "folder224_w1_ips=%.1f folder224_w2_ips=%.1f mnist_vs_train=%.1f folder224_vs_train=%.1f cpus=%ld\n",
           mnist[0], mnist[1], mnist[2], folder[0], folder[1], folder[2], mnist[2] / cfg.train_mnist,
           folder[2] / cfg.train_224, cpus);
    return 0;
}
