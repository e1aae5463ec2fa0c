/* probe_swar.p4: forward.p4 plus the 32-candidate probe made on packed buckets (a benchmark: what such a probe costs).
 * The same 4 crc32 bucket hashes as probe_floor.p4, but a bucket's 8 places are one register cell of 8 lanes of 128 bits,
 * read once, and the two tests run on all 8 lanes at once (SWAR: "SIMD within a register"), in a constant number of
 * wide operations per bucket instead of 8 reads and 16 tests:
 *   lane k (bits 128k ..): last_seen 0..47 | guard 48 | state 49..50 | guard 51 | key 52..107 | guard 108 | zero above.
 *   A field f of w bits is nonzero iff (f + (2^w - 1)) carries into its guard bit, so per bucket v:
 *     key differs:  ((v ^ krep) & KMASK) + KMASK, guard 108;   state != FREE: (v & SMASK) + SMASK, guard 51;
 *     state != OPEN: ((v ^ SOPEN) & SMASK) + SMASK, guard 51;
 *     idle > timeout: ((((now | 2^48) - last_seen) & LMASK) + (2^48 - 1 - timeout)) carries into guard 48
 *     (2^48 + now - last_seen never borrows from the lane above, so lanes never mix).
 *   match (holds the key, state != FREE) of way j lands on bit 51 + j of each lane, held (OPEN, not idle) on 55 + j;
 *   gather_high .. gather_1 fold the 8 lanes into masks: byte k = place k of the 4 buckets, bit j = match in way j,
 *   bit 4 + j = held. Only the fields' bits are read: guard bits and bits 109..127 may hold anything.
 * No choice, no write, no service, no group. `python -m p4lb.lab.instructions` measures it beside probe_floor.p4;
 * tests/test_probe_swar.py proves on this JSON (every register content, client and clock; the timeout is this
 * program's constant) that masks are the 64 tests. Not a load balancer. p4c's BMv2 backend refuses shifts of more
 * than 256 bits: the fold's 480-bit shift is two actions' 240. */
#include <core.p4>
#include <v1model.p4>

#define KMASK 1024w0xffffffffffffff000000000000000000ffffffffffffff000000000000000000ffffffffffffff000000000000000000ffffffffffffff000000000000000000ffffffffffffff000000000000000000ffffffffffffff000000000000000000ffffffffffffff000000000000000000ffffffffffffff0000000000000
#define SMASK 1024w0x600000000000000000000000000000006000000000000000000000000000000060000000000000000000000000000000600000000000000000000000000000006000000000000000000000000000000060000000000000000000000000000000600000000000000000000000000000006000000000000
#define SGUARD 1024w0x800000000000000000000000000000008000000000000000000000000000000080000000000000000000000000000000800000000000000000000000000000008000000000000000000000000000000080000000000000000000000000000000800000000000000000000000000000008000000000000
#define SOPEN 1024w0x200000000000000000000000000000002000000000000000000000000000000020000000000000000000000000000000200000000000000000000000000000002000000000000000000000000000000020000000000000000000000000000000200000000000000000000000000000002000000000000
#define LMASK 1024w0xffffffffffff00000000000000000000ffffffffffff00000000000000000000ffffffffffff00000000000000000000ffffffffffff00000000000000000000ffffffffffff00000000000000000000ffffffffffff00000000000000000000ffffffffffff00000000000000000000ffffffffffff
#define LGUARD 1024w0x100000000000000000000000000000001000000000000000000000000000000010000000000000000000000000000000100000000000000000000000000000001000000000000000000000000000000010000000000000000000000000000000100000000000000000000000000000001000000000000
#define LANE0 1024w0x100000000000000000000000000000001000000000000000000000000000000010000000000000000000000000000000100000000000000000000000000000001000000000000000000000000000000010000000000000000000000000000000100000000000000000000000000000001
#define KLANE0 1024w0x1000000000000000000000000000000010000000000000000000000000000000100000000000000000000000000000001000000000000000000000000000000010000000000000000000000000000000100000000000000000000000000000001000000000000000000000000000000010000000000000
#define LOW512 1024w0xffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff
#define LOW256 1024w0xffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff
#define TIMEOUT 48w60000000  /* probe_floor.p4's */
#define LOW64 1024w0xffffffffffffffff

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
    bit<16> tcp_len;
    bit<32> p0; bit<32> p1; bit<32> p2; bit<32> p3;
    bit<1024> krep; bit<1024> nrep; bit<1024> crep; bit<1024> all; bit<1024> high; bit<64> masks;
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
    register<bit<1024>>(131072) buckets;  /* 4 ways x 32,768 buckets of 8 places: 2^20 places, as probe_floor.p4 */
