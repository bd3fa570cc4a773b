// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Never loaded. Compiled only so that its BTF carries every ABI type and
 * enum for scripts/gen-abi.ts (constants that no program reads as a typed
 * value are otherwise absent from BTF).
 */
#include "lib/common.h"
#include "lib/config.h"
#include "lib/maps.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct ovl_abi_enums ovl_abi_anchor SEC(".abi") __attribute__((used));

/* Records that travel through the ring buffer are no map's key or value. */
struct ovl_event ovl_abi_event SEC(".abi") __attribute__((used));
