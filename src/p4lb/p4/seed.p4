/* seed.p4: the seed's dynamic round-robin load balancer with fault detection (its basic16.p4 and cmd.txt),
 * re-expressed here so that its behaviour, bugs included, can be reproduced on BMv2. Same algorithm, same
 * widths, same order of checks, same names for what the controller writes (set_max, set_status1..4,
 * ecmp_group, ecmp_nhop, forward, send_frame) and for the registers (flowlet_select, myselect, mymax).
 * model/seed.py is the executable model of this program.
 *
 * Added for the tests only (the seed read its registers with the thrift CLI, which BMv2's P4Runtime server does
 * not replace): a PacketOut on the CPU port (510) reads flowlet_select[index], myselect and mymax, answered by a
 * PacketIn. Nothing else reaches that path, so the seed's behaviour is unchanged.
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
@controller_header("packet_out")
header cpu_out_t { bit<8> op; bit<32> index; }
@controller_header("packet_in")
header cpu_in_t { bit<8> op; bit<32> index; bit<8> flowlet_select; bit<8> myselect; bit<8> mymax; }
struct headers { cpu_out_t cpu_out; cpu_in_t cpu_in; ethernet_t ethernet; ipv4_t ipv4; tcp_t tcp; }
struct sel_t {
    bit<13> index;
    bit<3>  flowlet;
    bit<3>  myselect;
    bit<3>  max;
    bit<3>  old_max;
    bit<1>  server1;
    bit<1>  server2;
    bit<1>  server3;
    bit<1>  server4;
    bit<16> tcp_len;
}
struct metadata { sel_t sel; }

parser SeedParser(packet_in pkt, out headers hdr, inout metadata meta, inout standard_metadata_t std) {
    state start {
        /* the seed's parser resets these on every packet */
        meta.sel.myselect = 0;
        meta.sel.max = 4;
        meta.sel.server1 = 0;
        meta.sel.server2 = 0;
        meta.sel.server3 = 0;
        meta.sel.server4 = 0;
        transition select(std.ingress_port) { 510: parse_cpu_out; default: parse_ethernet; }
    }
    state parse_cpu_out { pkt.extract(hdr.cpu_out); transition accept; }
    state parse_ethernet {
        pkt.extract(hdr.ethernet);
        transition select(hdr.ethernet.etherType) { 0x0800: parse_ipv4; default: accept; }
    }
    state parse_ipv4 {
        pkt.extract(hdr.ipv4);
        meta.sel.tcp_len = hdr.ipv4.totalLen - 16w20;
        transition select(hdr.ipv4.protocol) { 6: parse_tcp; default: accept; }
    }
    state parse_tcp { pkt.extract(hdr.tcp); transition accept; }
}

control SeedVerify(inout headers hdr, inout metadata meta) { apply { } }

