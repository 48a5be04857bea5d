//! `tunnel up` refuses what it cannot work with, with a message that says what to fix: a bad
//! flag, a missing bucket, wrong credentials, an unreachable endpoint, no permission for the
//! device; over S3 and over CloudWatch Logs. It never panics and never leaves a device behind.

mod e2e;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};

use tunnels::link::s3::local::{self as local_s3, LocalS3};

fn tunnel_up(args: &[&str], secret: &str) -> Output {
    tunnel_up_under(&[], args, secret)
}

/// `tunnel up args`, run by the command `wrapper` if there is one (such as `setpriv ...`).
fn tunnel_up_under(wrapper: &[&str], args: &[&str], secret: &str) -> Output {
    let mut command = e2e::tunnel_command(wrapper);
    command
        .arg("up")
        .args(args)
        .env("AWS_ACCESS_KEY_ID", local_s3::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("tunnel runs")
}

/// The flags of a node `a` on a local server.
fn local_args<'a>(link: &'a str, endpoint: &'a str, device: &'a str) -> [&'a str; 9] {
    [
        "--link",
        link,
        "--endpoint-url",
        endpoint,
        "--path-style",
        "--node-id",
        "a",
        "--device",
        device,
    ]
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Fails with exit code 1 and a message containing each of `expected`.
fn assert_refused(output: &Output, expected: &[&str]) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    for part in expected {
        assert!(text.contains(part), "{part:?} not in:\n{text}");
    }
}

