/* core/ops_matmul.c — matmul, batched matmul and linear on the CPU through OpenBLAS sgemm.
 *
 * Layouts: row-major; linear weights are [out, in] as in PyTorch, so y = x·Wᵀ + b uses sgemm with the
 * second operand transposed. Backward accumulates straight into the gradient buffers (beta = 1), so no
 * temporary the size of a weight gradient is made. Strided inputs are made dense first.
 */
#include <cblas.h> /* cblas_sgemm */
#include <inttypes.h>

#include "core/ops_internal.h"
#include "core/tensor_internal.h"

/* C[M,N] = alpha * op(A) op(B) + beta * C, all row-major and dense. */
static void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A, const float *B, float beta, float *C)
{
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K,
                1.0f, A, ta ? (int)M : (int)K, B, tb ? (int)K : (int)N, beta, C, (int)N);
}

/* ---- matmul ---- */

static nat_status matmul_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *a = node->saved[0], *b = node->saved[1];
    int64_t batch = node->i[0], M = node->i[1], K = node->i[2], N = node->i[3];
    bool shared_b = node->i[4];
    nat_tensor *gd, *ga, *gb;
    NAT_TRY(nat_dense(ctx, g, &gd));
    NAT_TRY(nat_grad_get(ctx, node->in[0], &ga));
    NAT_TRY(nat_grad_get(ctx, node->in[1], &gb));
    const float *G = nat_tensor_f32(gd), *A = nat_tensor_f32(a), *B = nat_tensor_f32(b);
    if (shared_b) {
        /* a was flattened to [batch*M, K]. */
        if (ga)
            gemm(false, true, batch * M, K, N, G, B, 1.0f, nat_tensor_f32(ga));
        if (gb)
            gemm(true, false, K, N, batch * M, A, G, 1.0f, nat_tensor_f32(gb));
        return NAT_OK;
    }
    for (int64_t i = 0; i < batch; i++) {
        const float *Gi = G + i * M * N, *Ai = A + i * M * K, *Bi = B + i * K * N;
        if (ga)
            gemm(false, true, M, K, N, Gi, Bi, 1.0f, nat_tensor_f32(ga) + i * M * K);
        if (gb)
            gemm(true, false, K, N, M, Ai, Gi, 1.0f, nat_tensor_f32(gb) + i * K * N);
    }
    return NAT_OK;
}

static const nat_op_def matmul_op = {"matmul", matmul_backward};

nat_status nat_matmul(nat_ctx *ctx, nat_tensor *a, nat_tensor *b, nat_tensor **out)
{
    NAT_TRY(nat_check_f32(ctx, a, "matmul", "a"));
    NAT_TRY(nat_check_f32(ctx, b, "matmul", "b"));
    char sa[96], sb[96];
    nat_shape_str(a, sa, sizeof sa);
    nat_shape_str(b, sb, sizeof sb);
    if (a->ndim < 2 || (b->ndim != 2 && b->ndim != 3))
        return nat_error(NAT_ERR_SHAPE, "matmul: a %s and b %s: expected a [..., M, K] with b [K, N], or a [B, M, K] with b [B, K, N]", sa, sb);
    bool shared_b = b->ndim == 2;
    int64_t M = a->shape[a->ndim - 2], K = a->shape[a->ndim - 1];
    int64_t N = b->shape[b->ndim - 1], Kb = b->shape[b->ndim - 2];
    int64_t batch = nat_shape_numel(a->ndim - 2, a->shape);
    if (K != Kb || (!shared_b && (a->ndim != 3 || a->shape[0] != b->shape[0])))
        return nat_error(NAT_ERR_SHAPE, "matmul: shapes %s and %s do not fit (inner sizes %" PRId64 " vs %" PRId64 ")", sa, sb, K, Kb);
    nat_tensor *ad, *bd, *y;
    NAT_TRY(nat_dense(ctx, a, &ad));
    NAT_TRY(nat_dense(ctx, b, &bd));
    int64_t shape[NAT_MAX_DIMS];
    for (int d = 0; d < a->ndim - 1; d++)
        shape[d] = a->shape[d];
    shape[a->ndim - 1] = N;
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, a->ndim, shape));
    const float *A = nat_tensor_f32(ad), *B = nat_tensor_f32(bd);
    float *Y = nat_tensor_f32(y);
    if (shared_b)
        gemm(false, false, batch * M, N, K, A, B, 0.0f, Y);
    else
        for (int64_t i = 0; i < batch; i++)
            gemm(false, false, M, N, K, A + i * M * K, B + i * K * N, 0.0f, Y + i * M * N);
    nat_node *node;
    nat_tensor *ins[2] = {a, b};
    NAT_TRY(nat_ctx_record(ctx, &matmul_op, y, 2, ins, &node));
    if (node) {
        node->saved[0] = ad;
        node->saved[1] = bd;
        node->n_saved = 2;
        node->i[0] = batch, node->i[1] = M, node->i[2] = K, node->i[3] = N, node->i[4] = shared_b;
    }
    *out = y;
    return NAT_OK;
}

