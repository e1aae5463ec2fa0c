"""The compiled P4 program (BMv2 JSON) bound to the model by a per-packet equivalence proof in Z3."""