/// A local server on loopback with the bucket "present", and its directory.
async fn server_with_bucket(name: &str) -> (LocalS3, PathBuf) {
    let dir = std::env::temp_dir().join(format!("tunnel-up-{name}-{}", std::process::id()));
    let server = LocalS3::start(&dir, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    server.create_bucket("present").unwrap();
    (server, dir)
}

#[test]
fn bad_flags_are_usage_errors() {
    for args in [
        &["--link", "my-bucket/tunnel"][..],
        &["--link", "s3://Bad_Bucket/x"],
        &["--link", "s3://bucket/x", "--node-id", "xyz"],
        &["--link", "s3://bucket/x", "--network", "fd00::/48"],
        &["--link", "s3://bucket/x", "--mtu", "1000"],
        &["--link", "s3://bucket/x", "--mode", "tap", "--mtu", "65535"],
        &["--link", "s3://bucket/x", "--min", "5 parsecs"],
        &["--link", "s3://bucket/x", "--metrics", "nowhere"],
        &["--link", "s3://bucket/x", "--max-dollars-per-day", "0"],
        &["--link", "s3://bucket/x", "--max-dollars-per-day", "-1"],
        &["--link", "s3://bucket/x", "--max-dollars-per-day", "a lot"],
        &[
            "--link",
            "s3://bucket/x",
            "--bulk-polls",
            "20",
            "--bulk-gap",
            "0",
        ],
        &[],
    ] {
        let output = tunnel_up(args, local_s3::SECRET_KEY);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {text}");
        assert!(text.contains("error:"), "{args:?}: {text}");
    }
    let output = tunnel_up(
        &[
            "--link",
            "s3://bucket/x",
            "--bulk-polls",
            "20",
            "--bulk-gap",
            "0s",
        ],
        local_s3::SECRET_KEY,
    );
    assert!(
        stderr(&output).contains("--bulk-gap 0 would poll without pause"),
        "{}",
        stderr(&output)
    );
    let output = tunnel_up(
        &["--link", "s3://bucket/x", "--mode", "tap", "--mtu", "65522"],
        local_s3::SECRET_KEY,
    );
    assert!(
        stderr(&output).contains("too large for a TAP device")
            && stderr(&output).contains("--mtu 65521 at most"),
        "{}",
        stderr(&output)
    );
    let output = tunnel_up(
        &["--link", "s3://bucket/x", "--max-dollars-per-day", "nan"],
        local_s3::SECRET_KEY,
    );
    assert!(
        stderr(&output).contains("not a number of dollars above zero"),
        "{}",
        stderr(&output)
    );
    let output = tunnel_up(
        &["--link", "s3://bucket/x", "--min", "2m", "--max", "1m"],
        local_s3::SECRET_KEY,
    );
    assert_refused(&output, &["--min", "at most --max"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_problems_are_explained_before_any_device_is_made() {
    let (server, dir) = server_with_bucket("errors").await;
    let endpoint = server.endpoint_url();
    let run = |link: &'static str, secret: &'static str, endpoint: String| {
        tokio::task::spawn_blocking(move || {
            tunnel_up(&local_args(link, &endpoint, "tunerr%d"), secret)
        })
    };

    let missing = run("s3://absent/net", local_s3::SECRET_KEY, endpoint.clone())
        .await
        .unwrap();
    assert_refused(&missing, &["bucket \"absent\" does not exist"]);

    let no_region = tokio::task::spawn_blocking({
        let endpoint = endpoint.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_tunnel"))
                .args(["up", "--link", "s3://present/net", "--node-id", "a"])
                .args(["--endpoint-url", &endpoint])
                .env_remove("AWS_REGION")
                .env_remove("AWS_DEFAULT_REGION")
                .env("AWS_CONFIG_FILE", "/nonexistent")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_refused(&no_region, &["no region", "--region"]);

    let denied = run("s3://present/net", "not-the-secret", endpoint.clone())
        .await
        .unwrap();
    assert_refused(&denied, &["access denied", "credentials"]);

    // A port nothing listens on: the server's, after it stopped.
    let addr = server.addr();
    server.stop();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let unreachable = run(
        "s3://present/net",
        local_s3::SECRET_KEY,
        format!("http://{addr}"),
    )
    .await
    .unwrap();
    assert_refused(&unreachable, &["cannot reach"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without CAP_NET_ADMIN (taken away with `setpriv`, as an unprivileged user would lack it),
/// creating the device fails with a message saying what it needs, TUN or TAP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_permission_for_the_device_is_explained() {
    let (server, dir) = server_with_bucket("perm").await;
    for (mode, kind) in [("tun", "TUN device"), ("tap", "TAP device")] {
        let endpoint = server.endpoint_url();
        let output = tokio::task::spawn_blocking(move || {
            tunnel_up_under(
                &[
                    "setpriv",
                    "--bounding-set=-net_admin",
                    "--inh-caps=-net_admin",
                ],
                &[
                    "--link",
                    "s3://present/net",
                    "--endpoint-url",
                    &endpoint,
                    "--path-style",
                    "--node-id",
                    "a",
                    "--mode",
                    mode,
                    "--device",
                    "tunperm%d",
                ],
                local_s3::SECRET_KEY,
            )
        })
        .await
        .unwrap();
        assert_refused(&output, &["no permission", kind, "CAP_NET_ADMIN"]);
    }
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TAP device that cannot be made (its name is the loopback device's) is refused with the
/// system's reason, naming the device, and nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tap_device_that_cannot_be_made_is_explained() {
    let (server, dir) = server_with_bucket("tap").await;
    let endpoint = server.endpoint_url();
    let output = tokio::task::spawn_blocking(move || {
        let mut args = local_args("s3://present/net", &endpoint, "lo").to_vec();
        args.extend(["--mode", "tap"]);
        tunnel_up(&args, local_s3::SECRET_KEY)
    })
    .await
    .unwrap();
    assert_refused(&output, &["creating the TAP device \"lo\""]);
    let lo = Command::new("ip")
        .args(["link", "show", "lo"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&lo.stdout).contains("LOOPBACK"));
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A congestion control the kernel does not have: the device is made, then refused with a
/// message naming the setting, and it goes with the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_congestion_control_is_explained() {
    let (server, dir) = server_with_bucket("congestion").await;
    let endpoint = server.endpoint_url();
    let output = tokio::task::spawn_blocking(move || {
        let mut args = local_args("s3://present/net", &endpoint, "tuncc%d").to_vec();
        args.extend(["--tcp-congestion", "no-such-algorithm"]);
        tunnel_up(&args, local_s3::SECRET_KEY)
    })
    .await
    .unwrap();
    assert_refused(
        &output,
        &["no TCP congestion control", "--tcp-congestion system"],
    );
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Over CloudWatch Logs (`moto_server`): a refused call names the IAM action, and a missing
/// region, an unreachable endpoint and flags that are S3's are refused before any device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudwatch_logs_problems_are_explained_before_any_device_is_made() {
    use e2e::moto::Moto;
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let guarded = Moto::start_with_auth(loopback);
    let endpoint = guarded.endpoint_url();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            tunnel_up(&args, "testing")
        })
    };
    let args = |endpoint: &str, extra: &[&str]| -> Vec<String> {
        [
            "--link",
            "cwl://net/t",
            "--endpoint-url",
            endpoint,
            "--node-id",
            "a",
        ]
        .iter()
        .chain(["--device", "tuncwl%d"].iter())
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
    };

    let denied = run(args(&endpoint, &[])).await.unwrap();
    assert_refused(&denied, &["access denied", "logs:GetLogEvents"]);

    let path_style = run(args(&endpoint, &["--path-style"])).await.unwrap();
    assert_refused(&path_style, &["--path-style is for s3:// links"]);
    let rate = run(args(&endpoint, &["--read-rate", "0"])).await.unwrap();
    assert_refused(&rate, &["--read-rate", "above zero"]);

    let no_region = tokio::task::spawn_blocking({
        let endpoint = endpoint.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_tunnel"))
                .args(["up", "--link", "cwl://net", "--node-id", "a"])
                .args(["--endpoint-url", &endpoint])
                .env_remove("AWS_REGION")
                .env_remove("AWS_DEFAULT_REGION")
                .env("AWS_CONFIG_FILE", "/nonexistent")
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_refused(&no_region, &["no region", "--region"]);

    // A port nothing listens on: the server's, after it stopped.
    drop(guarded);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let unreachable = run(args(&endpoint, &[])).await.unwrap();
    assert_refused(&unreachable, &["cannot reach"]);
}

/// A node id with no address in the `--ipv4` range is refused before any device is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_id_outside_the_ipv4_range_is_explained() {
    let (server, dir) = server_with_bucket("ipv4").await;
    let endpoint = server.endpoint_url();
    let output = tokio::task::spawn_blocking(move || {
        let mut args = local_args("s3://present/net", &endpoint, "tunv4%d").to_vec();
        // Node a (10) in a /29, which holds ids 1 to 6.
        args.extend(["--ipv4", "10.213.7.0/29"]);
        tunnel_up(&args, local_s3::SECRET_KEY)
    })
    .await
    .unwrap();
    assert_refused(
        &output,
        &["node id a has no address in --ipv4 10.213.7.0/29", "1 to 6"],
    );
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `tunnel up` as a new user runs it with nothing configured (no AWS variables, no profile
/// files): the first line it prints names the real problem, missing credentials or a missing
/// region, on either link, with no line from the SDK before it.
#[test]
fn missing_credentials_and_region_are_the_first_line() {
    let home = std::env::temp_dir().join(format!("tunnel-home-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let first_line = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_tunnel"))
            .arg("up")
            .args(args)
            .env_clear()
            .env("HOME", &home)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        let text = stderr(&output);
        text.lines().next().unwrap_or_default().to_owned()
    };
    for link in [
        &["--link", "s3://xyz/y", "--path-style"][..],
        &["--link", "cwl://xyz/y"][..],
    ] {
        let mut args = link.to_vec();
        args.extend(["--endpoint-url", "http://127.0.0.1:1", "--node-id", "a"]);
        let no_region = first_line(&args);
        assert!(
            no_region.starts_with("tunnel: no region: give --region"),
            "{no_region}"
        );
        args.extend(["--region", "us-east-1"]);
        let no_credentials = first_line(&args);
        for part in [
            "tunnel: no AWS credentials: the standard chain looked in the environment",
            "~/.aws/credentials",
            "instance metadata",
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        ] {
            assert!(
                no_credentials.contains(part),
                "{part:?} not in {no_credentials}"
            );
        }
        assert!(!no_credentials.contains("cannot reach"), "{no_credentials}");
    }
    let _ = std::fs::remove_dir_all(&home);
}

/// A key file that is not one, or missing, is refused first, saying what is wrong without
/// quoting a key; `tunnel keygen` prints a line that `--key-file` takes.
#[test]
fn a_bad_key_file_is_explained() {
    let dir = std::env::temp_dir().join(format!("tunnel-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad");
    std::fs::write(&bad, "tunnel-key 12ab c2VjcmV0\n").unwrap();
    let missing = dir.join("missing");
    for (file, expected) in [
        (&bad, "the network key in"),
        (&missing, "reading the key file"),
    ] {
        let output = tunnel_up(
            &[
                "--link",
                "s3://present/net",
                "--node-id",
                "a",
                "--key-file",
                file.to_str().unwrap(),
            ],
            local_s3::SECRET_KEY,
        );
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{text}");
        let first = text.lines().next().unwrap_or_default();
        assert!(first.starts_with(&format!("tunnel: {expected}")), "{first}");
        assert!(!text.contains("c2VjcmV0"), "the key was quoted: {text}");
    }
    let key = Command::new(env!("CARGO_BIN_EXE_tunnel"))
        .arg("keygen")
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&key.stdout).into_owned();
    assert!(
        line.starts_with("tunnel-key ") && line.trim().split(' ').count() == 3,
        "{line}"
    );
    assert!(tunnels::wire::sealed::Keys::parse(&line).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}
