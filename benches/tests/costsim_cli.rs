//! `costsim` as users run it: `--nodes` fleets, `--max-dollars-per-day` sweeps and
//! `--bulk-polls`, their reports, and the arguments they refuse (exit status 2).

use std::path::PathBuf;
use std::process::{Command, Output};

/// A fresh directory for one run's reports.
fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("costsim-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn costsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_costsim"))
        .args(args)
        .output()
        .expect("costsim runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_small_hub_fleet_passes_its_goals_and_writes_fleet_md() {
    let out = out_dir("hub");
    let run = costsim(&[
        "--nodes",
        "3,4",
        "--topology",
        "hub",
        "--hours",
        "0.02",
        "--out",
        out.to_str().expect("a UTF-8 path"),
    ]);
    let stdout = text(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{stdout}{}", text(&run.stderr));
    assert!(stdout.contains("| s3 | hub | 3 |"), "{stdout}");
    assert!(stdout.contains("| s3 | hub | 4 |"), "{stdout}");
    assert!(
        stdout.contains("PASS  s3 hub of 4: every packet delivered"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    let report = std::fs::read_to_string(out.join("fleet.md")).expect("fleet.md written");
    assert!(report.contains("| s3 | hub | 4 |"), "{report}");
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn a_ceiling_sweep_checks_the_ceiling_and_writes_its_chart() {
    let out = out_dir("ceiling");
    let run = costsim(&[
        "--max-dollars-per-day",
        "0.0002",
        "--trace",
        "wake",
        "--link",
        "s3",
        "--out",
        out.to_str().expect("a UTF-8 path"),
    ]);
    let stdout = text(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{stdout}{}", text(&run.stderr));
    assert!(
        stdout.contains(
            "PASS  s3 wake under $0.00020 a day: no node spends more than the ceiling in any 24 hours"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("| s3 | wake | hoshino (seed) |"),
        "{stdout}"
    );
    let report = std::fs::read_to_string(out.join("ceiling.md")).expect("ceiling.md written");
    assert!(report.contains("![p99 latency against dollars a day](ceiling.svg)"));
    let chart = std::fs::read_to_string(out.join("ceiling.svg")).expect("ceiling.svg written");
    assert!(chart.starts_with("<svg"), "{chart}");
    let _ = std::fs::remove_dir_all(out);
}

/// The table row of `policy` in a run's output, split into its cells.
fn row(stdout: &str, policy: &str) -> Vec<String> {
    let line = stdout
        .lines()
        .find(|l| l.split('|').nth(2).map(str::trim) == Some(policy))
        .unwrap_or_else(|| panic!("no row for {policy}: {stdout}"));
    line.split('|').map(|c| c.trim().to_owned()).collect()
}

/// `--bulk-polls` turns on what `tunnel up --bulk-polls` does, in our policies only: on a
/// captured transfer (4 MB over loopback, segmented to 1,500 bytes), more GETs and less
/// latency; the seed's design runs as it did.
#[test]
fn bulk_polls_buy_latency_with_gets_on_a_captured_transfer() {
    let pcap = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/loopback.pcap");
    let run = |extra: &[&str]| {
        let out = out_dir(&format!("bulk{}", extra.len()));
        let dir = out.to_str().expect("a UTF-8 path").to_owned();
        let mut args = vec![
            "--pcap", pcap, "--policy", "adaptive", "--policy", "hoshino",
        ];
        args.extend_from_slice(&["--out", &dir]);
        args.extend_from_slice(extra);
        let run = costsim(&args);
        let stdout = text(&run.stdout);
        assert_eq!(run.status.code(), Some(0), "{stdout}{}", text(&run.stderr));
        let _ = std::fs::remove_dir_all(out);
        stdout
    };
    let (off, on) = (run(&[]), run(&["--bulk-polls", "20", "--bulk-gap", "10ms"]));
    assert!(!off.contains("With bulk polls"), "{off}");
    assert!(
        on.contains("With bulk polls (--bulk-polls 20 --bulk-gap 10ms)"),
        "{on}"
    );
    let (off_row, on_row) = (row(&off, "adaptive"), row(&on, "adaptive"));
    // Cells (the first, before the first '|', empty): 4 GET, 9 delivered, 10 p50.
    let number = |cell: &str| -> u64 { cell.trim_end_matches(" ms").parse().expect(cell) };
    assert_eq!(off_row[9], "2855/2855", "{off}");
    assert_eq!(on_row[9], "2855/2855", "{on}");
    assert!(number(&on_row[4]) > number(&off_row[4]), "GETs: {off}{on}");
    assert!(number(&on_row[10]) < number(&off_row[10]), "p50: {off}{on}");
    assert_eq!(row(&off, "hoshino"), row(&on, "hoshino"));
}

#[test]
fn arguments_that_do_not_go_together_exit_with_2_and_say_why() {
    for (args, says) in [
        (&["--topology", "idle"][..], "go with --nodes"),
        (&["--hours", "2"][..], "go with --nodes"),
        (&["--nodes", "1"][..], "fleet size"),
        (&["--nodes", "3", "--topology", "star"][..], "no topology"),
        (&["--nodes", "3", "--hours", "0"][..], "hours"),
        (&["--nodes", "3", "--trace", "ping"][..], "takes no --pcap"),
        (
            &["--nodes", "3", "--max-dollars-per-day", "1"][..],
            "give one",
        ),
        (&["--max-dollars-per-day", "0"][..], "dollars above zero"),
        (&["--max-dollars-per-day", "lots"][..], "dollars above zero"),
        (
            &["--max-dollars-per-day", "1", "--policy", "adaptive"][..],
            "takes no --pcap, --policy",
        ),
        (
            &["--max-dollars-per-day", "1", "--latency", "none"][..],
            "--latency none",
        ),
        // Flags the run would ignore are refused, not ignored.
        (&["--mtu", "9000"][..], "--pcap"),
        (&["--seed", "3"][..], "--nodes"),
        (
            &["--nodes", "3", "--sealed"][..],
            "cannot be used with '--sealed'",
        ),
        (
            &["--nodes", "3", "--latency", "none"][..],
            "cannot be used with '--latency",
        ),
        (&["--bulk-gap", "0"][..], "a gap of 0"),
        (&["--bulk-gap", "soon"][..], "not a duration"),
        (
            &["--nodes", "3", "--bulk-polls", "20"][..],
            "--bulk-polls goes with the two-node runs",
        ),
        (
            &["--max-dollars-per-day", "1", "--bulk-polls", "20"][..],
            "--bulk-polls goes with the two-node runs",
        ),
    ] {
        let run = costsim(args);
        let stderr = text(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
