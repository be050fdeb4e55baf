/* core/ops_matmul.c — matmul, batched matmul and linear: checks, step tensors and the tape; the GEMMs
 * are oneDNN's on the CPU (core/cpu/gemm.c: sgemm, a bf16 matmul under autocast), cuBLAS on a CUDA device (core/cuda/gemm.cu: one
 * strided-batched call per batched product), through the kernel table.
 *
 * Autocast (nat_ctx_precision BF16 / F16): every GEMM of these ops, forward and backward, takes its two
 * operands rounded to the format and accumulates in f32 into an f32 result; bias adds and the bias
 * gradient stay f32. On CUDA that is cublasGemmEx with 2-byte inputs; on the CPU a oneDNN bf16 matmul (f16, or
 * bf16 on a CPU without bf16 kernels: the operands rounded into scratch and the f32 sgemm on them, equal
 * up to summation order, since a product of two bf16 or two f16 values is exact in f32). The precision is saved on the node, so
 * backward rounds as its forward did whatever the context says by then.
 *
 * Layouts: row-major; linear weights are [out, in] as in PyTorch, so y = x·Wᵀ + b uses sgemm with the
 * second operand transposed. Backward accumulates straight into the gradient buffers (beta = 1), so no
 * temporary the size of a weight gradient is made. Strided inputs are made dense first.
 */
#include <inttypes.h>

#include "core/backend.h"
#include "nat/op.h"
#include "core/tensor_internal.h"
#include "core/check.h"

/* `batch` products C_i = op(A_i) op(B_i) + beta·C_i with operand strides sa, sb, sc (0: shared) through
 * the table of the context's device, with operands rounded to `prec`. */
static nat_status mm(nat_ctx *ctx, nat_precision prec, bool ta, bool tb, int64_t M, int64_t N, int64_t K,
                     const float *A, int64_t sa, const float *B, int64_t sb, float beta, float *C, int64_t sc,
                     int64_t batch)
{
    if (prec != NAT_PREC_F32)
        return NAT_KERNEL(NAT_EXEC_CTX(ctx), gemm_lowp, (int)prec, ta, tb, M, N, K, A, sa, B, sb, beta, C, sc, batch);
    return NAT_KERNEL(NAT_EXEC_CTX(ctx), gemm, ta, tb, M, N, K, A, sa, B, sb, beta, C, sc, batch);
}

/* ---- matmul ---- */

static nat_status matmul_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *a = node->saved[0], *b = node->saved[1];
    int64_t batch = node->i[0], M = node->i[1], K = node->i[2], N = node->i[3];
    bool shared_b = node->i[4];
    nat_precision prec = (nat_precision)node->i[5];
    nat_tensor *gd, *ga, *gb;
    NAT_TRY(nat_dense(ctx, g, &gd));
    NAT_TRY(nat_grad_get(ctx, node->in[0], &ga));
    NAT_TRY(nat_grad_get(ctx, node->in[1], &gb));
    const float *G = nat_tensor_f32(gd), *A = nat_tensor_f32(a), *B = nat_tensor_f32(b);
    if (shared_b) {
        /* a was flattened to [batch*M, K]. */
        if (ga)
            NAT_TRY(mm(ctx, prec, false, true, batch * M, K, N, G, 0, B, 0, 1.0f, nat_tensor_f32(ga), 0, 1));
        if (gb)
            NAT_TRY(mm(ctx, prec, true, false, K, N, batch * M, A, 0, G, 0, 1.0f, nat_tensor_f32(gb), 0, 1));
        return NAT_OK;
    }
    if (ga)
        NAT_TRY(mm(ctx, prec, false, true, M, K, N, G, M * N, B, K * N, 1.0f, nat_tensor_f32(ga), M * K, batch));
    if (gb)
        NAT_TRY(mm(ctx, prec, true, false, K, N, M, A, M * K, G, M * N, 1.0f, nat_tensor_f32(gb), K * N, batch));
    return NAT_OK;
}

static const nat_op_def matmul_op = {"matmul", matmul_backward};

