//! `tunnel`: carries IP packets between machines through an S3 bucket or a CloudWatch Logs log
//! group, cheaply when idle and quickly when busy.

use std::net::Ipv6Addr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod check;
mod demo;
mod up;

#[derive(Debug, Parser)]
#[command(
    name = "tunnel",
    version,
    about = "Carries IP packets between machines through an S3 bucket or a CloudWatch Logs log \
             group: cheaply when idle, quickly when busy."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Joins this machine to a network whose packets travel through an S3 bucket or a CloudWatch
    /// Logs log group (--link s3://... or cwl://...): creates a TUN
    /// device with the node's IPv6 address and carries what the kernel routes to it. Needs
    /// CAP_NET_ADMIN (root) for the device; runs until SIGINT or SIGTERM, then sends what is
    /// pending and exits.
    Up(Box<up::UpArgs>),
    /// Runs two nodes over an S3-compatible server started in this process, through the real
    /// AWS SDK, and pings from one to the other: no root, no AWS account. Prints each round
    /// trip, then the calls by kind and what they would cost on S3 Standard, while active and
    /// while idle.
    Demo(demo::DemoArgs),
    /// Runs the start-up checks of `tunnel up` on their own and says, one line each, what
    /// passed and how to fix what did not: the region, the credentials (and where they came
    /// from), each call the link makes, tried under the prefix or in the log group, and the
    /// device. Prints the least-privilege IAM policy for what the service refused. Exits with
    /// 0 only when every check passed.
    Check(check::CheckArgs),
    /// Prints a new network key for `tunnel up --key-file`: one line, `tunnel-key ID BASE64`.
    /// Save it to a file readable only by the tunnel (`tunnel keygen > /etc/tunnel/key; chmod
    /// 600 /etc/tunnel/key`) and give every node of the network the same file. To rotate: put
    /// the new key's line under the old one on every node, then above it, then remove the old.
    Keygen,
    /// Prints a completion script for a shell: `tunnel completions bash > \
    /// /etc/bash_completion.d/tunnel`, or zsh (into a directory of $fpath, as `_tunnel`), or
    /// fish (~/.config/fish/completions/tunnel.fish).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Parses a duration as humantime writes them (`250ms`, `1s`, `2m`, `1h30m`), or a plain
/// number of seconds (`1.5`), as the flags always took.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration such as 500ms, 1s or 2m: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Up(args) = &cli.command
        && let Err(problem) = args.check()
    {
        use clap::CommandFactory;
        let mut command = Cli::command();
        let up = command.find_subcommand_mut("up").expect("the up command");
        up.set_bin_name("tunnel up");
        up.error(clap::error::ErrorKind::ArgumentConflict, problem)
            .exit();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("tunnel: starting the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up::up(*args).await,
            Command::Demo(args) => demo::demo(args).await,
            Command::Check(args) => check::check(args).await,
            Command::Keygen => {
                println!("{}", tunnels::wire::sealed::Key::generate().to_line());
                Ok(())
            }
            Command::Completions { shell } => {
                use clap::CommandFactory;
                clap_complete::generate(
                    shell,
                    &mut Cli::command(),
                    "tunnel",
                    &mut std::io::stdout(),
                );
                Ok(())
            }
        }
    });
    // Don't wait for tasks blocked in the SDK or on the device.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tunnel: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Hoshino's network, for old times' sake: the default of `--network` and the demo's.
const NETWORK: Ipv6Addr = Ipv6Addr::new(0xfd5e, 0x59b8, 0xf71d, 0x9a3e, 0, 0, 0, 0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_humantime_or_seconds() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration(" 1.5 "), Ok(Duration::from_millis(1_500)));
        for bad in ["", "soon", "-1", "5 parsecs"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
