//! The cost simulation: replays traffic through the real `cardio`, `bundler`, `wire` and S3-link
//! code on a paused clock and reports what it would cost on S3 Standard.

use std::path::PathBuf;
use std::process::ExitCode;

use benches::report;
use benches::sim::{self, Policy};
use benches::traces::{self, Trace};
use tunnels::link::s3::LatencyModel;

const HELP: &str = "\
costsim: what would this traffic cost over S3?

Replays traffic between two tunnel nodes through the real node code (adaptive heartbeat,
bundler, wire format, S3 link) over an in-memory S3 with S3's latency and prices, on a paused
clock: a simulated day takes seconds. Prints calls by kind, request dollars per node per day and
per GiB, packets delivered and one-way added latency (p50, p99, max) for each trace and policy,
then checks the default policy (adaptive) against its budgets.

USAGE:
    cargo run --release -p benches --bin costsim -- [OPTIONS]

OPTIONS:
    --trace NAME     run only this built-in trace (repeatable): idle, ping, ssh, web, bulk, wake, pause
    --policy NAME    run only this policy (repeatable): hoshino, fixed, adaptive, adaptive+budget
    --pcap FILE      replay a capture of your own (pcap or pcapng) instead of the built-in
                     traces: the capturing host is one node, everyone it talks to the other
    --latency MODEL  the store's latency: s3 (S3 Standard's, the default) or none (a local
                     server, to compare with measurements against one)
    --out DIR        where to write report.md and costsim.svg [default: target/costsim]
    -h, --help       print this help

EXIT STATUS:
    0 when every budget checked passed, 1 when one failed, 2 on a bad argument or capture.
";

struct Args {
    traces: Vec<String>,
    policies: Vec<Policy>,
    pcap: Option<PathBuf>,
    latency: LatencyModel,
    out: PathBuf,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        traces: Vec::new(),
        policies: Vec::new(),
        pcap: None,
        latency: LatencyModel::S3_STANDARD,
        out: PathBuf::from("target/costsim"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--trace" => {
                let name = value("--trace")?;
                if !traces::builtin().iter().any(|t| t.name == name) {
                    return Err(format!("no built-in trace named {name:?}"));
                }
                args.traces.push(name);
            }
            "--policy" => {
                let name = value("--policy")?;
                let policy = Policy::from_name(&name).ok_or(format!("no policy named {name:?}"))?;
                args.policies.push(policy);
            }
            "--pcap" => args.pcap = Some(PathBuf::from(value("--pcap")?)),
            "--latency" => {
                args.latency = match value("--latency")?.as_str() {
                    "s3" => LatencyModel::S3_STANDARD,
                    "none" => LatencyModel::NONE,
                    other => return Err(format!("no latency model named {other:?}")),
                }
            }
            "--out" => args.out = PathBuf::from(value("--out")?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.policies.is_empty() {
        args.policies = Policy::ALL.to_vec();
    }
    Ok(Some(args))
}

fn load_pcap(path: &PathBuf) -> Result<Trace, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let packets = benches::pcap::read(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path
        .file_stem()
        .map_or_else(|| "capture".into(), |s| s.to_string_lossy().into_owned());
    benches::pcap::to_trace(&name, &packets).map_err(|e| format!("{}: {e}", path.display()))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("costsim: {err}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    let traces: Vec<Trace> = match &args.pcap {
        Some(path) => match load_pcap(path) {
            Ok(trace) => vec![trace],
            Err(err) => {
                eprintln!("costsim: {err}");
                return ExitCode::from(2);
            }
        },
        None => traces::builtin()
            .into_iter()
            .filter(|t| args.traces.is_empty() || args.traces.contains(&t.name))
            .collect(),
    };

    let mut outcomes = Vec::new();
    for trace in &traces {
        for &policy in &args.policies {
            let started = std::time::Instant::now();
            let outcome = sim::run_on(trace, policy, args.latency);
            eprintln!(
                "simulated {} under {} in {:.1} s",
                trace.name,
                policy.name(),
                started.elapsed().as_secs_f64()
            );
            outcomes.push(outcome);
        }
    }

    let checks = if args.pcap.is_some() {
        Vec::new()
    } else {
        report::checks(&outcomes)
    };
    println!("{}", report::table(&outcomes));
    print!("{}", report::check_lines(&checks));

    if let Err(err) = std::fs::create_dir_all(&args.out)
        .and_then(|()| {
            std::fs::write(
                args.out.join("report.md"),
                report::markdown(&outcomes, &checks),
            )
        })
        .and_then(|()| std::fs::write(args.out.join("costsim.svg"), report::svg(&outcomes)))
    {
        eprintln!("costsim: writing {}: {err}", args.out.display());
        return ExitCode::from(2);
    }
    eprintln!(
        "wrote {} and {}",
        args.out.join("report.md").display(),
        args.out.join("costsim.svg").display()
    );
    if checks.iter().all(|c| c.pass) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
