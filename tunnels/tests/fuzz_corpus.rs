//! Replays the committed fuzz corpus (`fuzz/corpus/`) through the fuzz targets' checks on
//! stable, so that a regression a fuzzer once found fails `cargo test`.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        check(&std::fs::read(&path).unwrap());
        inputs += 1;
    }
    assert!(inputs > 0, "no corpus in {}", dir.display());
}

#[test]
fn batch_corpus() {
    replay("batch", tunnels::fuzz::batch);
}

#[test]
fn text_corpus() {
    replay("text", tunnels::fuzz::text);
}

#[test]
fn ip_corpus() {
    replay("ip", tunnels::fuzz::ip);
}

#[test]
fn cwl_corpus() {
    replay("cwl", tunnels::fuzz::cwl);
}

#[test]
fn ether_corpus() {
    replay("ether", tunnels::fuzz::ether);
}

#[test]
fn sealed_corpus() {
    replay("sealed", tunnels::fuzz::sealed);
}

#[cfg(feature = "userspace")]
#[test]
fn userspace_corpus() {
    replay("userspace", tunnels::fuzz::userspace);
}
