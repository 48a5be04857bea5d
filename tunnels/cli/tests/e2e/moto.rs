//! `moto_server` (PyPI `moto[server]`, installed into `.venv` by `scripts/test`): CloudWatch
//! Logs on a local port, for the tests that need the real service's API through the real AWS
//! SDK. A test whose server cannot be started fails; it does not skip.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tunnels::link::cwl::{CwlStore, CwlStoreConfig};

/// The credentials moto takes (any).
pub(crate) const ACCESS_KEY: &str = "testing";
pub(crate) const SECRET_KEY: &str = "testing";

/// A `moto_server` process, killed when dropped.
pub(crate) struct Moto {
    child: Child,
    addr: SocketAddr,
}

/// `moto_server`: `$MOTO_SERVER`, else `.venv` (where `scripts/test` installs it), else `PATH`.
fn moto_server() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("moto_server"))
        .find(|candidate| candidate.exists());
    on_path.unwrap_or_else(|| {
        panic!(
            "moto_server not found: run scripts/test, which installs moto[server] into .venv, \
             or set MOTO_SERVER"
        )
    })
}

impl Moto {
    /// Starts a server on a free port of `host` and waits until it answers.
    pub(crate) fn start(host: IpAddr) -> Moto {
        Moto::start_with(host, &[])
    }

    /// The same, with moto's IAM checks on: every call is refused unless its credentials are
    /// of a user moto knows (`INITIAL_NO_AUTH_ACTION_COUNT=0`), as AWS refuses unknown keys.
    pub(crate) fn start_with_auth(host: IpAddr) -> Moto {
        Moto::start_with(host, &[("INITIAL_NO_AUTH_ACTION_COUNT", "0")])
    }

    fn start_with(host: IpAddr, env: &[(&str, &str)]) -> Moto {
        // Port 0: the server binds a free port itself and says which. A port found free here
        // and handed over could be taken meanwhile by another test's server, which this one
        // would then talk to (and lose when that test stops it).
        let mut child = Command::new(moto_server())
            .args(["-H", &host.to_string(), "-p", "0"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting moto_server");
        let stderr = child.stderr.take().expect("piped stderr");
        let (port_tx, port_rx) = mpsc::channel();
        thread::spawn(move || {
            // " * Running on http://127.0.0.1:41234" (or http://[::1]:41234); every request is
            // logged after it, so the pipe is read to its end, or the server would block.
            let mut port_tx = Some(port_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("Running on http://")
                    && let Some(tx) = port_tx.take()
                {
                    let port = line[at..]
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.trim().parse().ok());
                    let _ = tx.send(port);
                }
            }
        });
        let port: u16 = match port_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(port)) => port,
            Ok(None) => panic!("moto_server said where it runs in a way this cannot read"),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("moto_server did not start on {host} within 30 s: {status:?}");
            }
        };
        let addr = SocketAddr::new(host, port);
        let moto = Moto { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on {addr}"
            );
            thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// Where it listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://host:port`.
    pub(crate) fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A store on this server, with its credentials and region us-east-1.
    pub(crate) async fn store(&self) -> CwlStore {
        CwlStore::connect(&CwlStoreConfig {
            region: Some("us-east-1".into()),
            profile: None,
            endpoint_url: Some(self.endpoint_url()),
            credentials: Some((ACCESS_KEY.into(), SECRET_KEY.into())),
        })
        .await
    }

    /// Stops the server answering (SIGSTOP), as a service that is down; its state stays.
    pub(crate) fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets it answer again (SIGCONT).
    pub(crate) fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{name} moto_server");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.resume_quietly();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    fn resume_quietly(&self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
    }
}
