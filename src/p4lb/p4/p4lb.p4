/* p4lb: L4 load balancer, P4_16 for BMv2 v1model. Implements model/p4lb.py exactly; names are the model's.
 *
 * Services: up to SERVICES = 256, each a VIP:port. The vip entry gives a packet its service id and the service's
 * committed version; every per-service table is keyed by (service, ...) and every per-service register or counter
 * cell is indexed by the service first, so a packet reads and writes only its service's state (P9, proven on this
 * program's JSON by verify.bmv2.equivalence for any id). The flow table, backend_open and idle_timeout are shared:
 * a flow key is service ++ client address ++ client port.
 * Controller-written tables: vip (lb_select(service, version): each service's single atomic commit point), rr_group
 * (set_group(size) per service and version), rr_member (set_member(backend) per service, version and position),
 * backend (set_backend(mac, addr, port) per service and backend), forward and send_frame (plain L3 for the return path).
 * Data-plane registers: rr_next (per service and version: service * 2 + version), flow_state, flow_key, flow_backend,
 * flow_last_seen (per flow place), idle_timeout (written once at deploy), backend_open (per service and backend id,
 * service * 256 + backend: the flow places OPEN holding an entry of that service and backend, kept as
 * model.p4lb._put keeps it: +1 for a new flow, -1 for the OPEN entry a close turns CLOSING or a new flow reclaims,
 * whichever service's entry it was; verify.counts proves it equals the OPEN places, so its bit<32> cells never
 * wrap). Counters: lb_drops (service * 8 + model.packet.DropReason), backend_flows (service * 256 + backend),
 * bad_checksum (IPv4 packets of no service with a bad header checksum).
 * No loop over backends: one group size, one member and a flow's 32 candidate places per packet.
 *
 * The flow table (model.flowtable, docs/flow-table.md): FLOW_PLACES = 2^FLOW_BITS places in WAYS = 4 equal parts of
 * buckets of BUCKET = 8 consecutive places. Way j's bucket is crc32 of the 5-tuple in the field order
 * flowtable.WAY_ORDERS[j], modulo the buckets per way; a flow's candidates are its 4 buckets' 32 places, way by way.
 * The place holding the packet's key (any state but FREE) is its flow's; a new flow takes the least-loaded bucket's
 * (fewest held places, leftmost on ties) first place not held by an open flow, and is refused only when all 32 are.
 * FLOW_BITS is 20 (1M places) unless the build says otherwise (-DFLOW_BITS=5: one bucket per way, for tests).
 *
 * The CPU port (CPU_PORT, simple_switch_grpc --cpu-port 510) carries the controller's register access: BMv2's
 * P4Runtime server reads and writes tables and counters but not registers, so a P4Runtime PacketOut with a
 * `cpu_out` header asks the ingress to write rr_next / idle_timeout and to read one flow slot, and the answer
 * comes back as a PacketIn (`cpu_in`). CPU_SCAN reads SCAN_WIDTH consecutive slots into a `scan` header stack
 * carried in the request's payload and filled in place (the controller's flow listing); CPU_OPEN reads OPEN_WIDTH
 * cells of backend_open the same way (`p4lb status`: one request, however many flow places).
 * Only packets from the CPU port are parsed this way: clients cannot.
 * A packet whose backend has no `backend` entry is dropped and counted (NO_BACKEND_ENTRY), never sent to port 0.
 */
#include <core.p4>
#include <v1model.p4>

#ifndef FLOW_BITS
#define FLOW_BITS 20
#endif
#define FLOW_PLACES (32w1 << FLOW_BITS)
#define WAYS 4
#define BUCKET 8
#define BUCKETS (FLOW_PLACES >> 5)  /* per way: FLOW_PLACES / (WAYS * BUCKET) */
#define MAX_BACKENDS 128
#define SERVICES 256        /* one per 8-bit service id: no id indexes past a register's end */
#define SERVICE_CELLS 65536 /* per (service, 8-bit backend id): index service * 256 + backend */
#define SCAN_WIDTH 64
#define OPEN_CELLS SERVICE_CELLS  /* backend_open: one cell per (service, 8-bit backend id), so no index is out of range */
#define OPEN_WIDTH 64   /* backend_open cells per CPU_OPEN answer */

const bit<16> ETH_IPV4 = 0x0800;
const bit<8>  PROTO_TCP = 6;
const bit<8>  F_FIN = 0x01;
const bit<8>  F_SYN = 0x02;
const bit<8>  F_RST = 0x04;
const bit<8>  F_ACK = 0x10;
const bit<2>  FREE = 0;
const bit<2>  OPEN = 1;
const bit<2>  CLOSING = 2;
const bit<32> NO_ELIGIBLE = 1;
const bit<32> FLOW_TABLE_FULL = 2;
const bit<32> UNKNOWN_FLOW = 3;
const bit<32> MALFORMED = 4;
const bit<32> NO_BACKEND_ENTRY = 5;
const bit<9>  CPU_PORT = 510;
const bit<32> DROP_REASONS = 8;       /* lb_drops: index service * 8 + reason */
const bit<8>  CPU_READ = 1;           /* read flow slot `index` (and the dispatch registers) */
const bit<8>  CPU_WRITE_RR_NEXT = 2;  /* rr_next[service * 2 + index % 2] := value */
const bit<8>  CPU_WRITE_TIMEOUT = 3;  /* idle_timeout := value */
const bit<8>  CPU_SCAN = 4;           /* read slots index*SCAN_WIDTH .. +SCAN_WIDTH-1 into hdr.scan */
const bit<8>  CPU_OPEN = 5;           /* read backend_open[index*OPEN_WIDTH .. +OPEN_WIDTH-1] into hdr.open */

