#!/usr/bin/python3
# Crafts malformed and hostile VXLAN traffic at an overlayd node's underlay.
# usage: hostile.py IFACE DST_MAC DST_IP SRC_IP PEER_SUBNET LOCAL_POD_IP COUNT CASE...
# Each CASE is sent COUNT times; prints one JSON line {case: count}.
# Uses Debian's python3-scapy (run with /usr/bin/python3).
import json
import sys

from scapy.all import ARP, IP, IPOption, IPv6, UDP, Ether, Raw, conf, get_if_hwaddr, sendp  # noqa: E402

conf.verb = 0
iface, dst_mac, dst_ip, src_ip, peer_subnet, pod_ip, count = sys.argv[1:8]
cases = sys.argv[8:]
count = int(count)
# The interface's own MAC: scapy's guess needs a route to the destination,
# and a bridge drops frames from a zero source MAC.
src_mac = get_if_hwaddr(iface)
peer_host = peer_subnet.split("/")[0].rsplit(".", 1)[0] + ".7"  # inside the sender's lease


def vxlan(vni=1, flags=0x08, reserved=0):
    return bytes([flags, 0, 0, 0]) + ((vni << 8) | reserved).to_bytes(4, "big")


def inner(src=peer_host, dst=pod_ip, eth_type=None, payload=None):
    if payload is not None:
        return bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02", type=eth_type) / payload)
    return bytes(Ether(dst="02:00:00:00:00:01", src="02:00:00:00:00:02") / IP(src=src, dst=dst, ttl=64) / UDP(sport=1, dport=9) / Raw(b"x" * 18))


def outer(payload, src=src_ip, **ip):
    return Ether(dst=dst_mac, src=src_mac) / IP(src=src, dst=dst_ip, **ip) / UDP(sport=40000, dport=8472, chksum=0) / Raw(payload)


def build(case):
    if case == "truncated":  # VXLAN header cut at 4 bytes, lengths consistent
        return outer(vxlan()[:4])
    if case == "wrong_vni":
        return outer(vxlan(vni=42) + inner())
    if case == "bad_flags":
        return outer(vxlan(flags=0x0C) + inner())
    if case == "ip_options":
        return outer(vxlan() + inner(), options=IPOption(b"\x01\x01\x01\x00"))  # NOP NOP NOP EOL
    if case == "fragment":
        return outer(vxlan() + inner(), flags="MF")
    if case == "oversized":  # IP length claims more than the frame carries
        p = outer(vxlan() + inner())
        p[IP].len = 1400
        return p
    if case == "inner_arp":
        return outer(vxlan() + inner(eth_type=0x0806, payload=ARP()))
    if case == "inner_ipv6":
        return outer(vxlan() + inner(eth_type=0x86DD, payload=IPv6()))
    if case == "unknown_source":  # valid VXLAN from a host that holds no lease
        return outer(vxlan() + inner())
    if case == "spoofed_source":
        return outer(vxlan() + inner(src="192.0.2.7"))
    if case == "bad_checksum":
        return outer(vxlan() + inner(), chksum=0x1234)
    if case == "bad_udp_len":
        p = outer(vxlan() + inner())
        p[UDP].len = 20
        return p
    if case == "not_local":
        return outer(vxlan() + inner(dst="10.99.0.1"))
    if case == "not_vxlan":  # plain UDP elsewhere: must pass untouched
        return Ether(dst=dst_mac, src=src_mac) / IP(src=src_ip, dst=dst_ip) / UDP(sport=5, dport=53) / Raw(b"q" * 20)
    raise SystemExit(f"unknown case {case}")


sent = {}
for case in cases:
    pkt = build(case)
    if case == "bad_checksum":
        frame = bytes(pkt)  # keep the wrong checksum scapy would recompute
        sendp([Raw(frame)] * count, iface=iface)
    else:
        sendp([pkt] * count, iface=iface)
    sent[case] = count
print(json.dumps(sent))