control SeedIngress(inout headers hdr, inout metadata meta, inout standard_metadata_t std) {
    register<bit<3>>(8192) flowlet_select;
    register<bit<3>>(1) myselect;
    register<bit<3>>(1) mymax;

    action flow_hash() {
        hash(meta.sel.index, HashAlgorithm.crc16, 13w0,
             { hdr.ipv4.srcAddr, hdr.ipv4.dstAddr, hdr.ipv4.protocol, hdr.tcp.srcPort, hdr.tcp.dstPort }, 26w8192);
    }
    action drop() { mark_to_drop(std); }
    action nop() { }
    action read_flowlet_select() {
        flow_hash();
        flowlet_select.read(meta.sel.flowlet, (bit<32>)meta.sel.index);
    }
    action set_ecmp_select() {
        flow_hash();
        flowlet_select.read(meta.sel.flowlet, (bit<32>)meta.sel.index);
        myselect.read(meta.sel.myselect, 32w0);
        meta.sel.myselect = meta.sel.myselect + 3w1;
        meta.sel.flowlet = meta.sel.myselect;
        myselect.write(32w0, meta.sel.myselect);
        flowlet_select.write((bit<32>)meta.sel.index, meta.sel.flowlet);
    }
    action set_ecmp_nhop(bit<48> nhop_mac, bit<32> nhop_ipv4, bit<9> port) {
        std.egress_spec = port;
        hdr.ipv4.dstAddr = nhop_ipv4;
        hdr.ethernet.dstAddr = nhop_mac;
        hdr.ipv4.ttl = hdr.ipv4.ttl + 8w255;
    }
    action set_nhop(bit<48> dmac, bit<9> port) {
        std.egress_spec = port;
        hdr.ethernet.dstAddr = dmac;
        hdr.ipv4.ttl = hdr.ipv4.ttl + 8w255;
    }
    action _max(bit<3> max) { meta.sel.max = max; }
    action _fail1(bit<1> fail) { meta.sel.server1 = fail; }
    action _fail2(bit<1> fail) { meta.sel.server2 = fail; }
    action _fail3(bit<1> fail) { meta.sel.server3 = fail; }
    action _fail4(bit<1> fail) { meta.sel.server4 = fail; }
    /* choose server k after a failover: myselect := m, flowlet := f, both registers written */
    action choose(bit<3> m, bit<3> f) {
        meta.sel.myselect = m;
        meta.sel.flowlet = f;
        myselect.write(32w0, m);
        flowlet_select.write((bit<32>)meta.sel.index, f);
    }
    action reread() {
        flow_hash();
        flowlet_select.read(meta.sel.flowlet, (bit<32>)meta.sel.index);
        myselect.read(meta.sel.myselect, 32w0);
    }

    table forward { key = { hdr.ipv4.dstAddr: lpm; } actions = { drop; set_nhop; nop; read_flowlet_select; } default_action = nop(); size = 1024; }
    table ecmp_group { key = { hdr.ipv4.dstAddr: lpm; } actions = { drop; set_ecmp_select; nop; } default_action = nop(); size = 1024; }
    table ecmp_nhop { key = { meta.sel.flowlet: exact; } actions = { drop; set_ecmp_nhop; nop; } default_action = nop(); size = 1024; }
    table set_max { key = { hdr.ipv4.dstAddr: lpm; } actions = { _max; } size = 1; }
    table set_status1 { key = { hdr.ipv4.dstAddr: lpm; } actions = { _fail1; } size = 1; }
    table set_status2 { key = { hdr.ipv4.dstAddr: lpm; } actions = { _fail2; } size = 1; }
    table set_status3 { key = { hdr.ipv4.dstAddr: lpm; } actions = { _fail3; } size = 1; }
    table set_status4 { key = { hdr.ipv4.dstAddr: lpm; } actions = { _fail4; } size = 1; }

    apply {
        if (hdr.cpu_out.isValid()) {  /* test-only register read (see the header comment) */
            hdr.cpu_in.setValid();
            hdr.cpu_in.op = hdr.cpu_out.op;
            hdr.cpu_in.index = hdr.cpu_out.index;
            bit<3> v;
            flowlet_select.read(v, hdr.cpu_out.index & 8191);
            hdr.cpu_in.flowlet_select = (bit<8>)v;
            myselect.read(v, 0);
            hdr.cpu_in.myselect = (bit<8>)v;
            mymax.read(v, 0);
            hdr.cpu_in.mymax = (bit<8>)v;
            hdr.cpu_out.setInvalid();
            std.egress_spec = 510;
            return;
        }
        bool syn = (hdr.tcp.flags & 8w2) != 8w0;
        forward.apply();
        if (set_max.apply().hit) {
            mymax.read(meta.sel.old_max, 32w0);
            if (meta.sel.old_max != meta.sel.max) {
                meta.sel.myselect = 0;
                myselect.write(32w0, meta.sel.myselect);
                mymax.write(32w0, meta.sel.max);
            }
        }
        if (syn) {
            ecmp_group.apply();
            if (meta.sel.myselect == meta.sel.max) {
                meta.sel.myselect = 0;
                myselect.write(32w0, meta.sel.myselect);
            }
        }
        if (set_status1.apply().hit && syn) {
            if (meta.sel.server1 == 1 && meta.sel.flowlet == 1) {
                reread();
                if (meta.sel.server2 != 1) { choose(2, 2); }
                else if (meta.sel.server3 != 1) { choose(3, 3); }
                else if (meta.sel.server4 != 1) { choose(0, 4); }
                else { drop(); }
            }
        }
        if (set_status2.apply().hit && syn) {
            if (meta.sel.server2 == 1 && meta.sel.flowlet == 2) {
                reread();
                if (meta.sel.server3 != 1) { choose(3, 3); }
                else if (meta.sel.server4 != 1) { choose(0, 4); }
                else if (meta.sel.server1 != 1) { choose(1, 1); }
                else { drop(); }
            }
        }
        if (set_status3.apply().hit && syn) {
            if (meta.sel.server3 == 1 && meta.sel.flowlet == 3) {
                reread();
                if (meta.sel.server4 != 1) { choose(0, 4); }
                else if (meta.sel.server1 != 1) { choose(1, 1); }
                else if (meta.sel.server2 != 1) { choose(2, 2); }
                else { drop(); }
            }
        }
        if (set_status4.apply().hit && syn) {
            if (meta.sel.server4 == 1 && meta.sel.flowlet == 4) {
                reread();
                if (meta.sel.server1 != 1) { choose(1, 1); }
                else if (meta.sel.server2 != 1) { choose(2, 2); }
                else if (meta.sel.server3 != 1) { choose(3, 3); }
                else { drop(); }
            }
        }
        if (hdr.ipv4.isValid()) {
            ecmp_nhop.apply();
        }
    }
}

