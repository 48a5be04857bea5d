//! Fuzzes `benches::pcap::fuzz`: reading any capture never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| benches::pcap::fuzz(data));
