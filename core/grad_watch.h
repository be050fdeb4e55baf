/* core/grad_watch.h — "this parameter's gradient is final" during a backward walk
 * (nat_ctx_watch_grads in include/nat/autograd.h; used by core/autograd.c only).
 *
 * A leaf's gradient is complete once every node that reads it has run its backward. The walk goes from
 * the end of the tape to its start, so that moment is right after the node of the lowest tape index
 * among those with the leaf as an input (its first use in the forward). Before a walk the watch finds
 * that index for every watched leaf and orders the leaves by it; during the walk it calls the user's
 * function for each leaf as the walk passes its first use. Leaves the walk never sees as an input
 * (unused this step, or read only inside a nat_recompute block, whose nodes live on a nested tape)
 * are called at the end of the walk, in index order: later than possible, never too early.
 */
#ifndef NAT_CORE_GRAD_WATCH_H
#define NAT_CORE_GRAD_WATCH_H

#include "nat/autograd.h"

typedef struct nat_grad_watch nat_grad_watch;

/* A watch over params[0..n) (copied; the tensors are borrowed). *out NULL when n == 0. */
nat_status nat_grad_watch_new(nat_tensor *const *params, int n, nat_grad_ready_fn fn, void *user,
                              nat_grad_watch **out);
void nat_grad_watch_free(nat_grad_watch *w);
/* Before a walk over tape[0..len): each leaf's first use, and the calling order. Allocates nothing. */
void nat_grad_watch_plan(nat_grad_watch *w, nat_node *const *tape, int len);
/* After the walk has run the backward of tape[pos] (or passed it): calls fn for the leaves whose first
 * use is at pos or later that have not been called yet. Stops at the first error fn returns. */
nat_status nat_grad_watch_passed(nat_grad_watch *w, int pos);
/* After the walk: the leaves not called yet (first use unseen), in index order. */
nat_status nat_grad_watch_finish(nat_grad_watch *w);

#endif
