//! IPv4 fragmentation.
