//! `tunnel check`: the start-up checks of `tunnel up` on their own, one line each, with the
//! fix for what fails and the least-privilege IAM policy for what was refused.

use std::net::Ipv6Addr;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Args;
use tunnels::device::{Tap, Tun, TunConfig};
use tunnels::link::cwl::{CwlStore, LogEvent, LogStore, ReadFrom};
use tunnels::link::s3::{ObjectStore, S3Store};
use tunnels::link::{StoreError, StoreErrorKind};
use tunnels::net::ether::mac_of;

use crate::up::{LinkUrl, Mode, ServiceArgs, device_problem, parse_link};

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The network's link, as `tunnel up` takes it: s3://BUCKET[/PREFIX] or
    /// cwl://LOG_GROUP[/STREAM_PREFIX].
    #[arg(long, value_name = "s3://BUCKET[/PREFIX] | cwl://LOG_GROUP[/STREAM_PREFIX]", value_parser = parse_link)]
    link: LinkUrl,

    #[command(flatten)]
    service: ServiceArgs,

    /// The kind of device whose creation is tried: tun or tap.
    #[arg(long, value_enum, default_value_t = Mode::Tun)]
    mode: Mode,

    /// Leave the device out (checking the credentials and policy from another machine).
    #[arg(long)]
    no_device: bool,
}

/// How one check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    /// Not needed for the tunnel to work, but worth knowing.
    Warn,
    Fail,
    /// Not tried: an earlier check it needs failed.
    Skip,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// The checks so far, printed as they are made.
#[derive(Debug, Default)]
struct Report {
    failed: usize,
    total: usize,
    /// IAM actions the service refused.
    denied: Vec<&'static str>,
    /// Whether a call was left untried.
    skipped_calls: bool,
    /// The region, for the policy's resources.
    region: Option<String>,
}

impl Report {
    fn line(&mut self, status: Status, what: &str, detail: &str) {
        self.total += 1;
        match status {
            Status::Fail => self.failed += 1,
            Status::Skip if what.contains(':') => self.skipped_calls = true,
            _ => {}
        }
        println!("{} {what:<26} {detail}", status.label());
    }

    /// The line for a call of IAM `action`: OK, or its failure with the fix; returns whether
    /// it succeeded.
    fn call<T>(&mut self, action: &'static str, result: &Result<T, StoreError>, fix: &str) -> bool {
        match result {
            Ok(_) => {
                self.line(Status::Ok, action, "allowed");
                true
            }
            Err(e) => {
                if e.kind() == StoreErrorKind::AccessDenied {
                    self.denied.push(action);
                }
                self.line(
                    Status::Fail,
                    action,
                    &format!("{e}; fix: {}", fix_for(e, fix)),
                );
                false
            }
        }
    }
}

/// What to do about `err`: `denied` when the call was refused.
fn fix_for(err: &StoreError, denied: &str) -> String {
    match err.kind() {
        StoreErrorKind::AccessDenied => denied.to_owned(),
        StoreErrorKind::Unavailable | StoreErrorKind::Throttled => {
            "check --endpoint-url, the network and the region".to_owned()
        }
        StoreErrorKind::NoSuchBucket => "create the bucket, or check --region".to_owned(),
        StoreErrorKind::NotFound => "create the log group, or allow logs:CreateLogGroup".to_owned(),
        _ => "see the message".to_owned(),
    }
}

pub(crate) async fn check(args: CheckArgs) -> Result<(), String> {
    crate::up::init_logs()?;
    let mut report = Report::default();
    match &args.link {
        LinkUrl::S3 { bucket, prefix } => {
            let store = S3Store::connect(&args.service.s3(bucket)).await;
            let ready = chain(&mut report, store.region(), store.credentials().await);
            s3_calls(&mut report, &store, bucket, prefix, ready).await;
        }
        LinkUrl::Cwl { group, prefix } => {
            let store = CwlStore::connect(&args.service.cwl()).await;
            let region = store.region().map(str::to_owned);
            let ready = chain(&mut report, region.as_deref(), store.credentials().await);
            cwl_calls(&mut report, &store, group, prefix, ready).await;
            report.region = region;
        }
    }
    if args.no_device {
        report.line(Status::Skip, "device", "--no-device");
    } else {
        device(&mut report, args.mode);
    }
    if !report.denied.is_empty() {
        match &args.link {
            LinkUrl::S3 { bucket, prefix } => print_s3_policy(&report.denied, bucket, prefix),
            LinkUrl::Cwl { group, .. } => {
                let region = report.region.as_deref().unwrap_or("REGION");
                print_cwl_policy(&report.denied, region, group);
            }
        }
        if report.skipped_calls {
            println!("(calls marked SKIP were not tried: they may need allowing too)");
        }
    }
    if report.failed == 0 {
        println!("all {} checks passed", report.total);
        Ok(())
    } else {
        Err(format!(
            "{} of {} checks failed",
            report.failed, report.total
        ))
    }
}

