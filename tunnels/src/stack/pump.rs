//! A pump: one local TCP connection and its channels to the engine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::Shared;

/// What a pump hands the engine.
#[derive(Debug)]
pub(super) enum FromLocal {
    Data(Bytes),
    /// The local side closed its writing half. A pump that ends without saying it was reset.
    Eof,
}

/// Copies `stream` to `up` and `down` to `stream` until both ends closed, or either was reset
/// (the local side with an error, the network side by `reset`): then the local connection is
/// reset too (a zero linger), so that neither side takes a truncated stream for a whole one.
pub(super) async fn tcp(
    mut stream: TcpStream,
    mut down: mpsc::Receiver<Bytes>,
    up: mpsc::Sender<FromLocal>,
    reset: Arc<AtomicBool>,
    shared: Arc<Shared>,
) {
    let _ = stream.set_nodelay(true);
    let whole = {
        let (mut rd, mut wr) = stream.split();
        let reading = async {
            let mut buf = vec![0u8; super::engine::CHUNK];
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) => {
                        let _ = up.send(FromLocal::Eof).await;
                        shared.wake.notify_one();
                        return true;
                    }
                    Ok(n) => n,
                    Err(_) => return false,
                };
                let data = Bytes::copy_from_slice(&buf[..n]);
                if up.send(FromLocal::Data(data)).await.is_err() {
                    return false;
                }
                shared.wake.notify_one();
            }
        };
        let writing = async {
            while let Some(chunk) = down.recv().await {
                if wr.write_all(&chunk).await.is_err() {
                    return false;
                }
                // Room in the channel: the engine may take more from the socket.
                shared.wake.notify_one();
            }
            if reset.load(Ordering::Relaxed) {
                return false;
            }
            wr.shutdown().await.is_ok()
        };
        tokio::pin!(reading, writing);
        let stopped = shared.stopped.cancelled();
        tokio::select! {
            () = stopped => false,
            read = &mut reading => read && writing.await,
            written = &mut writing => written && reading.await,
        }
    };
    drop(up);
    if !whole {
        // A reset rather than an end of stream.
        #[allow(deprecated)]
        let _ = stream.set_linger(Some(std::time::Duration::ZERO));
    }
}
