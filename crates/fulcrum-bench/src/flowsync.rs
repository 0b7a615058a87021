//! Suite `flowsync`: flow records per second one balancer sends and absorbs, on loopback.
//!
//! - Send: encode 23 records a datagram, HMAC-SHA256, `sendto`; against plain `sendto` of
//!   the same datagrams already built (the socket's own cost).
//! - Absorb: `recvfrom`, then framing, MAC, freshness and replay checks and decoding;
//!   against plain `recvfrom` of the same datagrams.
//!
//! Cases are interleaved round by round (order rotated) after a warm-up round; each round
//! moves `DATAGRAMS` datagrams; the figure is the median round, the note gives the spread.

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, ensure};
use fulcrum::{FlowRecord, Protocol};
use fulcrum_flowsync::{
    Key,
    envelope::{Opener, Sealer},
    wire::{Body, MAX_RECORDS},
};

use crate::{dataplane::median_spread, object, report::Figure};

const SUITE: &str = "flowsync";
const DATAGRAMS: usize = 4000;
const ROUNDS: usize = 11;

/// Runs the suite.
pub fn run() -> anyhow::Result<Vec<Figure>> {
    object::pin_to_cpu(1)
        .or_else(|_| object::pin_to_cpu(0))
        .context("pinning the flowsync suite to one CPU")?;
    let rx = UdpSocket::bind("127.0.0.1:0").context("binding the receiver")?;
    force_rcvbuf(&rx, 64 << 20)?;
    rx.set_read_timeout(Some(Duration::from_secs(2)))?;
    let tx = UdpSocket::bind("127.0.0.1:0").context("binding the sender")?;
    let (to, from) = (rx.local_addr()?, tx.local_addr()?);
    let key = Key::from_bytes(&[0x42; 32]).context("key")?;
    let mut sealer = Sealer::new(key.clone(), 1, unix_now());
    let mut opener = Opener::new(key, Some([from].into()), Duration::from_secs(30));
    let batch: Vec<FlowRecord> = (0..MAX_RECORDS).map(record).collect();

    let mut rates: [Vec<f64>; 4] = Default::default();
    for round in 0..=ROUNDS {
        for i in 0..4 {
            let case = (i + round) % 4;
            let rate = match case {
                0 => send_sealed(&tx, to, &mut sealer, &batch, &rx)?,
                1 => send_plain(&tx, to, &mut sealer, &batch, &rx)?,
                2 => absorb(&tx, to, &mut sealer, &batch, &rx, Some(&mut opener))?,
                _ => absorb(&tx, to, &mut sealer, &batch, &rx, None)?,
            };
            if round > 0 {
                rates[case].push(rate);
            }
        }
    }
    let [sealed, plain, opened, received] = rates.map(|mut r| median_spread(&mut r));
    let note = |(_, spread): (f64, f64), what: &str| {
        format!(
            "{what}; {MAX_RECORDS} records a datagram, {DATAGRAMS} datagrams a round, median of \
             {ROUNDS} rounds, spread {spread:.0} records/s"
        )
    };
    Ok(vec![
        Figure::new(SUITE, "records sent per second", sealed.0, "records/s")
            .against("plain UDP send of the same datagrams", plain.0)
            .note(note(
                sealed,
                "encode + HMAC-SHA256 + sendto on loopback, one core",
            )),
        Figure::new(SUITE, "records absorbed per second", opened.0, "records/s")
            .against("plain UDP receive of the same datagrams", received.0)
            .note(note(
                opened,
                "recvfrom + MAC verify + freshness/replay + decode, one core",
            )),
    ])
}

/// Seals and sends a round; records per second.
fn send_sealed(
    tx: &UdpSocket,
    to: SocketAddr,
    sealer: &mut Sealer,
    batch: &[FlowRecord],
    rx: &UdpSocket,
) -> anyhow::Result<f64> {
    timed_sends(rx, || {
        tx.send_to(sealer.seal(&Body::Records(batch.to_vec()), unix_now()), to)
    })
}

/// Sends a round of datagrams sealed beforehand; records per second.
fn send_plain(
    tx: &UdpSocket,
    to: SocketAddr,
    sealer: &mut Sealer,
    batch: &[FlowRecord],
    rx: &UdpSocket,
) -> anyhow::Result<f64> {
    let datagram = sealer
        .seal(&Body::Records(batch.to_vec()), unix_now())
        .to_vec();
    timed_sends(rx, || tx.send_to(&datagram, to))
}

/// Times a round of `DATAGRAMS` calls of `send`, then drains them from `rx`; records per
/// second.
fn timed_sends(
    rx: &UdpSocket,
    mut send: impl FnMut() -> std::io::Result<usize>,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    for _ in 0..DATAGRAMS {
        send()?;
    }
    let rate = per_second(start.elapsed());
    drain(rx, DATAGRAMS)?;
    Ok(rate)
}

/// Queues a round of fresh datagrams, then times receiving them, opening each when
/// `opener` is given; records per second.
fn absorb(
    tx: &UdpSocket,
    to: SocketAddr,
    sealer: &mut Sealer,
    batch: &[FlowRecord],
    rx: &UdpSocket,
    mut opener: Option<&mut Opener>,
) -> anyhow::Result<f64> {
    for _ in 0..DATAGRAMS {
        tx.send_to(sealer.seal(&Body::Records(batch.to_vec()), unix_now()), to)?;
    }
    let mut buf = [0u8; 2048];
    let mut records = 0usize;
    let start = Instant::now();
    for _ in 0..DATAGRAMS {
        let (n, from) = rx
            .recv_from(&mut buf)
            .context("receiving a queued datagram")?;
        if let Some(opener) = opener.as_deref_mut() {
            let (_, body) = opener
                .open(&buf[..n], from, unix_now())
                .map_err(|r| anyhow::anyhow!("refused: {r:?}"))?;
            if let Body::Records(r) = body {
                records += r.len();
            }
        } else {
            records += MAX_RECORDS;
        }
    }
    let elapsed = start.elapsed();
    ensure!(
        records == DATAGRAMS * MAX_RECORDS,
        "lost records: {records}"
    );
    Ok(per_second(elapsed))
}

fn drain(rx: &UdpSocket, n: usize) -> anyhow::Result<()> {
    let mut buf = [0u8; 2048];
    for _ in 0..n {
        rx.recv_from(&mut buf).context("draining the receiver")?;
    }
    Ok(())
}

fn per_second(elapsed: Duration) -> f64 {
    (DATAGRAMS * MAX_RECORDS) as f64 / elapsed.as_secs_f64()
}

fn record(i: usize) -> FlowRecord {
    FlowRecord {
        protocol: Protocol::Tcp,
        client: SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 40000 + i as u16)),
        vip: SocketAddr::from(([10, 0, 100, 1], 80)),
        service_port: 80,
        backend: [10, 0, 0, 11].into(),
    }
}

/// A receive buffer big enough for a whole round (root may exceed `rmem_max`).
fn force_rcvbuf(socket: &UdpSocket, bytes: i32) -> anyhow::Result<()> {
    // SAFETY: a valid socket and an int option.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const bytes).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    ensure!(
        rc == 0,
        "SO_RCVBUFFORCE: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
