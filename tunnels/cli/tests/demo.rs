//! `tunnel demo`, run as a user runs it: the binary, a local S3 server through the real AWS SDK,
//! real ICMPv6 echo requests and replies.

use std::process::Command;

#[test]
fn the_demo_pings_across_and_reports_costs() {
    let output = Command::new(env!("CARGO_BIN_EXE_tunnel"))
        .args([
            "demo",
            "--count",
            "3",
            "--interval",
            "200ms",
            "--idle",
            "2s",
        ])
        .output()
        .expect("tunnel runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let replies: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("bytes from"))
        .collect();
    assert_eq!(replies.len(), 3, "{stdout}");
    for (i, reply) in replies.iter().enumerate() {
        assert!(reply.contains(&format!("icmp_seq={}", i + 1)), "{reply}");
    }
    assert!(
        stdout.contains("3 packets transmitted, 3 received"),
        "{stdout}"
    );
    assert!(
        stdout.contains("PUT") && stdout.contains("per node per day"),
        "{stdout}"
    );
    // It says at once how long it takes, and shows progress while it idles.
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("tunnel demo: 3 pings 200ms apart, then 2s idle: about"),
        "{first}"
    );
    assert!(stdout.contains("\n  idle 1/2 s: "), "{stdout}");
}

#[test]
fn bad_arguments_are_explained() {
    let output = Command::new(env!("CARGO_BIN_EXE_tunnel"))
        .args(["demo", "--interval", "soon"])
        .output()
        .expect("tunnel runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is not a duration such as 500ms, 1s or 2m"),
        "{stderr}"
    );
    let help = Command::new(env!("CARGO_BIN_EXE_tunnel"))
        .args(["demo", "--help"])
        .output()
        .expect("tunnel runs");
    assert!(String::from_utf8_lossy(&help.stdout).contains("no root, no AWS account"));
}
