/* nat/nat.h — the umbrella header: everything a program embedding nat needs. */
#ifndef NAT_NAT_H
#define NAT_NAT_H

#include "nat/alloc.h"
#include "nat/autograd.h"
#include "nat/cuda.h"
#include "nat/data.h"
#include "nat/half.h"
#include "nat/idx.h"
#include "nat/layers.h"
#include "nat/model.h"
#include "nat/natten.h"
#include "nat/ops.h"
#include "nat/optim.h"
#include "nat/rng.h"
#include "nat/safetensors.h"
#include "nat/status.h"
#include "nat/tensor.h"

#endif
