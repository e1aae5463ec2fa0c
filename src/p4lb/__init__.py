"""p4lb: an L4 load balancer for P4 switches whose safety properties are proven on the model and bound to the compiled P4."""

__version__ = "0.2.0"