nat_status nat_matmul(nat_ctx *ctx, nat_tensor *a, nat_tensor *b, nat_tensor **out)
{
    NAT_CHECK_ARG(out, "matmul", "out");
    NAT_TRY(nat_check_f32_dev(ctx, a, "matmul", "a"));
    NAT_TRY(nat_check_f32_dev(ctx, b, "matmul", "b"));
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
    nat_precision prec = nat_ctx_precision(ctx);
    if (shared_b)
        NAT_TRY(mm(ctx, prec, false, false, batch * M, N, K, A, 0, B, 0, 0.0f, Y, 0, 1));
    else
        NAT_TRY(mm(ctx, prec, false, false, M, N, K, A, M * K, B, K * N, 0.0f, Y, M * N, batch));
    nat_node *node;
    nat_tensor *ins[2] = {a, b};
    NAT_TRY(nat_ctx_record(ctx, &matmul_op, y, 2, ins, &node));
    if (node) {
        node->saved[0] = ad;
        node->saved[1] = bd;
        node->n_saved = 2;
        node->i[0] = batch, node->i[1] = M, node->i[2] = K, node->i[3] = N, node->i[4] = shared_b;
        node->i[5] = prec;
    }
    *out = y;
    return NAT_OK;
}

/* ---- linear ---- */

static nat_status linear_backward(nat_ctx *ctx, nat_node *node, const nat_tensor *g)
{
    nat_tensor *x = node->saved[0], *w = node->saved[1];
    int64_t M = node->i[0], in = node->i[1], outf = node->i[2];
    nat_precision prec = (nat_precision)node->i[3];
    nat_tensor *gd, *gx, *gw, *gb;
    bool gx_fresh;
    NAT_TRY(nat_dense(ctx, g, &gd));
    NAT_TRY(nat_grad_buffer(ctx, node->in[0], &gx, &gx_fresh));
    NAT_TRY(nat_grad_get(ctx, node->in[1], &gw));
    NAT_TRY(nat_grad_get(ctx, node->in[2], &gb));
    const float *G = nat_tensor_f32(gd);
    if (gx) /* written (beta 0) when the buffer is new, else accumulated */
        NAT_TRY(mm(ctx, prec, false, false, M, in, outf, G, 0, nat_tensor_f32(w), 0, gx_fresh ? 0.0f : 1.0f,
                   nat_tensor_f32(gx), 0, 1));
    if (gw)
        NAT_TRY(mm(ctx, prec, true, false, outf, in, M, G, 0, nat_tensor_f32(x), 0, 1.0f, nat_tensor_f32(gw), 0, 1));
    if (gb)
        NAT_TRY(NAT_KERNEL(NAT_EXEC_CTX(ctx), linear_bias_grad, G, M, outf, nat_tensor_f32(gb)));
    return NAT_OK;
}

static const nat_op_def linear_op = {"linear", linear_backward};

nat_status nat_linear(nat_ctx *ctx, nat_tensor *x, nat_tensor *w, nat_tensor *bias, nat_tensor **out)
{
    NAT_CHECK_ARG(out, "linear", "out");
    NAT_TRY(nat_check_f32_dev(ctx, x, "linear", "x"));
    NAT_TRY(nat_check_f32_dev(ctx, w, "linear", "weight"));
    char sx[96], sw[96];
    nat_shape_str(x, sx, sizeof sx);
    nat_shape_str(w, sw, sizeof sw);
    if (w->ndim != 2 || x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1])
        return nat_error(NAT_ERR_SHAPE, "linear: input %s does not fit weight %s (expected input [..., %" PRId64 "])", sx, sw,
                         w->ndim == 2 ? w->shape[1] : -1);
    int64_t in = w->shape[1], outf = w->shape[0];
    if (bias) {
        NAT_TRY(nat_check_f32_dev(ctx, bias, "linear", "bias"));
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
        /* Every row of y starts as the bias (read with row stride 0); the GEMM adds onto it. */
        int64_t shape2[2] = {M, outf}, ys[2] = {outf, 1}, bs[2] = {0, bias->stride[0]};
        NAT_TRY(NAT_KERNEL(NAT_EXEC_CTX(ctx), strided_copy, Y, ys, nat_tensor_f32(bias), bs, 2, shape2, false));
        beta = 1.0f;
    }
    nat_precision prec = nat_ctx_precision(ctx);
    NAT_TRY(mm(ctx, prec, false, true, M, outf, in, nat_tensor_f32(xd), 0, nat_tensor_f32(wd), 0, beta, Y, 0, 1));
    nat_node *node;
    nat_tensor *ins[3] = {x, w, bias};
    NAT_TRY(nat_ctx_record(ctx, &linear_op, y, 3, ins, &node));
    if (node) {
        node->saved[0] = xd;
        node->saved[1] = wd;
        node->n_saved = 2;
        node->i[0] = M, node->i[1] = in, node->i[2] = outf, node->i[3] = prec;
    }
    *out = y;
    return NAT_OK;
}
