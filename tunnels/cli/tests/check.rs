//! `tunnel check`, run as a user runs it: the binary against a local S3-compatible server and
//! `moto_server`, with good and bad credentials, none at all, and without CAP_NET_ADMIN. Each
//! check is a line; the exit code is 0 only when all pass. Also `tunnel completions`.

mod e2e;

use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Output};

use e2e::moto::{self, Moto};
use tunnels::link::s3::local::{self as local_s3, LocalS3};

/// `tunnel check args` with `keys` in the environment (none: a clean environment), under
/// `wrapper` (such as `setpriv ...`) if one is given.
fn check(args: &[&str], keys: Option<(&str, &str)>, wrapper: &[&str]) -> Output {
    let mut command = e2e::tunnel_command(wrapper);
    let home = std::env::temp_dir().join(format!("tunnel-check-home-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    command
        .arg("check")
        .args(args)
        .env_clear()
        .env("HOME", &home);
    if let Some((access, secret)) = keys {
        command
            .env("AWS_ACCESS_KEY_ID", access)
            .env("AWS_SECRET_ACCESS_KEY", secret);
    }
    command.output().expect("tunnel runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The line of check `what`, or a panic with everything printed.
fn line<'a>(out: &'a str, what: &str) -> &'a str {
    out.lines()
        .find(|l| l.get(5..).is_some_and(|rest| rest.starts_with(what)))
        .unwrap_or_else(|| panic!("no line for {what} in:\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_s3_every_check_passes_or_names_its_fix() {
    let dir = std::env::temp_dir().join(format!("tunnel-check-s3-{}", std::process::id()));
    let server = LocalS3::start(&dir, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    server.create_bucket("present").unwrap();
    let endpoint = server.endpoint_url();
    let run = |keys: Option<(&'static str, &'static str)>, extra: &'static [&'static str]| {
        let endpoint = endpoint.clone();
        tokio::task::spawn_blocking(move || {
            let mut args = vec![
                "--link",
                "s3://present/net",
                "--endpoint-url",
                &endpoint,
                "--path-style",
                "--region",
                "us-east-1",
            ];
            args.extend_from_slice(extra);
            check(&args, keys, &[])
        })
    };
    let keys = Some((local_s3::ACCESS_KEY, local_s3::SECRET_KEY));

    let good = run(keys, &[]).await.unwrap();
    let out = stdout(&good);
    assert_eq!(good.status.code(), Some(0), "{out}");
    assert!(
        out.lines().next().unwrap().starts_with("OK   region"),
        "{out}"
    );
    assert!(line(&out, "credentials").contains("access key local-access-key"));
    for action in [
        "s3:ListBucket",
        "s3:PutObject",
        "s3:GetObject",
        "s3:DeleteObject",
    ] {
        assert!(line(&out, action).starts_with("OK"), "{out}");
    }
    assert!(line(&out, "TUN device").starts_with("OK"), "{out}");
    assert!(out.contains("all 7 checks passed"), "{out}");
    // Nothing was left under the prefix.
    let store = tunnels::link::s3::S3Store::connect(&server.store_config("present")).await;
    use tunnels::link::s3::ObjectStore;
    assert!(store.list("net/", None, 10).await.unwrap().is_empty());

    // Keys the server does not know: every call refused, the policy for them printed.
    let refused = run(Some((local_s3::ACCESS_KEY, "wrong")), &["--no-device"])
        .await
        .unwrap();
    let out = stdout(&refused);
    assert_eq!(refused.status.code(), Some(1), "{out}");
    assert!(line(&out, "s3:ListBucket").starts_with("FAIL"), "{out}");
    assert!(
        line(&out, "s3:ListBucket").contains("fix: allow s3:ListBucket"),
        "{out}"
    );
    assert!(
        line(&out, "s3:PutObject").contains("arn:aws:s3:::present/net/*"),
        "{out}"
    );
    assert!(line(&out, "s3:GetObject").starts_with("SKIP"), "{out}");
    assert!(out.contains("\"s3:prefix\": \"net/*\""), "{out}");
    assert!(out.contains("\"Action\": [\"s3:PutObject\"]"), "{out}");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.starts_with("tunnel: 2 of 7 checks failed"), "{err}");

    // No credentials at all: said so, with what to set, and the calls are not tried.
    let none = run(None, &["--no-device"]).await.unwrap();
    let out = stdout(&none);
    assert_eq!(none.status.code(), Some(1), "{out}");
    assert!(
        line(&out, "credentials").contains("set AWS_ACCESS_KEY_ID"),
        "{out}"
    );
    assert!(line(&out, "s3:PutObject").starts_with("SKIP"), "{out}");

    // Nothing listening: the bucket cannot be reached, said once.
    server.stop();
    let unreachable = run(keys, &["--no-device"]).await.unwrap();
    let out = stdout(&unreachable);
    assert!(
        line(&out, "s3:ListBucket").contains("check --endpoint-url"),
        "{out}"
    );
    assert!(line(&out, "s3:PutObject").starts_with("SKIP"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn over_cloudwatch_logs_every_check_passes_or_names_its_fix() {
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let args = |endpoint: &str| -> Vec<String> {
        ["--link", "cwl://checked/net", "--endpoint-url", endpoint]
            .iter()
            .chain(&["--region", "us-east-1", "--no-device"])
            .map(|s| s.to_string())
            .collect()
    };
    let keys = Some((moto::ACCESS_KEY, moto::SECRET_KEY));
    let open = Moto::start(loopback);
    let args_open = args(&open.endpoint_url());
    let args_open: Vec<&str> = args_open.iter().map(String::as_str).collect();
    let good = check(&args_open, keys, &[]);
    let out = stdout(&good);
    assert_eq!(good.status.code(), Some(0), "{out}");
    for action in [
        "logs:CreateLogGroup",
        "logs:PutRetentionPolicy",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "logs:GetLogEvents",
    ] {
        assert!(line(&out, action).starts_with("OK"), "{out}");
    }
    // A second run uses the same check stream.
    assert_eq!(check(&args_open, keys, &[]).status.code(), Some(0));

    // moto with IAM checks on refuses keys it does not know, as AWS does.
    let guarded = Moto::start_with_auth(loopback);
    let args_guarded = args(&guarded.endpoint_url());
    let args_guarded: Vec<&str> = args_guarded.iter().map(String::as_str).collect();
    let refused = check(&args_guarded, keys, &[]);
    let out = stdout(&refused);
    assert_eq!(refused.status.code(), Some(1), "{out}");
    assert!(
        line(&out, "logs:CreateLogGroup").starts_with("WARN"),
        "{out}"
    );
    assert!(
        line(&out, "logs:CreateLogStream").starts_with("FAIL"),
        "{out}"
    );
    assert!(line(&out, "logs:PutLogEvents").starts_with("SKIP"), "{out}");
    assert!(
        out.contains("arn:aws:logs:us-east-1:*:log-group:checked:*")
            && out.contains("\"logs:CreateLogStream\""),
        "{out}"
    );
}

/// Without CAP_NET_ADMIN the device check fails with what it needs, in either mode.
#[test]
fn the_device_check_says_what_it_needs() {
    let no_net_admin = [
        "setpriv",
        "--bounding-set=-net_admin",
        "--inh-caps=-net_admin",
    ];
    for (mode, what) in [("tun", "TUN device"), ("tap", "TAP device")] {
        let out = check(
            &[
                "--link",
                "s3://present/net",
                "--region",
                "us-east-1",
                "--mode",
                mode,
            ],
            None,
            &no_net_admin,
        );
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "{text}");
        let device = line(&text, what);
        assert!(
            device.starts_with("FAIL") && device.contains("CAP_NET_ADMIN"),
            "{text}"
        );
    }
}

#[test]
fn completions_for_each_shell() {
    for (shell, mark) in [
        ("bash", "_tunnel()"),
        ("zsh", "#compdef tunnel"),
        ("fish", "complete -c tunnel"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tunnel"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        let script = stdout(&out);
        assert!(script.contains(mark), "{shell}: {script}");
        assert!(
            script.contains("check") && script.contains("--link"),
            "{shell}"
        );
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_tunnel"))
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
