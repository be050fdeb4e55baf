/* layers/param_list.c — the parameter registry (nat_param_list): dotted PyTorch names to borrowed
 * tensors, with the no-weight-decay flag. Names are owned by the list. */
#include <stdlib.h>
#include <string.h>

#include "nat/layers.h"
#include "core/check.h"

void nat_param_list_init(nat_param_list *l)
{
    l->items = NULL;
    l->count = 0;
    l->cap = 0;
}

void nat_param_list_clear(nat_param_list *l)
{
    for (int i = 0; i < l->count; i++) {
        if (l->items[i].tensor && l->items[i].tensor->name == l->items[i].name)
            l->items[i].tensor->name = NULL;
        free(l->items[i].name);
    }
    free(l->items);
    nat_param_list_init(l);
}

const nat_param *nat_param_list_find(const nat_param_list *l, const char *name)
{
    for (int i = 0; i < l->count; i++)
        if (!strcmp(l->items[i].name, name))
            return &l->items[i];
    return NULL;
}

nat_status nat_param_list_add(nat_param_list *l, const char *prefix, const char *name, nat_tensor *t, bool no_decay)
{
    NAT_CHECK_ARG(l, "nat_param_list_add", "l");
    NAT_CHECK_ARG(name, "nat_param_list_add", "name");
    NAT_CHECK_ARG(t, "nat_param_list_add", "t");
    if (!name || !t)
        return nat_error(NAT_ERR_INVALID_ARG, "param_list: NULL %s for parameter '%s%s%s'", t ? "name" : "tensor",
                         prefix ? prefix : "", prefix && *prefix ? "." : "", name ? name : "");
    size_t lp = prefix && *prefix ? strlen(prefix) + 1 : 0, ln = strlen(name);
    char *full = malloc(lp + ln + 1);
    if (!full)
        return nat_error(NAT_ERR_OOM, "param_list: out of memory naming parameter '%s'", name);
    if (lp) {
        memcpy(full, prefix, lp - 1);
        full[lp - 1] = '.';
    }
    memcpy(full + lp, name, ln + 1);
    if (nat_param_list_find(l, full)) {
        nat_status s = nat_error(NAT_ERR_INVALID_ARG, "param_list: parameter '%s' is already listed", full);
        free(full);
        return s;
    }
    if (l->count == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        nat_param *items = realloc(l->items, (size_t)cap * sizeof *items);
        if (!items) {
            free(full);
            return nat_error(NAT_ERR_OOM, "param_list: out of memory listing %d parameters", cap);
        }
        l->items = items;
        l->cap = cap;
    }
    l->items[l->count++] = (nat_param){full, t, no_decay};
    t->name = full;
    return NAT_OK;
}

int64_t nat_param_list_numel(const nat_param_list *l)
{
    int64_t n = 0;
    for (int i = 0; i < l->count; i++)
        n += nat_tensor_numel(l->items[i].tensor);
    return n;
}

void nat_param_list_zero_grad(const nat_param_list *l)
{
    for (int i = 0; i < l->count; i++)
        nat_zero_grad(l->items[i].tensor);
}
