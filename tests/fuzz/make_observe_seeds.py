#!/usr/bin/python3
"""Writes the seed inputs of fuzz_observe (tests/fuzz/corpus/observe/): short conversations
whose packets every chain reads — TCP options (MSS, Fast Open 34 / 254 / 255, a 3-byte MSS,
a zero length, a cut option), the Scitags option 0x1E in IPv6 hop-by-hop and destination-
options headers, flow labels, ECN / DSCP / the evil bit, zero UDP checksums, ICMP errors
quoting a flow. Input layout: settings byte, then [len lo, len hi, time step] + frame.

    tests/fuzz/make_observe_seeds.py tests/fuzz/corpus/observe
"""
import os
import sys

from scapy.all import (ICMP, IP, TCP, UDP, Ether, ICMPv6DestUnreach, IPv6, IPv6ExtHdrDestOpt,
                       IPv6ExtHdrHopByHop, HBHOptUnknown, Raw)

A4, B4 = "192.0.2.1", "198.51.100.7"
A6, B6 = "2001:db8::1", "2001:db8:ff::7"


def scitags(exp, act):
    return HBHOptUnknown(otype=0x1E, optdata=bytes([exp >> 8, exp & 0xFF, act]))


def seed(frames, settings=0):
    out = bytearray([settings])
    for step, f in frames:
        b = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / f)
        out += bytes([len(b) & 0xFF, len(b) >> 8, step]) + b
    return bytes(out)


def tcp4_tfo():
    cookie = b"\x11" * 8
    return seed([
        (1, IP(src=A4, dst=B4, tos=0x02) / TCP(sport=40000, dport=80, flags="S", seq=1000,
                                              options=[("MSS", 1460), (34, cookie)]) / Raw(b"GET")),
        (1, IP(src=B4, dst=A4, tos=0x03) / TCP(sport=80, dport=40000, flags="SA", ack=1004,
                                              options=[("MSS", 1400), (34, cookie)])),
        (1, IP(src=A4, dst=B4, tos=0x28 | 1, flags=0x4) / TCP(sport=40000, dport=80, flags="A")
         / Raw(b"x" * 20)),
        (1, IP(src=A4, dst=B4) / TCP(sport=40000, dport=80, flags="FA")),
        (1, IP(src=B4, dst=A4) / TCP(sport=80, dport=40000, flags="FA")),
    ])


def tcp_odd_options():
    # Experimental Fast Open (254, 255 with the 0xF989 id), a 3-byte MSS, a zero-length
    # option, an option cut by the header's end.
    return seed([
        (1, IP(src=A4, dst=B4) / TCP(sport=1, dport=2, flags="S",
                                     options=[(254, b"\xf9\x89" + b"\x22" * 4), (2, b"\x05")])),
        (1, IP(src=B4, dst=A4) / TCP(sport=2, dport=1, flags="SA",
                                     options=[(255, b"\xf9\x89" + b"\x33" * 6)])),
        (1, IP(src=A4, dst=B4) / TCP(sport=1, dport=2, flags="S", dataofs=7)
         / Raw(b"\x01\x02\x00\x05\xb4\x08\x00\x00")),
        (1, IP(src=A4, dst=B4) / TCP(sport=1, dport=2, flags="S", dataofs=6) / Raw(b"\x02\x06\x05")),
        (1, IP(src=B4, dst=A4) / TCP(sport=2, dport=1, flags="R")),
    ])


def ipv6_hbh_dstopt():
    return seed([
        (1, IPv6(src=A6, dst=B6, fl=0x12345, tc=0x02) / IPv6ExtHdrHopByHop(options=[scitags(0x01A2, 7)])
         / TCP(sport=5000, dport=443, flags="S", options=[("MSS", 1440)])),
        (1, IPv6(src=B6, dst=A6, fl=0xABCDE) / IPv6ExtHdrDestOpt(options=[scitags(3, 9)])
         / TCP(sport=443, dport=5000, flags="SA")),
        (1, IPv6(src=A6, dst=B6, fl=0x12346) / TCP(sport=5000, dport=443, flags="A") / Raw(b"d" * 30)),
        (1, IPv6(src=A6, dst=B6) / IPv6ExtHdrDestOpt(options=[HBHOptUnknown(otype=0x1E, optdata=b"\x01\x02")])
         / UDP(sport=7, dport=9, chksum=0) / Raw(b"u")),
        (1, IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop(options=[HBHOptUnknown(otype=0x05, optdata=b"\x00\x00"),
                                                         scitags(0xFFFF, 63)])
         / IPv6ExtHdrDestOpt(options=[scitags(1, 1)]) / UDP(sport=7, dport=9) / Raw(b"v")),
    ])


def flow_labels():
    return seed([
        (1, IPv6(src=A6, dst=B6, fl=0x3FEFC) / UDP(sport=53000, dport=53, chksum=0) / Raw(b"q")),
        (2, IPv6(src=B6, dst=A6, fl=0x00001) / UDP(sport=53, dport=53000) / Raw(b"r")),
        (3, IPv6(src=A6, dst=B6, fl=0x40103) / UDP(sport=53000, dport=53) / Raw(b"s")),
        (40, IPv6(src=A6, dst=B6, fl=0x40103) / UDP(sport=53000, dport=53) / Raw(b"t")),
    ])


def icmp_errors():
    quoted4 = IP(src=A4, dst=B4, flags=0x4) / UDP(sport=33000, dport=33434)
    quoted6 = IPv6(src=A6, dst=B6, fl=5) / TCP(sport=6000, dport=22, flags="S")
    return seed([
        (1, quoted4 / Raw(b"probe")),
        (1, IP(src=B4, dst=A4) / ICMP(type=3, code=3) / bytes(quoted4)[:28]),
        (1, quoted6),
        (1, IPv6(src=B6, dst=A6) / ICMPv6DestUnreach(code=4) / bytes(quoted6)),
        (1, IP(src=A4, dst=B4) / ICMP(type=8) / Raw(b"ping")),
    ], settings=0x08)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "observe")
    os.makedirs(out, exist_ok=True)
    for name, make in [("tcp4-tfo-mss", tcp4_tfo), ("tcp-odd-options", tcp_odd_options),
                       ("ipv6-hbh-dstopt-scitags", ipv6_hbh_dstopt), ("ipv6-flow-labels", flow_labels),
                       ("icmp-errors-quoting", icmp_errors)]:
        with open(os.path.join(out, name), "wb") as f:
            f.write(make())


if __name__ == "__main__":
    main()