/// The region and the credentials; whether calls can be tried.
fn chain(
    report: &mut Report,
    region: Option<&str>,
    credentials: Result<tunnels::link::FoundCredentials, StoreError>,
) -> bool {
    let has_region = match region {
        Some(region) => {
            report.line(Status::Ok, "region", region);
            true
        }
        None => {
            report.line(
                Status::Fail,
                "region",
                "none; fix: give --region, or set AWS_REGION or a region in the profile",
            );
            false
        }
    };
    let has_credentials = match credentials {
        Ok(found) => {
            let detail = format!(
                "from the provider {}, access key {}",
                found.provider, found.access_key_id
            );
            report.line(Status::Ok, "credentials", &detail);
            true
        }
        Err(e) => {
            report.line(Status::Fail, "credentials", &e.to_string());
            false
        }
    };
    has_region && has_credentials
}

/// A name no other run uses at once.
fn nonce() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

async fn s3_calls(report: &mut Report, store: &S3Store, bucket: &str, prefix: &str, ready: bool) {
    const CALLS: [&str; 4] = [
        "s3:ListBucket",
        "s3:PutObject",
        "s3:GetObject",
        "s3:DeleteObject",
    ];
    if !ready {
        for action in CALLS {
            report.line(Status::Skip, action, "needs a region and credentials");
        }
        return;
    }
    let objects = format!("arn:aws:s3:::{bucket}/{prefix}*");
    let listed = store.list(prefix, None, 1).await;
    let fix = format!("allow s3:ListBucket on arn:aws:s3:::{bucket} where s3:prefix is {prefix}*");
    let reachable = report.call(CALLS[0], &listed, &fix)
        || listed
            .as_ref()
            .is_err_and(|e| e.kind() == StoreErrorKind::AccessDenied);
    if !reachable {
        for action in &CALLS[1..] {
            report.line(Status::Skip, action, "the bucket cannot be reached");
        }
        return;
    }
    let key = format!("{prefix}.check/{:032x}", nonce());
    let body = Bytes::from_static(b"tunnel check");
    let put = store.put(&key, body.clone()).await;
    let wrote = report.call(CALLS[1], &put, &format!("allow s3:PutObject on {objects}"));
    if wrote {
        let got = store.get(&key).await.and_then(|read| match read {
            Some(read) if read == body => Ok(()),
            _ => Err(StoreError::new(
                StoreErrorKind::Other,
                format!("{key} did not read back as written"),
            )),
        });
        report.call(CALLS[2], &got, &format!("allow s3:GetObject on {objects}"));
        let deleted = store.delete_many(std::slice::from_ref(&key)).await;
        report.call(
            CALLS[3],
            &deleted,
            &format!("allow s3:DeleteObject on {objects}"),
        );
    } else {
        for action in &CALLS[2..] {
            report.line(Status::Skip, action, "needs an object written first");
        }
    }
}

