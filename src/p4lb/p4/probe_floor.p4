/* probe_floor.p4: forward.p4 plus a 32-candidate probe made place by place, as p4lb.p4 makes it (a benchmark): 4 crc32
 * bucket hashes, and for each of the 32 candidates one read of a packed register (state 2 | key 56 | last_seen 48
 * bits: one read where p4lb.p4 makes three) and the two tests p4lb.p4 makes (holds the key; held: OPEN and not idle).
 * No choice, no write, no service, no group. probe_swar.p4 makes the same tests on packed buckets, 8 places per
 * test, for 3.1 times less. `python -m p4lb.lab.instructions` measures both beside forward.p4 and p4lb.p4.
 * Not a load balancer: no proofs.
 */
#include <core.p4>
#include <v1model.p4>

header ethernet_t { bit<48> dstAddr; bit<48> srcAddr; bit<16> etherType; }
header ipv4_t {
    bit<4> version; bit<4> ihl; bit<8> diffserv; bit<16> totalLen; bit<16> identification; bit<3> flags;
    bit<13> fragOffset; bit<8> ttl; bit<8> protocol; bit<16> hdrChecksum; bit<32> srcAddr; bit<32> dstAddr;
}
header tcp_t {
    bit<16> srcPort; bit<16> dstPort; bit<32> seqNo; bit<32> ackNo; bit<4> dataOffset; bit<4> res;
    bit<8> flags; bit<16> window; bit<16> checksum; bit<16> urgentPtr;
}
struct headers { ethernet_t ethernet; ipv4_t ipv4; tcp_t tcp; }
struct metadata {
    bit<16> tcp_len; bit<56> key; bit<48> now; bit<48> timeout; bit<32> match_mask; bit<32> held_mask;
    bit<32> p0; bit<32> p1; bit<32> p2; bit<32> p3;
}

parser FwdParser(packet_in pkt, out headers hdr, inout metadata meta, inout standard_metadata_t std) {
    state start {
        pkt.extract(hdr.ethernet);
        transition select(hdr.ethernet.etherType) { 0x0800: parse_ipv4; default: accept; }
    }
    state parse_ipv4 {
        pkt.extract(hdr.ipv4);
        meta.tcp_len = hdr.ipv4.totalLen - 16w20;
        transition select(hdr.ipv4.ihl, hdr.ipv4.protocol) { (4w5, 8w6): parse_tcp; default: accept; }
    }
    state parse_tcp { pkt.extract(hdr.tcp); transition accept; }
}

control FwdVerify(inout headers hdr, inout metadata meta) { apply { } }

control FwdIngress(inout headers hdr, inout metadata meta, inout standard_metadata_t std) {
    action set_nhop(bit<48> mac, bit<9> port) { hdr.ethernet.dstAddr = mac; std.egress_spec = port; }
    action drop() { mark_to_drop(std); }
    register<bit<106>>(1048576) places;  /* per place: state (2) | key (56) | last_seen (48) */
    /* candidate c = 8j + k: place p_j + k, its two tests as p4lb.p4's PROBE makes them */
#define PROBE(j, k) \
        places.read(v, meta.p ## j + k); \
        meta.match_mask = v[57:2] == meta.key && v[1:0] != 0 ? meta.match_mask | (32w1 << (j * 8 + k)) : meta.match_mask; \
        meta.held_mask = v[1:0] == 1 && meta.now - v[105:58] <= meta.timeout ? meta.held_mask | (32w1 << (j * 8 + k)) : meta.held_mask;
#define PROBE_WAY(j) PROBE(j, 0) PROBE(j, 1) PROBE(j, 2) PROBE(j, 3) PROBE(j, 4) PROBE(j, 5) PROBE(j, 6) PROBE(j, 7)
#define BUCKET_OF(j, FIELDS) hash(b, HashAlgorithm.crc32, 32w0, FIELDS, 32w32768); meta.p ## j = (32w ## j * 32768 + b) * 8;
    action buckets() {
        bit<32> b;
        BUCKET_OF(0, ({ hdr.ipv4.srcAddr ++ hdr.ipv4.dstAddr ++ hdr.ipv4.protocol ++ hdr.tcp.srcPort ++ hdr.tcp.dstPort }))
        BUCKET_OF(1, ({ hdr.ipv4.dstAddr ++ hdr.ipv4.srcAddr ++ hdr.ipv4.protocol ++ hdr.tcp.srcPort ++ hdr.tcp.dstPort }))
        BUCKET_OF(2, ({ hdr.ipv4.dstAddr ++ hdr.ipv4.protocol ++ hdr.ipv4.srcAddr ++ hdr.tcp.srcPort ++ hdr.tcp.dstPort }))
        BUCKET_OF(3, ({ hdr.ipv4.dstAddr ++ hdr.ipv4.protocol ++ hdr.tcp.srcPort ++ hdr.ipv4.srcAddr ++ hdr.tcp.dstPort }))
    }
    action probe() {
        bit<106> v;
        meta.key = 8w0 ++ hdr.ipv4.srcAddr ++ hdr.tcp.srcPort;
        meta.now = std.ingress_global_timestamp;
        meta.timeout = 48w60000000;
        meta.match_mask = 0;
        meta.held_mask = 0;
        PROBE_WAY(0) PROBE_WAY(1) PROBE_WAY(2) PROBE_WAY(3)
    }
    table forward {
        key = { hdr.ipv4.dstAddr: lpm; }
        actions = { set_nhop; drop; }
        default_action = drop();
        size = 1024;
    }
    apply {
        if (hdr.ipv4.isValid()) {
            if (hdr.tcp.isValid()) { buckets(); probe(); }
            forward.apply();
        } else { mark_to_drop(std); }
    }
}

control FwdEgress(inout headers hdr, inout metadata meta, inout standard_metadata_t std) { apply { } }

control FwdCompute(inout headers hdr, inout metadata meta) {
    apply {
        update_checksum(hdr.ipv4.isValid(), { hdr.ipv4.version, hdr.ipv4.ihl, hdr.ipv4.diffserv, hdr.ipv4.totalLen,
            hdr.ipv4.identification, hdr.ipv4.flags, hdr.ipv4.fragOffset, hdr.ipv4.ttl, hdr.ipv4.protocol,
            hdr.ipv4.srcAddr, hdr.ipv4.dstAddr }, hdr.ipv4.hdrChecksum, HashAlgorithm.csum16);
        update_checksum_with_payload(hdr.tcp.isValid(), { hdr.ipv4.srcAddr, hdr.ipv4.dstAddr, 8w0, hdr.ipv4.protocol,
            meta.tcp_len, hdr.tcp.srcPort, hdr.tcp.dstPort, hdr.tcp.seqNo, hdr.tcp.ackNo, hdr.tcp.dataOffset,
            hdr.tcp.res, hdr.tcp.flags, hdr.tcp.window, hdr.tcp.urgentPtr }, hdr.tcp.checksum, HashAlgorithm.csum16);
    }
}

control FwdDeparser(packet_out pkt, in headers hdr) {
    apply { pkt.emit(hdr.ethernet); pkt.emit(hdr.ipv4); pkt.emit(hdr.tcp); }
}

V1Switch(FwdParser(), FwdVerify(), FwdIngress(), FwdEgress(), FwdCompute(), FwdDeparser()) main;