@controller_header("packet_out")
header cpu_out_t {
    bit<8>  op;
    bit<8>  service;  /* the service whose rr_next the request writes (CPU_WRITE_RR_NEXT) and every answer reads */
    bit<32> index;
    bit<48> value;
}

@controller_header("packet_in")
header cpu_in_t {
    bit<8>  op;
    bit<8>  service;
    bit<32> index;
    bit<48> value;
    bit<8>  flow_state;
    bit<56> flow_key;
    bit<8>  flow_backend;
    bit<48> flow_last_seen;
    bit<8>  rr_next0;
    bit<8>  rr_next1;
    bit<48> idle_timeout;
    bit<48> now;
}

/* CPU_SCAN's answer: SCAN_WIDTH flow places, each flow_state, flow_backend, flow_key, flow_last_seen (15 bytes), in place
 * order. One header, not a stack of SCAN_WIDTH: BMv2 invalidates every header instance of every packet, so a stack
 * cost each client packet SCAN_WIDTH invalidations; the bytes are the same. */
#define SCAN_ENTRY(i) bit<8> flow_state ## i; bit<8> flow_backend ## i; bit<56> flow_key ## i; bit<48> flow_last_seen ## i;
#define ENTRIES64(E) \
    E(0) E(1) E(2) E(3) E(4) E(5) E(6) E(7) E(8) E(9) E(10) E(11) E(12) E(13) E(14) E(15) \
    E(16) E(17) E(18) E(19) E(20) E(21) E(22) E(23) E(24) E(25) E(26) E(27) E(28) E(29) E(30) E(31) \
    E(32) E(33) E(34) E(35) E(36) E(37) E(38) E(39) E(40) E(41) E(42) E(43) E(44) E(45) E(46) E(47) \
    E(48) E(49) E(50) E(51) E(52) E(53) E(54) E(55) E(56) E(57) E(58) E(59) E(60) E(61) E(62) E(63)
header flow_scan_t {
    ENTRIES64(SCAN_ENTRY)
}

/* CPU_OPEN's answer: OPEN_WIDTH backend_open cells (bit<32> each), in cell order; one header, as above */
#define OPEN_ENTRY(i) bit<32> count ## i;
header open_count_t {
    ENTRIES64(OPEN_ENTRY)
}

/* The cells a CPU_SCAN / CPU_OPEN request reads: a header the deparser never emits, made valid (and so zeroed) by
 * cpu_places on CPU packets only. As metadata its 64 fields were set to 0 for every packet (BMv2 resets every
 * metadata field of every packet, hundreds of instructions each); a header costs other packets one validity bit. */
#define AT_FIELD(i) bit<32> at ## i;
header cpu_at_t {
    ENTRIES64(AT_FIELD)   /* atI: the cell a CPU_SCAN / CPU_OPEN request reads into its answer's entry I (cpu_places) */
}

header ethernet_t {
    bit<48> dstAddr;
    bit<48> srcAddr;
    bit<16> etherType;
}

header ipv4_t {
    bit<4>  version;
    bit<4>  ihl;
    bit<8>  diffserv;
    bit<16> totalLen;
    bit<16> identification;
    bit<3>  flags;
    bit<13> fragOffset;
    bit<8>  ttl;
    bit<8>  protocol;
    bit<16> hdrChecksum;
    bit<32> srcAddr;
    bit<32> dstAddr;
}

header tcp_t {
    bit<16> srcPort;
    bit<16> dstPort;
    bit<32> seqNo;
    bit<32> ackNo;
    bit<4>  dataOffset;
    bit<4>  res;
    bit<8>  flags;
    bit<16> window;
    bit<16> checksum;
    bit<16> urgentPtr;
}

struct headers {
    cpu_out_t  cpu_out;
    cpu_in_t   cpu_in;
    flow_scan_t scan;
    open_count_t open;
    cpu_at_t   cpu_at;   /* never emitted */
    ethernet_t ethernet;
    ipv4_t     ipv4;
    tcp_t      tcp;
}