control SeedEgress(inout headers hdr, inout metadata meta, inout standard_metadata_t std) {
    action rewrite_sip(bit<32> sip) { hdr.ipv4.srcAddr = sip; }
    action nop() { }
    table send_frame { key = { std.egress_port: exact; } actions = { rewrite_sip; nop; } default_action = nop(); size = 256; }
    apply { send_frame.apply(); }
}

control SeedCompute(inout headers hdr, inout metadata meta) {
    apply {
        update_checksum(hdr.ipv4.isValid(), { hdr.ipv4.version, hdr.ipv4.ihl, hdr.ipv4.diffserv, hdr.ipv4.totalLen,
            hdr.ipv4.identification, hdr.ipv4.flags, hdr.ipv4.fragOffset, hdr.ipv4.ttl, hdr.ipv4.protocol,
            hdr.ipv4.srcAddr, hdr.ipv4.dstAddr }, hdr.ipv4.hdrChecksum, HashAlgorithm.csum16);
        update_checksum_with_payload(hdr.tcp.isValid(), { hdr.ipv4.srcAddr, hdr.ipv4.dstAddr, 8w0, hdr.ipv4.protocol,
            meta.sel.tcp_len, hdr.tcp.srcPort, hdr.tcp.dstPort, hdr.tcp.seqNo, hdr.tcp.ackNo, hdr.tcp.dataOffset,
            hdr.tcp.res, hdr.tcp.flags, hdr.tcp.window, hdr.tcp.urgentPtr }, hdr.tcp.checksum, HashAlgorithm.csum16);
    }
}

control SeedDeparser(packet_out pkt, in headers hdr) {
    apply { pkt.emit(hdr.cpu_in); pkt.emit(hdr.ethernet); pkt.emit(hdr.ipv4); pkt.emit(hdr.tcp); }
}

V1Switch(SeedParser(), SeedVerify(), SeedIngress(), SeedEgress(), SeedCompute(), SeedDeparser()) main;
