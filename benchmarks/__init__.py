"""Load generator and peer comparison for `make bench` (not part of the service)."""
