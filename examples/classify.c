/* examples/classify.c — loads a NAT checkpoint (safetensors written by nat, or converted from PyTorch's
 * NAT with the same tensor names and nat.* metadata) and classifies one image file (JPEG/PNG via
 * stb_image): resize to the model's input size, normalise, forward without the tape, print the top 5.
 *
 *   classify MODEL.safetensors IMAGE [--mean m1,m2,m3 --std s1,s2,s3]
 * Defaults: ImageNet's mean/std for 3-channel models, Fashion-MNIST's for 1-channel ones.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stb_image.h>
#include <nat/nat.h>

static int fail(const char *what)
{
    fprintf(stderr, "classify: %s: %s\n", what, nat_error_message());
    return 1;
}

static int parse3(const char *s, float *v)
{
    return sscanf(s, "%f,%f,%f", &v[0], &v[1], &v[2]) == 3 ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc < 3 || !strcmp(argv[1], "--help")) {
        fprintf(argc < 3 ? stderr : stdout, "usage: classify MODEL.safetensors IMAGE [--mean m1,m2,m3 --std s1,s2,s3]\n");
        return argc < 3 ? 2 : 0;
    }
    float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    bool user_norm = false;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--mean") && !parse3(argv[i + 1], mean))
            user_norm = true;
        else if (!strcmp(argv[i], "--std") && !parse3(argv[i + 1], std))
            user_norm = true;
        else {
            fprintf(stderr, "classify: bad option '%s' (try --help)\n", argv[i]);
            return 2;
        }
    }

    nat_st_file *f;
    if (nat_st_open(&f, argv[1]))
        return fail("opening the checkpoint");
    nat_model_desc d;
    nat_model *m = NULL;
    if (nat_model_desc_read(f, &d) || nat_model_new(&m, &d) || nat_model_read(m, f, true)) {
        int rc = fail("loading the model");
        nat_model_free(m);
        nat_st_close(f);
        return rc;
    }
    nat_st_close(f);
    if (d.in_chans == 1 && !user_norm)
        mean[0] = 0.2860f, std[0] = 0.3530f;

    int w, h, c;
    unsigned char *img = stbi_load(argv[2], &w, &h, &c, d.in_chans);
    if (!img) {
        fprintf(stderr, "classify: %s: cannot decode image: %s\n", argv[2], stbi_failure_reason());
        nat_model_free(m);
        return 1;
    }
    /* Nearest-neighbour resize to the model's input size keeps the example short; nat's data/ has
     * proper bilinear resizing and cropping. */
    int S = d.img_size, C = d.in_chans;
    int64_t shape[4] = {1, C, S, S};
    nat_tensor *x;
    if (nat_tensor_new(&x, NAT_F32, NAT_CPU, 4, shape))
        return fail("input tensor");
    float *xp = nat_tensor_f32(x);
    for (int ch = 0; ch < C; ch++)
        for (int yy = 0; yy < S; yy++)
            for (int xx = 0; xx < S; xx++) {
                int sy = yy * h / S, sx = xx * w / S;
                xp[(ch * S + yy) * S + xx] = ((float)img[(sy * w + sx) * C + ch] / 255.0f - mean[ch]) / std[ch];
            }
    stbi_image_free(img);

    nat_ctx *ctx;
    nat_tensor *logits;
    if (nat_ctx_new(&ctx, NAT_CPU))
        return fail("context");
    nat_ctx_set_grad_enabled(ctx, false);
    if (nat_model_forward(m, ctx, x, false, NULL, &logits))
        return fail("forward");
    nat_tensor *prob;
    if (nat_softmax(ctx, logits, &prob))
        return fail("softmax");
    const float *p = nat_tensor_f32(prob);
    int n = d.num_classes, top = n < 5 ? n : 5;
    int *used = calloc((size_t)n, sizeof *used);
    printf("%s (%dx%d) with %s (%d classes):\n", argv[2], w, h, d.name, n);
    for (int t = 0; t < top; t++) {
        int best = -1;
        for (int i = 0; i < n; i++)
            if (!used[i] && (best < 0 || p[i] > p[best]))
                best = i;
        used[best] = 1;
        printf("  class %4d  p = %.4f\n", best, p[best]);
    }
    free(used);
    nat_ctx_free(ctx);
    nat_tensor_free(x);
    nat_model_free(m);
    return 0;
}
