//! pcap.
