"""Packet tests against BMv2 simple_switch_grpc (skipped, with the reason printed, where it is missing)."""
