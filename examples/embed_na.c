/* examples/embed_na.c — one NeighborhoodAttention2D layer (NATTEN's module: qkv, NA with relative
 * positional bias, proj) run on buffers this program owns, through the installed nat library.
 *
 * Build against an installed nat:
 *   cmake -S examples -B build-ex -DCMAKE_PREFIX_PATH=<prefix> && cmake --build build-ex
 * or: cc embed_na.c $(pkg-config --cflags --libs --static nat)
 *
 * Layout: x and y are channels-last [B, H, W, C] float32, row-major.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <nat/nat.h>

#define CHECK(call)                                                                             \
    do {                                                                                        \
        nat_status s_ = (call);                                                                 \
        if (s_ != NAT_OK) {                                                                     \
            fprintf(stderr, "embed_na: %s failed: %s\n", #call, nat_error_message());           \
            return 1;                                                                           \
        }                                                                                       \
    } while (0)

int main(void)
{
    enum { B = 2, H = 9, W = 12, C = 32, HEADS = 4, K = 7 };
    /* The caller's buffers. */
    float *x = malloc(sizeof(float) * B * H * W * C), *y = malloc(sizeof(float) * B * H * W * C);
    for (int i = 0; i < B * H * W * C; i++)
        x[i] = sinf(0.01f * (float)i);

    nat_rng rng;
    nat_rng_seed(&rng, 1);
    nat_na_layer_desc d = nat_na_layer_desc_make(2, C, HEADS, K, 1);
    nat_na_layer layer;
    CHECK(nat_na_layer_init(&layer, &d, 0.02f, &rng));

    /* Wrap the caller's input without copying; run without the tape (inference). */
    int64_t shape[4] = {B, H, W, C};
    nat_tensor *xt, *yt;
    CHECK(nat_tensor_wrap(&xt, x, NAT_F32, NAT_CPU, 4, shape));
    nat_ctx *ctx;
    CHECK(nat_ctx_new(&ctx, NAT_CPU));
    nat_ctx_set_grad_enabled(ctx, false);
    CHECK(nat_na_layer_forward(ctx, &layer, xt, false, NULL, &yt));
    CHECK(nat_tensor_copy_to(yt, y, (int64_t)B * H * W * C));

    double sum = 0;
    for (int i = 0; i < B * H * W * C; i++)
        sum += fabs(y[i]);
    printf("embed_na: NeighborhoodAttention2D dim %d heads %d kernel %d on [%d, %d, %d, %d]: mean |y| = %.6e\n", C, HEADS,
           K, B, H, W, C, sum / (B * H * W * C));

    nat_ctx_free(ctx);
    nat_tensor_free(xt);
    nat_na_layer_free(&layer);
    free(x);
    free(y);
    return 0;
}