/* ---- linear ---- */

static nat_status linear_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *x = node->saved[0], *w = node->saved[1];
    int64_t M = node->i[0], in = node->i[1], outf = node->i[2];
    nat_tensor *gd, *gx, *gw, *gb;
    NAT_TRY(nat_dense(ctx, g, &gd));
    NAT_TRY(nat_grad_get(ctx, node->in[0], &gx));
    NAT_TRY(nat_grad_get(ctx, node->in[1], &gw));
    NAT_TRY(nat_grad_get(ctx, node->in[2], &gb));
    const float *G = nat_tensor_f32(gd);
    if (gx)
        gemm(false, false, M, in, outf, G, nat_tensor_f32(w), 1.0f, nat_tensor_f32(gx));
    if (gw)
        gemm(true, false, outf, in, M, G, nat_tensor_f32(x), 1.0f, nat_tensor_f32(gw));
    if (gb) {
        float *B = nat_tensor_f32(gb);
#pragma omp parallel for if (M * outf > 65536)
        for (int64_t o = 0; o < outf; o++) {
            float s = 0;
            for (int64_t r = 0; r < M; r++)
                s += G[r * outf + o];
            B[o] += s;
        }
    }
    return NAT_OK;
}

static const nat_op_def linear_op = {"linear", linear_backward};

nat_status nat_linear(nat_ctx *ctx, nat_tensor *x, nat_tensor *w, nat_tensor *bias, nat_tensor **out)
{
    NAT_TRY(nat_check_f32(ctx, x, "linear", "x"));
    NAT_TRY(nat_check_f32(ctx, w, "linear", "weight"));
    char sx[96], sw[96];
    nat_shape_str(x, sx, sizeof sx);
    nat_shape_str(w, sw, sizeof sw);
    if (w->ndim != 2 || x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1])
        return nat_error(NAT_ERR_SHAPE, "linear: input %s does not fit weight %s (expected input [..., %" PRId64 "])", sx, sw,
                         w->ndim == 2 ? w->shape[1] : -1);
    int64_t in = w->shape[1], outf = w->shape[0];
    if (bias) {
        NAT_TRY(nat_check_f32(ctx, bias, "linear", "bias"));
        if (nat_tensor_numel(bias) != outf || bias->ndim != 1) {
            char sb[96];
            return nat_error(NAT_ERR_SHAPE, "linear: bias %s does not fit weight %s (expected [%" PRId64 "])",
                             nat_shape_str(bias, sb, sizeof sb), sw, outf);
        }
    }
    int64_t M = nat_shape_numel(x->ndim - 1, x->shape);
    nat_tensor *xd, *wd, *y;
    NAT_TRY(nat_dense(ctx, x, &xd));
    NAT_TRY(nat_dense(ctx, w, &wd));
    int64_t shape[NAT_MAX_DIMS];
    for (int d = 0; d < x->ndim - 1; d++)
        shape[d] = x->shape[d];
    shape[x->ndim - 1] = outf;
    NAT_TRY(nat_ctx_empty(ctx, &y, NAT_F32, x->ndim, shape));
    float *Y = nat_tensor_f32(y);
    float beta = 0.0f;
    if (bias) {
        nat_tensor *bd;
        NAT_TRY(nat_dense(ctx, bias, &bd));
        const float *B = nat_tensor_f32(bd);
#pragma omp parallel for if (M * outf > 65536)
        for (int64_t r = 0; r < M; r++)
            for (int64_t o = 0; o < outf; o++)
                Y[r * outf + o] = B[o];
        beta = 1.0f;
    }
    gemm(false, true, M, outf, in, nat_tensor_f32(xd), nat_tensor_f32(wd), beta, Y);
    nat_node *node;
    nat_tensor *ins[3] = {x, w, bias};
    NAT_TRY(nat_ctx_record(ctx, &linear_op, y, 3, ins, &node));
    if (node) {
        node->saved[0] = xd;
        node->saved[1] = wd;
        node->n_saved = 2;
        node->i[0] = M, node->i[1] = in, node->i[2] = outf;
    }
    *out = y;
    return NAT_OK;
}
