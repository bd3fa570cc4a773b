/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Events for `overlayctl monitor` (layouts in include/abi.h). A drop event
 * costs a token from this CPU's bucket; without one, or with the ring full,
 * it is only counted as suppressed, so a flood of hostile packets costs a
 * bounded amount. Trace events are emitted only while a monitor sets
 * ovl_monitor.trace; when nobody watches, the fast path pays one array load.
 */
#ifndef OVERLAYD_EVENTS_H
#define OVERLAYD_EVENTS_H

#include "maps.h"

static __always_inline int ev_take_token(struct ovl_ev_bucket *b)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 add = (now - b->last_ns) * OVL_EV_RATE / 1000000000ULL;

	if (add) {
		b->tokens += add;
		if (b->tokens > OVL_EV_BURST)
			b->tokens = OVL_EV_BURST;
		b->last_ns = now;
	}
	if (!b->tokens)
		return 0;
	b->tokens--;
	return 1;
}

static __always_inline int tracing(void)
{
#ifdef OVL_NO_TRACE
	/* `make bench` builds objects without the trace hooks (build/bpf-notrace),
	 * to show that tracing off costs nothing next to them. */
	return 0;
#endif
	__u32 zero = 0;
	struct ovl_monitor *m = bpf_map_lookup_elem(&ovl_monitor, &zero);

	return m && m->trace;
}

static __always_inline struct ovl_event *ev_reserve(__u8 type, struct ovl_ev_bucket **bp)
{
	__u32 zero = 0;
	struct ovl_ev_bucket *b = bpf_map_lookup_elem(&ovl_ev_limit, &zero);
	struct ovl_event *ev;

	*bp = b;
	if (!b)
		return NULL;
	if (type == OVL_EV_DROP && !ev_take_token(b)) {
		b->suppressed_drop++;
		return NULL;
	}
	ev = bpf_ringbuf_reserve(&ovl_events, sizeof(*ev), 0);
	if (!ev) {
		if (type == OVL_EV_DROP)
			b->suppressed_drop++;
		else
			b->suppressed_trace++;
	}
	return ev;
}

static __always_inline void ev_fill(struct ovl_event *ev, __u8 type, __u8 dir, __u8 reason,
				    __u8 hook, __u32 ifindex, __u32 len, __be32 peer)
{
	ev->ts_ns = bpf_ktime_get_ns();
	ev->type = type;
	ev->dir = dir;
	ev->reason = reason;
	ev->hook = hook;
	ev->ifindex = ifindex;
	ev->len = len;
	ev->peer = peer;
	ev->pad = 0;
}

/* An event for an skb (TC programs). */
static __always_inline void emit_skb(struct __sk_buff *skb, __u8 type, __u8 dir, __u8 reason,
				     __u8 hook, __be32 peer)
{
	struct ovl_ev_bucket *b;
	struct ovl_event *ev = ev_reserve(type, &b);
	__u32 snap = skb->len;

	if (!ev)
		return;
	ev_fill(ev, type, dir, reason, hook, skb->ifindex, skb->len, peer);
	if (snap > OVL_EV_SNAPLEN)
		snap = OVL_EV_SNAPLEN;
	/* 1..OVL_EV_SNAPLEN in one register, as the verifier wants it (a
	 * power of two: 0 would become 128 and fail the load, harmlessly). */
	snap = ((snap - 1) & (OVL_EV_SNAPLEN - 1)) + 1;
	ev->snap_len = 0;
	if (!bpf_skb_load_bytes(skb, 0, ev->data, snap))
		ev->snap_len = snap;
	bpf_ringbuf_submit(ev, 0);
}

/* An event for an XDP frame. */
static __always_inline void emit_xdp(struct xdp_md *ctx, __u8 type, __u8 dir, __u8 reason,
				     __be32 peer)
{
	struct ovl_ev_bucket *b;
	struct ovl_event *ev = ev_reserve(type, &b);
	__u32 len = ctx->data_end - ctx->data;
	__u32 snap = len;

	if (!ev)
		return;
	ev_fill(ev, type, dir, reason, OVL_HOOK_DECAP_XDP, ctx->ingress_ifindex, len, peer);
	if (snap > OVL_EV_SNAPLEN)
		snap = OVL_EV_SNAPLEN;
	snap = ((snap - 1) & (OVL_EV_SNAPLEN - 1)) + 1;
	ev->snap_len = 0;
	if (!bpf_xdp_load_bytes(ctx, 0, ev->data, snap))
		ev->snap_len = snap;
	bpf_ringbuf_submit(ev, 0);
}

#define trace_skb(skb, dir, action, hook, peer)                                \
	do {                                                                   \
		if (tracing())                                                 \
			emit_skb(skb, OVL_EV_TRACE, dir, action, hook, peer);  \
	} while (0)

#endif /* OVERLAYD_EVENTS_H */