#define BUCKET_OF(j, FIELDS) hash(b, HashAlgorithm.crc32, 32w0, FIELDS, 32w32768); meta.p ## j = 32w ## j * 32768 + b;
    action hashes() {
        bit<32> b;
        BUCKET_OF(0, ({ hdr.ipv4.srcAddr ++ hdr.ipv4.dstAddr ++ hdr.ipv4.protocol ++ hdr.tcp.srcPort ++ hdr.tcp.dstPort }))
        BUCKET_OF(1, ({ hdr.ipv4.dstAddr ++ hdr.ipv4.srcAddr ++ hdr.ipv4.protocol ++ hdr.tcp.srcPort ++ hdr.tcp.dstPort }))
        BUCKET_OF(2, ({ hdr.ipv4.dstAddr ++ hdr.ipv4.protocol ++ hdr.ipv4.srcAddr ++ hdr.tcp.srcPort ++ hdr.tcp.dstPort }))
        BUCKET_OF(3, ({ hdr.ipv4.dstAddr ++ hdr.ipv4.protocol ++ hdr.tcp.srcPort ++ hdr.ipv4.srcAddr ++ hdr.tcp.dstPort }))
    }
    /* the key, the clock and 2^48 - 1 - timeout in every lane: a product by a constant with one bit per lane */
    action lanes() {
        meta.krep = (bit<1024>)(8w0 ++ hdr.ipv4.srcAddr ++ hdr.tcp.srcPort) * KLANE0;
        meta.nrep = (bit<1024>)std.ingress_global_timestamp * LANE0 | LGUARD;
        meta.crep = (bit<1024>)(48w0xffffffffffff - TIMEOUT) * LANE0;
        meta.all = 0;
    }
#define PROBE(j) \
        buckets.read(v, meta.p ## j); \
        meta.all = meta.all \
            | (((v & SMASK) + SMASK) & SGUARD & ~((((v ^ meta.krep) & KMASK) + KMASK) >> 57)) << j \
            | (SGUARD & ~(((v ^ SOPEN) & SMASK) + SMASK) & ~((((meta.nrep - (v & LMASK)) & LMASK) + meta.crep) << 3)) << (4 + j);
    action probe() {
        bit<1024> v;
        PROBE(0) PROBE(1) PROBE(2) PROBE(3)
    }
    /* lane k's bits 51..58 to byte k of masks: lanes 4..7 onto 0..3 (+32 bits), 2..3 onto 0..1 (+16), 1 onto 0 (+8) */
    action gather_high() { meta.all = meta.all >> 51; meta.high = meta.all >> 240; }
    action gather_4() { meta.all = (meta.all | meta.high >> 240) & LOW512; }
    action gather_2() { meta.all = (meta.all | meta.all >> 240) & LOW256; }
    action gather_1() { meta.masks = (bit<64>)((meta.all | meta.all >> 120) & LOW64); }
    table forward {
        key = { hdr.ipv4.dstAddr: lpm; }
        actions = { set_nhop; drop; }
        default_action = drop();
        size = 1024;
    }
    apply {
        if (hdr.ipv4.isValid()) {
            if (hdr.tcp.isValid()) { hashes(); lanes(); probe(); gather_high(); gather_4(); gather_2(); gather_1(); }
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
