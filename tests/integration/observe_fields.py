"""The field names of `flowmark observe`'s records, by chain, for the observe tests (which
state the expected values themselves). Written from the contract (README "Chains"), not read
from flowmark: a test comparing against these finds a renamed or missing field.

BASIC_FIELDS: the record itself, in output order. CHAIN_ORDER: the chains in the order their
fields follow. CHAIN_FIELDS: each chain's fields (within a chain the tests compare by name).
"""

BASIC_FIELDS = ["sip", "dip", "proto", "sp", "dp", "first", "last", "pkt_fwd", "pkt_rev",
                "oct_fwd", "oct_rev", "ip_version", "vlan", "tcp_flags_fwd", "tcp_flags_rev",
                "fragments", "icmp_errors", "continuation"]
CHAIN_ORDER = ["tcp", "ecn", "dscp", "mss", "tfo", "udp", "icmp", "evil", "scitags"]
CHAIN_FIELDS = {
    "tcp": ["tcp_synflags_fwd", "tcp_synflags_rev", "tcp_fin_fwd", "tcp_fin_rev", "tcp_rst_fwd",
            "tcp_rst_rev", "tcp_connected"],
    "ecn": [f"ecn_{m}_{t}_{d}" for d in ("fwd", "rev") for t in ("syn", "data")
            for m in ("ect0", "ect1", "ce")],
    "dscp": ["dscp_mark_syn_fwd", "dscp_mark_syn_rev", "dscp_mark_data_fwd", "dscp_mark_data_rev"],
    "mss": ["mss_len_fwd", "mss_len_rev", "mss_value_fwd", "mss_value_rev"],
    "tfo": ["tfo_synkind", "tfo_ackkind", "tfo_synclen", "tfo_ackclen", "tfo_seq", "tfo_dlen",
            "tfo_ack"],
    "udp": ["udp_zero_checksum_fwd", "udp_zero_checksum_rev"],
    "icmp": ["icmp_unreachable"],
    "evil": ["evilbit_syn_fwd", "evilbit_syn_rev", "evilbit_data_fwd", "evilbit_data_rev"],
    "scitags": ["flowlabel_fwd", "flowlabel_rev", "flowlabel_changed_fwd", "flowlabel_changed_rev",
                "scitags_experiment", "scitags_activity", "scitags_source",
                "scitags_experiment_name", "scitags_activity_name"],
}