async fn cwl_calls(report: &mut Report, store: &CwlStore, group: &str, prefix: &str, ready: bool) {
    const CALLS: [&str; 5] = [
        "logs:CreateLogGroup",
        "logs:PutRetentionPolicy",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "logs:GetLogEvents",
    ];
    if !ready {
        for action in CALLS {
            report.line(Status::Skip, action, "needs a region and credentials");
        }
        return;
    }
    let on_group = format!("allow it on the log group {group:?} (and its streams, {group}:*)");
    // The group may be an administrator's, made beforehand: creating it is then not needed.
    for (action, result) in [
        (CALLS[0], store.create_group(group).await),
        (CALLS[1], store.set_retention(group, 1).await),
    ] {
        match result {
            Err(e) if e.kind() == StoreErrorKind::AccessDenied => {
                report.denied.push(action);
                let detail = format!(
                    "refused ({e}); fine if the group was made beforehand with a retention of \
                     a day, else {on_group}"
                );
                report.line(Status::Warn, action, &detail);
            }
            Err(e) if e.kind() == StoreErrorKind::Unavailable => {
                report.call(action, &Err::<(), _>(e), &on_group);
                for action in &CALLS[2..] {
                    report.line(Status::Skip, action, "the service cannot be reached");
                }
                return;
            }
            result => {
                report.call(action, &result, &on_group);
            }
        }
    }
    // One stream for every check, so that checks leave one stream behind, not one each.
    let stream = format!("{prefix}check");
    let created = store.create_stream(group, &stream).await;
    let mut ok = report.call(CALLS[2], &created, &on_group);
    let timestamp = (nonce() / 1_000_000) as i64;
    let message = format!("tunnel check {:032x}", nonce());
    let event = LogEvent {
        timestamp,
        message: message.clone(),
    };
    if ok {
        let put = store.put_events(group, &stream, &[event]).await;
        ok = report.call(CALLS[3], &put, &on_group);
    } else {
        report.line(Status::Skip, CALLS[3], "needs the check stream");
    }
    if ok {
        let read = store
            .get_events(group, &stream, ReadFrom::Tail, Some(1))
            .await
            .and_then(|page| {
                if page.events.iter().any(|e| e.message == message) {
                    Ok(())
                } else {
                    Err(StoreError::new(
                        StoreErrorKind::Other,
                        "the event just put did not read back",
                    ))
                }
            });
        report.call(CALLS[4], &read, &on_group);
    } else {
        report.line(Status::Skip, CALLS[4], "needs an event written first");
    }
}

/// Tries to create the device `tunnel up --mode` would, under a name of its own and on an
/// address of the documentation range (so that no route of a running tunnel is touched);
/// it goes away at once.
fn device(report: &mut Report, mode: Mode) {
    let config = TunConfig {
        name: "tuncheck%d",
        addr: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1),
        prefix_len: 128,
        mtu: 1500,
        tx_queue_len: 500,
        ipv4: None,
    };
    let created = match mode {
        Mode::Tun => Tun::create(&config).map(drop),
        Mode::Tap => Tap::create(&config, mac_of(1)).map(drop),
    };
    let what = format!("{} device", mode.device_kind());
    match created {
        Ok(()) => report.line(
            Status::Ok,
            &what,
            "may be created (CAP_NET_ADMIN, /dev/net/tun)",
        ),
        Err(e) => report.line(Status::Fail, &what, &device_problem(&e, mode, config.name)),
    }
}

fn print_s3_policy(denied: &[&str], bucket: &str, prefix: &str) {
    let objects: Vec<String> = denied
        .iter()
        .filter(|a| **a != "s3:ListBucket")
        .map(|a| format!("\"{a}\""))
        .collect();
    let mut statements = Vec::new();
    if !objects.is_empty() {
        statements.push(format!(
            "    {{\n      \"Sid\": \"TunnelObjects\",\n      \"Effect\": \"Allow\",\n      \
             \"Action\": [{}],\n      \"Resource\": \"arn:aws:s3:::{bucket}/{prefix}*\"\n    }}",
            objects.join(", ")
        ));
    }
    if denied.contains(&"s3:ListBucket") {
        statements.push(format!(
            "    {{\n      \"Sid\": \"TunnelListing\",\n      \"Effect\": \"Allow\",\n      \
             \"Action\": \"s3:ListBucket\",\n      \"Resource\": \"arn:aws:s3:::{bucket}\",\n      \
             \"Condition\": {{ \"StringLike\": {{ \"s3:prefix\": \"{prefix}*\" }} }}\n    }}"
        ));
    }
    print_policy("README, \"Deploying on AWS\"", &statements);
}

fn print_cwl_policy(denied: &[&str], region: &str, group: &str) {
    let reference = "README, \"CloudWatch Logs: IAM policy\"";
    let actions: Vec<String> = denied.iter().map(|a| format!("\"{a}\"")).collect();
    print_policy(
        reference,
        &[format!(
            "    {{\n      \"Sid\": \"TunnelLogs\",\n      \"Effect\": \"Allow\",\n      \
         \"Action\": [{}],\n      \"Resource\": \"arn:aws:logs:{region}:*:log-group:{group}:*\"\n    }}",
            actions.join(", ")
        )],
    );
}

fn print_policy(reference: &str, statements: &[String]) {
    println!(
        "\nThe least-privilege IAM policy for what was refused ({reference}):\n\
         {{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": [\n{}\n  ]\n}}",
        statements.join(",\n")
    );
}