struct lb_meta_t {
    bit<1>  vip_hit;
    bit<8>  service;  /* the vip entry's service: every per-service table key and register index starts with it */
    bit<1>  version;
    bit<8>  size;
    bit<8>  position;
    bit<8>  backend;
    bit<32> match_mask;  /* bit c: candidate c holds the packet's key (state != FREE) */
    bit<32> held_mask;   /* bit c: candidate c holds an open flow idle for at most the timeout */
    bit<8>  load0;    /* way j's bucket: its places held by an open flow (flow_load) */
    bit<8>  load1;
    bit<8>  load2;
    bit<8>  load3;
    bit<8>  way;      /* the least-loaded way: fewest held places, leftmost on ties (flow_way) */
    bit<8>  free;     /* bit k: place k of that way's bucket is not held by an open flow (flow_free) */
    bit<32> p0_0;     /* pj_k: candidate place k of way j's bucket, pj_0 + k; pj_0 is the bucket's first place (flow_buckets) */
    bit<32> p0_1;
    bit<32> p0_2;
    bit<32> p0_3;
    bit<32> p0_4;
    bit<32> p0_5;
    bit<32> p0_6;
    bit<32> p0_7;
    bit<32> p1_0;
    bit<32> p1_1;
    bit<32> p1_2;
    bit<32> p1_3;
    bit<32> p1_4;
    bit<32> p1_5;
    bit<32> p1_6;
    bit<32> p1_7;
    bit<32> p2_0;
    bit<32> p2_1;
    bit<32> p2_2;
    bit<32> p2_3;
    bit<32> p2_4;
    bit<32> p2_5;
    bit<32> p2_6;
    bit<32> p2_7;
    bit<32> p3_0;
    bit<32> p3_1;
    bit<32> p3_2;
    bit<32> p3_3;
    bit<32> p3_4;
    bit<32> p3_5;
    bit<32> p3_6;
    bit<32> p3_7;
    bit<8>  cand;     /* the flow's candidate: the one holding its key, else the one a new flow takes (else 0) */
    bit<32> slot;     /* the flow's place: candidate cand's */
    bit<1>  found;    /* a candidate holds the packet's key */
    bit<1>  room;     /* some candidate of the least-loaded bucket is not held by an open flow */
    bit<56> key;      /* service ++ client address ++ client port */
    bit<48> now;
    bit<48> timeout;
    bit<16> tcp_len;
    bit<32> svc_base; /* the service's first cell of backend_open and backend_flows: service * 256 */
    bit<32> rr_cell;  /* rr_next's cell of the packet's service and version: service * 2 + version */
}

struct metadata {
    lb_meta_t lb;
}

parser MyParser(packet_in pkt, out headers hdr, inout metadata meta, inout standard_metadata_t std) {
    state start {
        transition select(std.ingress_port) {
            CPU_PORT: parse_cpu_out;
            default: parse_ethernet;
        }
    }
    state parse_cpu_out {
        pkt.extract(hdr.cpu_out);
        transition select(hdr.cpu_out.op) {
            CPU_SCAN: parse_scan;
            CPU_OPEN: parse_open;
            default: accept;
        }
    }
    /* CPU_SCAN's payload is SCAN_WIDTH empty slots, filled in place (BMv2 cannot grow a packet by that much) */
    state parse_scan {
        pkt.extract(hdr.scan);
        transition accept;
    }
    /* CPU_OPEN's payload: OPEN_WIDTH empty cells, filled in place */
    state parse_open {
        pkt.extract(hdr.open);
        transition accept;
    }
    state parse_ethernet {
        pkt.extract(hdr.ethernet);
        transition select(hdr.ethernet.etherType) {
            ETH_IPV4: parse_ipv4;
            default: accept;
        }
    }
    state parse_ipv4 {
        pkt.extract(hdr.ipv4);
        meta.lb.tcp_len = hdr.ipv4.totalLen - 16w20;
        /* only option-less, unfragmented IPv4 carries a TCP header the balancer reads */
        transition select(hdr.ipv4.version, hdr.ipv4.ihl, hdr.ipv4.fragOffset, hdr.ipv4.flags[0:0], hdr.ipv4.protocol) {
            (4w4, 4w5, 13w0, 1w0, PROTO_TCP): parse_tcp;
            default: accept;
        }
    }
    state parse_tcp {
        pkt.extract(hdr.tcp);
        transition accept;
    }
}

control MyVerifyChecksum(inout headers hdr, inout metadata meta) {
    apply {
        verify_checksum(hdr.ipv4.isValid(), { hdr.ipv4.version, hdr.ipv4.ihl, hdr.ipv4.diffserv, hdr.ipv4.totalLen,
            hdr.ipv4.identification, hdr.ipv4.flags, hdr.ipv4.fragOffset, hdr.ipv4.ttl, hdr.ipv4.protocol,
            hdr.ipv4.srcAddr, hdr.ipv4.dstAddr }, hdr.ipv4.hdrChecksum, HashAlgorithm.csum16);
    }
}

