//! A TCP proxy on loopback that makes a link of a given one-way delay and rate: what a
//! benchmark measures distance through (the kernel here has no netem). Each direction of the
//! link is shared by every connection through the proxy, as one network path is: bytes leave at
//! the link's rate, one chunk after another whichever connection it belongs to, and arrive the
//! one-way delay after they left. Each connection's queue holds at most what the link holds in
//! flight (its bandwidth-delay product, at least 256 KiB), so a sender is held back as TCP
//! over such a link would hold it.
//!
//! Each direction of a connection is moved by threads of its own, whose sleeps end within tens
//! of microseconds of their time. (An async timer rounds each wait up to its next millisecond:
//! a round trip through the proxy took about 2.4 ms longer than the link's, and every
//! request-response exchange measured through it paid that.)

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

/// A link: the delay each byte takes one way, and the rate bytes leave at.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    pub one_way: Duration,
    pub bytes_per_second: f64,
}

impl Link {
    pub fn new(one_way_ms: u64, megabits_per_second: f64) -> Link {
        Link { one_way: Duration::from_millis(one_way_ms), bytes_per_second: megabits_per_second * 1e6 / 8.0 }
    }

    /// How long `bytes` take to cross the link one way once started: the delay and their
    /// serialisation at the rate (what an ideal transfer over it takes).
    pub fn transfer_time(&self, bytes: u64) -> Duration {
        self.one_way + Duration::from_secs_f64(bytes as f64 / self.bytes_per_second)
    }
}

/// Proxies connections to `127.0.0.1:{listen_port}` (0: any) to `target` over `link`; the
/// address it listens on. The proxy accepts on the current tokio runtime until it ends.
pub async fn spawn(target: SocketAddr, link: Link) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let local = listener.local_addr()?;
    // When each direction of the link is next free to send, shared by every connection.
    let (upstream, downstream) = (Arc::new(Mutex::new(Instant::now())), Arc::new(Mutex::new(Instant::now())));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(client) = client.into_std() else { continue };
            let (upstream, downstream) = (upstream.clone(), downstream.clone());
            std::thread::spawn(move || {
                let Ok(server) = TcpStream::connect(target) else { return };
                let _ = client.set_nonblocking(false);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (Ok(client_read), Ok(server_read)) = (client.try_clone(), server.try_clone()) else { return };
                let up = std::thread::spawn(move || direction(client_read, server, link, &upstream));
                direction(server_read, client, link, &downstream);
                let _ = up.join();
            });
        }
    });
    Ok(local)
}

/// One direction of a connection over the link.
fn direction(mut from: TcpStream, mut to: TcpStream, link: Link, free_at: &Mutex<Instant>) {
    const CHUNK: usize = 64 << 10;
    let in_flight = (link.bytes_per_second * link.one_way.as_secs_f64()).max(256.0 * 1024.0);
    let (sender, receiver) = mpsc::sync_channel::<(Instant, Vec<u8>)>((in_flight as usize / CHUNK).max(4));
    let writer = std::thread::spawn(move || {
        while let Ok((arrives, bytes)) = receiver.recv() {
            sleep_until(arrives);
            if to.write_all(&bytes).is_err() {
                return;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let now = Instant::now();
        let leaves = {
            let mut free_at = free_at.lock().unwrap_or_else(|p| p.into_inner());
            *free_at = (*free_at).max(now) + Duration::from_secs_f64(n as f64 / link.bytes_per_second);
            *free_at
        };
        if sender.send((leaves + link.one_way, buffer[..n].to_vec())).is_err() {
            break;
        }
        // The sender waits while the link is busy sending what it already has.
        if leaves > now + Duration::from_millis(1) {
            sleep_until(leaves - Duration::from_millis(1));
        }
    }
    drop(sender);
    let _ = writer.join();
}

fn sleep_until(when: Instant) {
    let now = Instant::now();
    if when > now {
        std::thread::sleep(when - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    #[tokio::test]
    async fn a_round_trip_takes_twice_the_delay_and_bytes_take_their_rate() {
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = echo.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 1 << 16];
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 || socket.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let link = Link::new(20, 80.0);
        let proxy = spawn(target, link).await.expect("proxy");
        let mut socket = TcpStream::connect(proxy).await.expect("connect");
        let began = std::time::Instant::now();
        socket.write_all(b"ping").await.expect("write");
        let mut answer = [0u8; 4];
        socket.read_exact(&mut answer).await.expect("read");
        let rtt = began.elapsed();
        assert!(rtt >= Duration::from_millis(40) && rtt < Duration::from_millis(80), "{rtt:?}");
        // A round trip takes the link's, not a millisecond more each way: what a benchmark of
        // request-response exchanges (DIMSE's per-instance responses) measures is the link.
        let mut rtts = Vec::new();
        for _ in 0..9 {
            let began = std::time::Instant::now();
            socket.write_all(b"ping").await.expect("write");
            socket.read_exact(&mut answer).await.expect("read");
            rtts.push(began.elapsed());
        }
        let fastest = rtts.iter().min().copied().unwrap_or_default();
        assert!(fastest < Duration::from_micros(41_000), "fastest round trip over a 20 ms link: {fastest:?}");
        // 1 MB at 80 Mbit/s is 100 ms each way, plus the delay.
        let payload = vec![7u8; 1_000_000];
        let began = std::time::Instant::now();
        let (mut read, mut write) = socket.into_split();
        let sending = tokio::spawn(async move { write.write_all(&payload).await });
        let mut back = vec![0u8; 1_000_000];
        read.read_exact(&mut back).await.expect("echoed");
        sending.await.expect("task").expect("sent");
        let took = began.elapsed();
        assert!(took >= Duration::from_millis(140) && took < Duration::from_millis(400), "{took:?}");
        // Two connections share the link: 500 kB each, at once, take as long as 1 MB on one.
        let began = std::time::Instant::now();
        let each = |proxy| async move {
            let (mut read, mut write) = TcpStream::connect(proxy).await.expect("connect").into_split();
            let sending = tokio::spawn(async move { write.write_all(&vec![1u8; 500_000]).await });
            let mut back = vec![0u8; 500_000];
            read.read_exact(&mut back).await.expect("echoed");
            sending.await.expect("task").expect("sent");
        };
        futures::future::join(each(proxy), each(proxy)).await;
        let shared = began.elapsed();
        assert!(shared >= Duration::from_millis(140), "two connections got a link each: {shared:?}");
    }
}
