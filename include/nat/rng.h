/* nat/rng.h — the one seeded random generator of nat (xoshiro256**).
 *
 * The state is a plain struct the caller owns: no hidden global stream, so two models (or a data loader
 * and a model) each keep their own, and a checkpoint can save and restore it exactly. Used for weight
 * init, dropout, drop-path and data order.
 */
#ifndef NAT_RNG_H
#define NAT_RNG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nat_rng {
    uint64_t s[4];
} nat_rng;

/* Seeds the state from one 64-bit value (expanded with splitmix64, so seeds 0, 1, 2 are all fine). */
void nat_rng_seed(nat_rng *r, uint64_t seed);

/* A new independent stream derived from r (advances r). */
nat_rng nat_rng_split(nat_rng *r);

uint64_t nat_rng_u64(nat_rng *r);
/* Uniform in [0, 1) with 24 random bits. */
float nat_rng_uniform(nat_rng *r);
/* Uniform integer in [0, n), unbiased; n > 0. */
uint32_t nat_rng_below(nat_rng *r, uint32_t n);
/* Standard normal (Box–Muller, double precision internally). */
float nat_rng_normal(nat_rng *r);
/* Normal(0, std) truncated to [lo, hi] by rejection (as timm's trunc_normal_ with a=lo, b=hi). */
float nat_rng_trunc_normal(nat_rng *r, float std, float lo, float hi);

void nat_rng_fill_uniform(nat_rng *r, float *x, size_t n, float lo, float hi);
void nat_rng_fill_normal(nat_rng *r, float *x, size_t n, float mean, float std);
/* Fisher–Yates shuffle of idx[0..n). */
void nat_rng_shuffle(nat_rng *r, uint32_t *idx, size_t n);

#ifdef __cplusplus
}
#endif
#endif