control MyIngress(inout headers hdr, inout metadata meta, inout standard_metadata_t std) {
    register<bit<8>>(SERVICES * 2) rr_next;  /* index service * 2 + version */
    register<bit<2>>(FLOW_PLACES) flow_state;
    register<bit<56>>(FLOW_PLACES) flow_key;
    register<bit<8>>(FLOW_PLACES) flow_backend;
    register<bit<48>>(FLOW_PLACES) flow_last_seen;
    register<bit<48>>(1) idle_timeout;
    register<bit<32>>(OPEN_CELLS) backend_open;
    counter(SERVICES * 8, CounterType.packets) lb_drops;  /* index service * 8 + reason */
    counter(SERVICE_CELLS, CounterType.packets) backend_flows;  /* index service * 256 + backend */
    counter(1, CounterType.packets) bad_checksum;  /* IPv4 packets of no service with a bad header checksum */

    action drop_counted(bit<32> reason) {
        lb_drops.count((bit<32>)meta.lb.service * DROP_REASONS + reason);
        mark_to_drop(std);
    }
    action lb_select(bit<8> service, bit<1> version) { meta.lb.service = service; meta.lb.version = version; meta.lb.vip_hit = 1; }
    action set_group(bit<8> size) { meta.lb.size = size; }
    action set_member(bit<8> backend) { meta.lb.backend = backend; }
    action set_backend(bit<48> mac, bit<32> addr, bit<9> port) {
        hdr.ethernet.dstAddr = mac;
        hdr.ipv4.dstAddr = addr;
        std.egress_spec = port;
    }
    action set_nhop(bit<48> mac, bit<9> port) {
        hdr.ethernet.dstAddr = mac;
        std.egress_spec = port;
    }
    action drop() { mark_to_drop(std); }

    table vip {
        key = { hdr.ipv4.dstAddr: exact; hdr.tcp.dstPort: exact; }
        actions = { lb_select; NoAction; }
        default_action = NoAction();
        size = SERVICES;
    }
    table rr_group {
        key = { meta.lb.service: exact; meta.lb.version: exact; }
        actions = { set_group; }
        default_action = set_group(0);
        size = SERVICES * 2;
    }
    table rr_member {
        key = { meta.lb.service: exact; meta.lb.version: exact; meta.lb.position: exact; }
        actions = { set_member; }
        default_action = set_member(0);
        size = SERVICES * 512;  /* per service, two versions of up to 255 positions (weights list a backend several times) */
    }
    table backend {
        key = { meta.lb.service: exact; meta.lb.backend: exact; }
        actions = { set_backend; NoAction; }
        default_action = NoAction();  /* a miss is dropped and counted as NO_BACKEND_ENTRY */
        size = SERVICES * MAX_BACKENDS;
    }
    table forward {
        key = { hdr.ipv4.dstAddr: lpm; }
        actions = { set_nhop; drop; }
        default_action = drop();
        size = 1024;
    }

    /* the controller's register access (CPU port only): writes first, then the slot and the dispatch registers */
    /* the version's round-robin position: rr_next, or 0 if the group shrank below it (actions keep `?:` inline) */
    action rr_position() {
        rr_next.read(meta.lb.position, meta.lb.rr_cell);
        meta.lb.position = meta.lb.position >= meta.lb.size ? 8w0 : meta.lb.position;
    }
    /* rr_next moves one past the position, wrapping at the group's size */
    action rr_advance() {
        bit<8> nxt = meta.lb.position + 1;
        rr_next.write(meta.lb.rr_cell, nxt >= meta.lb.size ? 8w0 : nxt);
    }
    action cpu_read_globals() {
        rr_next.read(hdr.cpu_in.rr_next0, (bit<32>)hdr.cpu_in.service * 2);
        rr_next.read(hdr.cpu_in.rr_next1, (bit<32>)hdr.cpu_in.service * 2 + 1);
        idle_timeout.read(hdr.cpu_in.idle_timeout, 0);
        hdr.cpu_in.now = std.ingress_global_timestamp;
    }
    action cpu_access() {
        hdr.cpu_in.setValid();
        hdr.cpu_in.op = hdr.cpu_out.op;
        hdr.cpu_in.service = hdr.cpu_out.service;
        hdr.cpu_in.index = hdr.cpu_out.index;
        hdr.cpu_in.value = hdr.cpu_out.value;
        hdr.cpu_out.setInvalid();
        std.egress_spec = CPU_PORT;
    }

    /* model.p4lb's lookup, as the encoding (verify.p4lb_enc.lookup) builds it: flow_buckets computes the 32 candidate places;
     * flow_probe reads the 32 candidates into two masks (bit c = candidate c, way c / 8, place c % 8 of its bucket):
     * match_mask (holds the packet's key, state != FREE: model.p4lb.find) and held_mask (an open flow not idle longer
     * than the timeout: model.p4lb.held); flow_load, flow_way, flow_free and flow_choose compute the rest from the masks. */
#define PROBE(j, k) \
        flow_state.read(cs, meta.lb.p ## j ## _ ## k); \
        flow_key.read(ck, meta.lb.p ## j ## _ ## k); \
        flow_last_seen.read(cl, meta.lb.p ## j ## _ ## k); \
        meta.lb.match_mask = cs != FREE && ck == meta.lb.key ? meta.lb.match_mask | (32w1 << (j * BUCKET + k)) : meta.lb.match_mask; \
        meta.lb.held_mask = cs == OPEN && meta.lb.now - cl <= meta.lb.timeout ? meta.lb.held_mask | (32w1 << (j * BUCKET + k)) : meta.lb.held_mask;
    /* Way j's 8 candidates, pj_0 .. pj_7 (flow_buckets) */
#define PROBE_WAY(j) \
        PROBE(j, 0) PROBE(j, 1) PROBE(j, 2) PROBE(j, 3) PROBE(j, 4) PROBE(j, 5) PROBE(j, 6) PROBE(j, 7)
    /* Way j: its bucket (crc32 over FIELDS, the way's field order, as one concatenation: p4c copies each field of a
     * list into a temporary metadata field first) and its 8 places */
#define BUCKET_OF(j, FIELDS) \
        hash(bucket, HashAlgorithm.crc32, 32w0, FIELDS, BUCKETS); \
        meta.lb.p ## j ## _0 = (32w ## j * BUCKETS + bucket) * BUCKET; meta.lb.p ## j ## _1 = meta.lb.p ## j ## _0 + 1; \
        meta.lb.p ## j ## _2 = meta.lb.p ## j ## _0 + 2; meta.lb.p ## j ## _3 = meta.lb.p ## j ## _0 + 3; \
        meta.lb.p ## j ## _4 = meta.lb.p ## j ## _0 + 4; meta.lb.p ## j ## _5 = meta.lb.p ## j ## _0 + 5; \
        meta.lb.p ## j ## _6 = meta.lb.p ## j ## _0 + 6; meta.lb.p ## j ## _7 = meta.lb.p ## j ## _0 + 7;
#define SRC hdr.ipv4.srcAddr
#define DST hdr.ipv4.dstAddr
#define PROTO hdr.ipv4.protocol
#define SPORT hdr.tcp.srcPort
#define DPORT hdr.tcp.dstPort

    /* Each step is an action of its own, its results in metadata: inside one action p4c substitutes a value's whole
     * expression at every use, and BMv2 evaluates every copy (flow_choose computing everything had 8,547 operators). */
    action flow_buckets() {
        bit<32> bucket;
        BUCKET_OF(0, ({ SRC ++ DST ++ PROTO ++ SPORT ++ DPORT }))
        BUCKET_OF(1, ({ DST ++ SRC ++ PROTO ++ SPORT ++ DPORT }))
        BUCKET_OF(2, ({ DST ++ PROTO ++ SRC ++ SPORT ++ DPORT }))
        BUCKET_OF(3, ({ DST ++ PROTO ++ SPORT ++ SRC ++ DPORT }))
    }

    action flow_probe() {
        bit<2> cs; bit<56> ck; bit<48> cl;
        meta.lb.match_mask = 0;
        meta.lb.held_mask = 0;
        PROBE_WAY(0) PROBE_WAY(1) PROBE_WAY(2) PROBE_WAY(3)
    }

#define M(c) meta.lb.match_mask[c:c] == 1
#define H(c) (bit<8>)meta.lb.held_mask[c:c]
#define LOAD(j) H(j * 8) + H(j * 8 + 1) + H(j * 8 + 2) + H(j * 8 + 3) + H(j * 8 + 4) + H(j * 8 + 5) + H(j * 8 + 6) + H(j * 8 + 7)
    /* the least-loaded way (fewest held places; a strictly smaller later load wins, so leftmost on ties) and its bucket's
     * places not held; found: the first candidate holding the key (c, 31 if none); the bucket's first place not held
     * (i, 7 if none; room if any); the flow's candidate cand (found: c, else room: the new one, else 0). */
    action flow_load() {
        meta.lb.load0 = LOAD(0);
        meta.lb.load1 = LOAD(1);
        meta.lb.load2 = LOAD(2);
        meta.lb.load3 = LOAD(3);
    }
    action flow_way() {
        bit<8> way = 0;
        bit<8> best = meta.lb.load0;
        way = meta.lb.load1 < best ? 8w1 : way; best = meta.lb.load1 < best ? meta.lb.load1 : best;
        way = meta.lb.load2 < best ? 8w2 : way; best = meta.lb.load2 < best ? meta.lb.load2 : best;
        way = meta.lb.load3 < best ? 8w3 : way;
        meta.lb.way = way;
    }
    action flow_free() {
        meta.lb.free = ~(meta.lb.way == 0 ? meta.lb.held_mask[7:0] : (meta.lb.way == 1 ? meta.lb.held_mask[15:8] : (meta.lb.way == 2 ? meta.lb.held_mask[23:16] : meta.lb.held_mask[31:24])));
    }
    action flow_choose() {
        bit<8> c = 31;
        c = M(30) ? 8w30 : c; c = M(29) ? 8w29 : c; c = M(28) ? 8w28 : c; c = M(27) ? 8w27 : c;
        c = M(26) ? 8w26 : c; c = M(25) ? 8w25 : c; c = M(24) ? 8w24 : c; c = M(23) ? 8w23 : c;
        c = M(22) ? 8w22 : c; c = M(21) ? 8w21 : c; c = M(20) ? 8w20 : c; c = M(19) ? 8w19 : c;
        c = M(18) ? 8w18 : c; c = M(17) ? 8w17 : c; c = M(16) ? 8w16 : c; c = M(15) ? 8w15 : c;
        c = M(14) ? 8w14 : c; c = M(13) ? 8w13 : c; c = M(12) ? 8w12 : c; c = M(11) ? 8w11 : c;
        c = M(10) ? 8w10 : c; c = M(9) ? 8w9 : c; c = M(8) ? 8w8 : c; c = M(7) ? 8w7 : c;
        c = M(6) ? 8w6 : c; c = M(5) ? 8w5 : c; c = M(4) ? 8w4 : c; c = M(3) ? 8w3 : c;
        c = M(2) ? 8w2 : c; c = M(1) ? 8w1 : c; c = M(0) ? 8w0 : c;
        meta.lb.found = meta.lb.match_mask != 0 ? 1w1 : 1w0;
        bit<8> i = 7;
        i = meta.lb.free[6:6] == 1 ? 8w6 : i; i = meta.lb.free[5:5] == 1 ? 8w5 : i; i = meta.lb.free[4:4] == 1 ? 8w4 : i;
        i = meta.lb.free[3:3] == 1 ? 8w3 : i; i = meta.lb.free[2:2] == 1 ? 8w2 : i; i = meta.lb.free[1:1] == 1 ? 8w1 : i; i = meta.lb.free[0:0] == 1 ? 8w0 : i;
        meta.lb.room = meta.lb.free != 0 ? 1w1 : 1w0;
        meta.lb.cand = meta.lb.found == 1 ? c : (meta.lb.room == 1 ? meta.lb.way * BUCKET + i : 8w0);
    }
    /* the flow's place: candidate cand's, p[cand / 8]_0 + cand % 8 */
    action flow_place() {
        bit<8> w = meta.lb.cand >> 3;
        meta.lb.slot = (w == 0 ? meta.lb.p0_0 : (w == 1 ? meta.lb.p1_0 : (w == 2 ? meta.lb.p2_0 : meta.lb.p3_0))) + (bit<32>)(meta.lb.cand & 7);
    }

    /* the cells a CPU_SCAN or CPU_OPEN request reads: at_i = (index * 64 + i) & mask, i < 64, in an action of its own
     * so that the reads below index by a field: an expression index costs BMv2 a temporary field per read, and every
     * field of the metadata is reset for every packet. `mask` is the register's size - 1: a table smaller than one
     * scan (FLOW_BITS < 6, the test build) wraps round, never a read past the registers' end. */
#define AT(i) hdr.cpu_at.at ## i = (hdr.cpu_in.index * 64 + i) & mask;
    action cpu_places(bit<32> mask) {
        hdr.cpu_at.setValid();
        AT(0) AT(1) AT(2) AT(3) AT(4) AT(5) AT(6) AT(7)
        AT(8) AT(9) AT(10) AT(11) AT(12) AT(13) AT(14) AT(15)
        AT(16) AT(17) AT(18) AT(19) AT(20) AT(21) AT(22) AT(23)
        AT(24) AT(25) AT(26) AT(27) AT(28) AT(29) AT(30) AT(31)
        AT(32) AT(33) AT(34) AT(35) AT(36) AT(37) AT(38) AT(39)
        AT(40) AT(41) AT(42) AT(43) AT(44) AT(45) AT(46) AT(47)
        AT(48) AT(49) AT(50) AT(51) AT(52) AT(53) AT(54) AT(55)
        AT(56) AT(57) AT(58) AT(59) AT(60) AT(61) AT(62) AT(63)
    }

    /* slot at_i into the answer's entry i; unrolled, as P4 has no loops */
#define SCAN_SLOT(i) \
        flow_state.read(scan_state, hdr.cpu_at.at ## i); \
        hdr.scan.flow_state ## i = (bit<8>)scan_state; \
        flow_backend.read(hdr.scan.flow_backend ## i, hdr.cpu_at.at ## i); \
        flow_key.read(hdr.scan.flow_key ## i, hdr.cpu_at.at ## i); \
        flow_last_seen.read(hdr.scan.flow_last_seen ## i, hdr.cpu_at.at ## i);

    /* backend_open cell at_i into the answer's entry i */
#define OPEN_CELL(i) backend_open.read(hdr.open.count ## i, hdr.cpu_at.at ## i);

    /* if/else rather than early returns: p4c turns each `return` into a flag tested before every later block */
    apply {
        if (hdr.cpu_out.isValid()) {
            if (hdr.cpu_out.op == CPU_SCAN && !hdr.scan.isValid()) {
                mark_to_drop(std);  /* a scan request too short to fill */
            } else if (hdr.cpu_out.op == CPU_OPEN && !hdr.open.isValid()) {
                mark_to_drop(std);  /* a count request too short to fill */
            } else if (hdr.cpu_out.op == CPU_OPEN) {
                cpu_access();
                cpu_places(OPEN_CELLS - 1);  /* 64 cells from a multiple of 64: service s's backends are blocks 4s .. 4s + 3 */
                OPEN_CELL(0) OPEN_CELL(1) OPEN_CELL(2) OPEN_CELL(3) OPEN_CELL(4) OPEN_CELL(5) OPEN_CELL(6) OPEN_CELL(7)
                OPEN_CELL(8) OPEN_CELL(9) OPEN_CELL(10) OPEN_CELL(11) OPEN_CELL(12) OPEN_CELL(13) OPEN_CELL(14) OPEN_CELL(15)
                OPEN_CELL(16) OPEN_CELL(17) OPEN_CELL(18) OPEN_CELL(19) OPEN_CELL(20) OPEN_CELL(21) OPEN_CELL(22) OPEN_CELL(23)
                OPEN_CELL(24) OPEN_CELL(25) OPEN_CELL(26) OPEN_CELL(27) OPEN_CELL(28) OPEN_CELL(29) OPEN_CELL(30) OPEN_CELL(31)
                OPEN_CELL(32) OPEN_CELL(33) OPEN_CELL(34) OPEN_CELL(35) OPEN_CELL(36) OPEN_CELL(37) OPEN_CELL(38) OPEN_CELL(39)
                OPEN_CELL(40) OPEN_CELL(41) OPEN_CELL(42) OPEN_CELL(43) OPEN_CELL(44) OPEN_CELL(45) OPEN_CELL(46) OPEN_CELL(47)
                OPEN_CELL(48) OPEN_CELL(49) OPEN_CELL(50) OPEN_CELL(51) OPEN_CELL(52) OPEN_CELL(53) OPEN_CELL(54) OPEN_CELL(55)
                OPEN_CELL(56) OPEN_CELL(57) OPEN_CELL(58) OPEN_CELL(59) OPEN_CELL(60) OPEN_CELL(61) OPEN_CELL(62) OPEN_CELL(63)
                cpu_read_globals();
            } else if (hdr.cpu_out.op == CPU_SCAN) {
                cpu_access();
                cpu_places(FLOW_PLACES - 1);
                bit<2> scan_state;
                SCAN_SLOT(0) SCAN_SLOT(1) SCAN_SLOT(2) SCAN_SLOT(3) SCAN_SLOT(4) SCAN_SLOT(5) SCAN_SLOT(6) SCAN_SLOT(7)
                SCAN_SLOT(8) SCAN_SLOT(9) SCAN_SLOT(10) SCAN_SLOT(11) SCAN_SLOT(12) SCAN_SLOT(13) SCAN_SLOT(14) SCAN_SLOT(15)
                SCAN_SLOT(16) SCAN_SLOT(17) SCAN_SLOT(18) SCAN_SLOT(19) SCAN_SLOT(20) SCAN_SLOT(21) SCAN_SLOT(22) SCAN_SLOT(23)
                SCAN_SLOT(24) SCAN_SLOT(25) SCAN_SLOT(26) SCAN_SLOT(27) SCAN_SLOT(28) SCAN_SLOT(29) SCAN_SLOT(30) SCAN_SLOT(31)
                SCAN_SLOT(32) SCAN_SLOT(33) SCAN_SLOT(34) SCAN_SLOT(35) SCAN_SLOT(36) SCAN_SLOT(37) SCAN_SLOT(38) SCAN_SLOT(39)
                SCAN_SLOT(40) SCAN_SLOT(41) SCAN_SLOT(42) SCAN_SLOT(43) SCAN_SLOT(44) SCAN_SLOT(45) SCAN_SLOT(46) SCAN_SLOT(47)
                SCAN_SLOT(48) SCAN_SLOT(49) SCAN_SLOT(50) SCAN_SLOT(51) SCAN_SLOT(52) SCAN_SLOT(53) SCAN_SLOT(54) SCAN_SLOT(55)
                SCAN_SLOT(56) SCAN_SLOT(57) SCAN_SLOT(58) SCAN_SLOT(59) SCAN_SLOT(60) SCAN_SLOT(61) SCAN_SLOT(62) SCAN_SLOT(63)
                cpu_read_globals();
            } else {
                cpu_access();
                bit<32> cell = hdr.cpu_in.index & (FLOW_PLACES - 1);
                if (hdr.cpu_in.op == CPU_WRITE_RR_NEXT) {
                    rr_next.write((bit<32>)hdr.cpu_in.service * 2 + (hdr.cpu_in.index & 1), hdr.cpu_in.value[7:0]);
                } else if (hdr.cpu_in.op == CPU_WRITE_TIMEOUT) {
                    idle_timeout.write(0, hdr.cpu_in.value);
                }
                bit<2> st;
                flow_state.read(st, cell);
                hdr.cpu_in.flow_state = (bit<8>)st;
                flow_key.read(hdr.cpu_in.flow_key, cell);
                flow_backend.read(hdr.cpu_in.flow_backend, cell);
                flow_last_seen.read(hdr.cpu_in.flow_last_seen, cell);
                cpu_read_globals();
            }
        } else if (!hdr.ipv4.isValid()) {
            mark_to_drop(std);
        } else {
            if (hdr.tcp.isValid()) {
                vip.apply();
            }
            if (std.checksum_error == 1 && meta.lb.vip_hit == 1) {
                drop_counted(MALFORMED);  /* its service's counter */
            } else if (std.checksum_error == 1) {
                bad_checksum.count(0);
                mark_to_drop(std);
            } else if (meta.lb.vip_hit == 0) {
                forward.apply();
            } else {
                /* one straight-line block: flags, the candidates (flow_buckets .. flow_place) and the flow's place */
                bit<8> flags = hdr.tcp.flags;
                bool syn = (flags & F_SYN) != 0;
                bool close = (flags & (F_FIN | F_RST)) != 0;
                bool new_syn = syn && (flags & F_ACK) == 0;
                meta.lb.key = meta.lb.service ++ hdr.ipv4.srcAddr ++ hdr.tcp.srcPort;
                meta.lb.rr_cell = (bit<32>)meta.lb.service * 2 + (bit<32>)meta.lb.version;
                meta.lb.svc_base = (bit<32>)meta.lb.service * 256;
                meta.lb.now = std.ingress_global_timestamp;
                idle_timeout.read(meta.lb.timeout, 32w0);
                flow_buckets();
                flow_probe();
                flow_load();
                flow_way();
                flow_free();
                flow_choose();
                flow_place();
                bit<2> fs; bit<8> fb; bit<48> fl; bit<56> fk; bit<32> count;
                flow_state.read(fs, meta.lb.slot);
                flow_key.read(fk, meta.lb.slot);
                flow_backend.read(fb, meta.lb.slot);
                flow_last_seen.read(fl, meta.lb.slot);
                bit<32> held_cell = (bit<32>)fk[55:48] * 256 + (bit<32>)fb;  /* backend_open's cell of the place's entry: its own service's */
                bool live = meta.lb.found == 1 && meta.lb.now - fl <= meta.lb.timeout;
                bool admitted = false;
                if (syn && close) {
                    drop_counted(MALFORMED);  /* nothing was written: the reads above change no state */
                } else if (live && fs == OPEN) {
                    flow_state.write(meta.lb.slot, OPEN + (bit<2>)(bit<1>)close);  /* CLOSING (= OPEN + 1) on FIN/RST */
                    flow_last_seen.write(meta.lb.slot, meta.lb.now);
                    meta.lb.backend = fb;
                    admitted = true;
                    if (close) {
                        backend_open.read(count, held_cell);
                        backend_open.write(held_cell, count - 1);  /* its OPEN entry is CLOSING now */
                    }
                } else if (new_syn && meta.lb.found == 0 && meta.lb.room == 0) {
                    drop_counted(FLOW_TABLE_FULL);  /* every candidate holds another open flow: never evict */
                } else if (new_syn) {
                    rr_group.apply();
                    if (meta.lb.size == 0) {
                        drop_counted(NO_ELIGIBLE);
                    } else {
                        rr_position();
                        rr_member.apply();
                        rr_advance();
                        flow_state.write(meta.lb.slot, OPEN);
                        flow_key.write(meta.lb.slot, meta.lb.key);
                        flow_backend.write(meta.lb.slot, meta.lb.backend);
                        flow_last_seen.write(meta.lb.slot, meta.lb.now);
                        backend_flows.count(meta.lb.svc_base + (bit<32>)meta.lb.backend);
                        if (fs == OPEN) {
                            backend_open.read(count, held_cell);
                            backend_open.write(held_cell, count - 1);  /* the OPEN entry this place held (expired, or this key's; maybe another service's) */
                        }
                        backend_open.read(count, meta.lb.svc_base + (bit<32>)meta.lb.backend);
                        backend_open.write(meta.lb.svc_base + (bit<32>)meta.lb.backend, count + 1);
                        admitted = true;
                    }
                } else if (live && fs == CLOSING) {
                    flow_last_seen.write(meta.lb.slot, meta.lb.now);
                    meta.lb.backend = fb;
                    admitted = true;
                } else {
                    drop_counted(UNKNOWN_FLOW);
                }
                if (admitted) {
                    if (!backend.apply().hit) {
                        drop_counted(NO_BACKEND_ENTRY);  /* counted, never sent to port 0: black holes show in lb_drops */
                    }
                }
            }
        }
    }
}

control MyEgress(inout headers hdr, inout metadata meta, inout standard_metadata_t std) {
    action rewrite_sip(bit<32> sip) { hdr.ipv4.srcAddr = sip; }
    /* a backend's replies toward a client port leave from its service's VIP: keyed by (port, the backend's address),
     * so services with different VIP addresses share a client port */
    table send_frame {
        key = { std.egress_port: exact; hdr.ipv4.srcAddr: exact; }
        actions = { rewrite_sip; NoAction; }
        default_action = NoAction();
        size = SERVICE_CELLS;
    }
    apply {
        if (hdr.ipv4.isValid()) {
            send_frame.apply();
        }
    }
}

control MyComputeChecksum(inout headers hdr, inout metadata meta) {
    apply {
        update_checksum(hdr.ipv4.isValid(), { hdr.ipv4.version, hdr.ipv4.ihl, hdr.ipv4.diffserv, hdr.ipv4.totalLen,
            hdr.ipv4.identification, hdr.ipv4.flags, hdr.ipv4.fragOffset, hdr.ipv4.ttl, hdr.ipv4.protocol,
            hdr.ipv4.srcAddr, hdr.ipv4.dstAddr }, hdr.ipv4.hdrChecksum, HashAlgorithm.csum16);
        update_checksum_with_payload(hdr.tcp.isValid(), { hdr.ipv4.srcAddr, hdr.ipv4.dstAddr, 8w0, hdr.ipv4.protocol,
            meta.lb.tcp_len, hdr.tcp.srcPort, hdr.tcp.dstPort, hdr.tcp.seqNo, hdr.tcp.ackNo, hdr.tcp.dataOffset,
            hdr.tcp.res, hdr.tcp.flags, hdr.tcp.window, hdr.tcp.urgentPtr }, hdr.tcp.checksum, HashAlgorithm.csum16);
    }
}

control MyDeparser(packet_out pkt, in headers hdr) {
    apply {
        pkt.emit(hdr.cpu_in);
        pkt.emit(hdr.scan);
        pkt.emit(hdr.open);
        pkt.emit(hdr.ethernet);
        pkt.emit(hdr.ipv4);
        pkt.emit(hdr.tcp);
    }
}

V1Switch(MyParser(), MyVerifyChecksum(), MyIngress(), MyEgress(), MyComputeChecksum(), MyDeparser()) main;
