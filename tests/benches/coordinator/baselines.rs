//! The baselines the coordinator's figures are divided by, measured in the same run on the
//! same machine: a STREAM triad (memory bandwidth, for the outer step) and raw loopback TCP
//! copies (for ingest), optionally on the same disjoint cores as a pinned coordinator and its
//! senders.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use bytes::Bytes;

use crate::pinning::{CoreSplit, pin_current_thread};

/// STREAM triad `a = b + s·c` on f32 arrays of 128 MB each, split over `threads`; bytes
/// counted as STREAM does (read b and c, write a). Best of five.
pub fn triad_bytes_per_second(threads: usize) -> f64 {
    let n = 1 << 25;
    let (mut a, b, c) = (vec![0f32; n], vec![1f32; n], vec![2f32; n]);
    let share = n.div_ceil(threads);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let started = Instant::now();
        std::thread::scope(|scope| {
            for ((a, b), c) in a
                .chunks_mut(share)
                .zip(b.chunks(share))
                .zip(c.chunks(share))
            {
                scope.spawn(move || {
                    for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
                        *a = *b + 3.0 * *c;
                    }
                });
            }
        });
        best = best.min(started.elapsed().as_secs_f64());
        std::hint::black_box(&mut a);
    }
    (3 * 4 * n) as f64 / best
}

/// How a raw TCP receiver treats the bytes.
#[derive(Clone, Copy)]
pub enum Landing {
    /// Into one payload-sized buffer per stream: the bytes end up in memory, as an upload's
    /// must. The baseline the ratios use.
    Memory,
    /// Into a 256 KiB buffer overwritten again and again (stays in cache): an upper bound
    /// no receiver that keeps the data can reach, reported for reference.
    Discard,
}

/// Copies `payload` over `streams` loopback TCP connections at once, each sender writing
/// all of it from memory; returns the aggregate bytes per second, timed until every receiver
/// has acknowledged the last byte. `landings` are reused (pre-faulted) between runs.
pub fn raw_tcp_bytes_per_second(
    payload: &Bytes,
    streams: usize,
    landing: Landing,
    landings: &mut [Vec<u8>],
    split: Option<&CoreSplit>,
) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    let started = Instant::now();
    std::thread::scope(|scope| {
        let receivers = scope.spawn(|| {
            // Pinned: the receiving side where the coordinator would run, the sending side
            // where its workers would.
            if let Some(split) = split {
                pin_current_thread(&split.coordinator);
            }
            std::thread::scope(|inner| {
                for buffer in landings.iter_mut().take(streams) {
                    let (mut socket, _) = listener.accept().expect("accept");
                    inner.spawn(move || {
                        if let Some(split) = split {
                            pin_current_thread(&split.coordinator);
                        }
                        let mut filled = 0;
                        loop {
                            let target = match landing {
                                Landing::Memory => &mut buffer[filled..],
                                Landing::Discard => &mut buffer[..256 << 10],
                            };
                            let n = socket.read(target).expect("read");
                            if n == 0 {
                                break;
                            }
                            filled += n;
                        }
                        socket.write_all(b"k").expect("acknowledge");
                    });
                }
            });
        });
        for _ in 0..streams {
            scope.spawn(|| {
                if let Some(split) = split {
                    pin_current_thread(&split.senders);
                }
                let mut socket = TcpStream::connect(address).expect("connect");
                socket.write_all(payload).expect("write");
                socket
                    .shutdown(std::net::Shutdown::Write)
                    .expect("shutdown");
                let mut ack = [0u8; 1];
                socket.read_exact(&mut ack).expect("acknowledgement");
            });
        }
        receivers.join().expect("receivers");
    });
    (payload.len() * streams) as f64 / started.elapsed().as_secs_f64()
}
