"""The p4lb controller: configuration, health checks, operations on the switch, CLI."""
