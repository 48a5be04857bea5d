//! pcap reader (next)
