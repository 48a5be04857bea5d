//! The TUN device against the real kernel: created, addressed, routed with its congestion
//! control, packets read from it, gone when dropped. Runs as root (CI does); each test uses a
//! device name of its own and a network no other test uses.
#![cfg(all(feature = "tun", target_os = "linux"))]

use std::net::Ipv6Addr;
use std::process::Command;
use std::time::Duration;

use tunnels::device::{Device, Tun, TunConfig};

fn ip(args: &[&str]) -> (bool, String) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr),
    )
}

fn config(name: &str, addr: &str) -> TunConfig<'static> {
    TunConfig {
        name: Box::leak(name.to_owned().into_boxed_str()),
        addr: addr.parse().unwrap(),
        prefix_len: 64,
        mtu: 1400,
        tx_queue_len: 10_000,
        ipv4: None,
    }
}

#[tokio::test]
async fn a_tun_device_is_up_addressed_routed_and_gone_when_dropped() {
    let name = format!("tdev{}", std::process::id() % 10_000);
    let tun = Tun::create(&config(&name, "fd7e:5e7:1::a")).unwrap();
    assert_eq!(tun.name(), name);
    assert_eq!(tun.mtu(), 1400);
    tun.set_congestion("cubic").await.unwrap();

    let (_, link) = ip(&["link", "show", &name]);
    assert!(
        link.contains("mtu 1400") && link.contains("qlen 10000"),
        "{link}"
    );
    assert!(link.contains(",UP"), "{link}");
    let (_, addr) = ip(&["-6", "addr", "show", "dev", &name]);
    assert!(addr.contains("fd7e:5e7:1::a/64"), "{addr}");
    let (_, route) = ip(&["-6", "route", "show", "dev", &name]);
    assert!(
        route.contains("fd7e:5e7:1::/64") && route.contains("congctl cubic"),
        "{route}"
    );
    assert_eq!(
        route.matches("fd7e:5e7:1::/64").count(),
        1,
        "replaced, not added: {route}"
    );

    // A ping to another address of the network leaves through the device: read it.
    let mut ping = Command::new("ping")
        .args([
            "-6",
            "-n",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            "fd7e:5e7:1::b",
        ])
        .spawn()
        .expect("ping (iputils-ping)");
    let mut buf = vec![0u8; 65_536];
    let n = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = tun.recv(&mut buf).await.unwrap();
            // Skip what the kernel says on its own (router solicitations, MLD).
            if n >= 48 && buf[0] >> 4 == 6 && buf[6] == 58 && buf[40] == 128 {
                return n;
            }
        }
    })
    .await
    .expect("an echo request within 10 s");
    let _ = ping.wait();
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&buf[24..40]).unwrap());
    assert_eq!(dst, "fd7e:5e7:1::b".parse::<Ipv6Addr>().unwrap());
    assert!(n > 48);
    // Writing never blocks the caller: a packet the device takes, or an error.
    tun.try_send(&buf[..n]).unwrap();

    drop(tun);
    let (exists, _) = ip(&["link", "show", &name]);
    assert!(!exists, "{name} outlived its Tun");
}

#[tokio::test]
async fn an_unknown_congestion_control_is_not_found() {
    let name = format!("tdevc{}", std::process::id() % 10_000);
    let tun = Tun::create(&config(&name, "fd7e:5e7:2::a")).unwrap();
    let err = tun.set_congestion("no-such-algorithm").await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{err}");
}

#[test]
fn a_bad_name_is_refused() {
    let err = Tun::create(&config("a name far too long for linux", "fd7e:5e7:3::a")).unwrap_err();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Other
        ),
        "{err:?}"
    );
}

/// With an IPv4 address too, the device has both, and both prefix routes carry the congestion
/// control.
#[tokio::test]
async fn a_tun_device_with_ipv4_is_addressed_and_routed_for_both() {
    let name = format!("tdv4{}", std::process::id() % 10_000);
    let tun = Tun::create(&TunConfig {
        ipv4: Some(("10.213.0.10".parse().unwrap(), 16)),
        ..config(&name, "fd7e:5e7:2::a")
    })
    .unwrap();
    tun.set_congestion("cubic").await.unwrap();
    let (_, addr) = ip(&["-4", "addr", "show", "dev", &name]);
    assert!(addr.contains("10.213.0.10/16"), "{addr}");
    let (_, route) = ip(&["-4", "route", "show", "dev", &name]);
    assert!(
        route.contains("10.213.0.0/16") && route.contains("congctl cubic"),
        "{route}"
    );
    assert_eq!(
        route.matches("10.213.0.0/16").count(),
        1,
        "replaced, not added: {route}"
    );
    let (_, route6) = ip(&["-6", "route", "show", "dev", &name]);
    assert!(route6.contains("congctl cubic"), "{route6}");
}
