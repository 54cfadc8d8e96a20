//! Slowing down token guessing: failed authentications are counted per source in fixed
//! windows, and a source over its allowance is refused (429) **before** any token it presents
//! is compared, so guessing cannot go on at full speed.
//!
//! - A source is an IPv4 address, or an IPv6 /64: one host usually holds a whole /64 and
//!   could otherwise take a fresh address for every guess.
//! - Each listener (control plane, bulk plane) has a limiter of its own.
//! - At most [`LIMITER_CAPACITY`] sources are tracked; a new one then evicts the least recently
//!   seen, so a flood of fresh addresses cannot wipe out the blocks of active guessers.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Sources tracked at most.
pub const LIMITER_CAPACITY: usize = 10_000;

/// What failures are counted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// One IPv4 address (IPv4-mapped IPv6 addresses included).
    V4(Ipv4Addr),
    /// The first 64 bits of an IPv6 address.
    V6Prefix(u64),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Source::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(v4),
                None => Source::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

struct Window {
    start: Instant,
    failures: u32,
    /// Position in the recency order (larger: more recent).
    used: u64,
}

#[derive(Default)]
struct Table {
    windows: HashMap<Source, Window>,
    /// `used` → source, oldest first.
    recency: BTreeMap<u64, Source>,
    clock: u64,
}

impl Table {
    /// Marks `source` as just seen.
    fn touch(&mut self, source: Source) {
        self.clock += 1;
        let clock = self.clock;
        if let Some(window) = self.windows.get_mut(&source) {
            self.recency.remove(&window.used);
            window.used = clock;
            self.recency.insert(clock, source);
        }
    }
}

/// Failed authentications per source in fixed windows.
pub struct FailureLimiter {
    allowed: u32,
    window: Duration,
    capacity: usize,
    table: Mutex<Table>,
}

impl FailureLimiter {
    /// `allowed` failures per `window` and source.
    pub fn new(allowed: u32, window: Duration) -> Self {
        Self::with_capacity(allowed, window, LIMITER_CAPACITY)
    }

    fn with_capacity(allowed: u32, window: Duration, capacity: usize) -> Self {
        Self {
            allowed,
            window,
            capacity: capacity.max(1),
            table: Mutex::new(Table::default()),
        }
    }

    /// Seconds until `ip` may try again, if its source is over its allowance.
    pub fn blocked_for(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let source = Source::from(ip);
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let window = table.windows.get(&source)?;
        let end = window.start + self.window;
        let blocked =
            (window.failures >= self.allowed && now < end).then(|| (end - now).as_secs().max(1));
        // A source that keeps knocking stays recent, so eviction never lifts its block.
        table.touch(source);
        blocked
    }

    /// Records a failure from `ip`.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        let source = Source::from(ip);
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if !table.windows.contains_key(&source) {
            while table.windows.len() >= self.capacity {
                let Some((_, oldest)) = table.recency.pop_first() else {
                    break;
                };
                table.windows.remove(&oldest);
            }
            table.windows.insert(
                source,
                Window {
                    start: now,
                    failures: 0,
                    used: 0,
                },
            );
        }
        table.touch(source);
        if let Some(window) = table.windows.get_mut(&source) {
            if now >= window.start + self.window {
                window.start = now;
                window.failures = 0;
            }
            window.failures = window.failures.saturating_add(1);
        }
    }

    /// Sources tracked now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .windows
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_address_over_its_failure_allowance_waits_for_the_window() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(10));
        let (a, b) = (ip("127.0.0.2"), ip("::1"));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.blocked_for(a, t0), None);
            limiter.record_failure(a, t0);
        }
        assert_eq!(limiter.blocked_for(a, t0), Some(10));
        assert_eq!(limiter.blocked_for(b, t0), None, "per address");
        assert_eq!(
            limiter.blocked_for(ip("127.0.0.3"), t0),
            None,
            "IPv4: per address"
        );
        let later = t0 + Duration::from_secs(10);
        assert_eq!(limiter.blocked_for(a, later), None, "a new window");
        limiter.record_failure(a, later);
        assert_eq!(limiter.blocked_for(a, later), None);
    }

    /// Every address of an IPv6 /64 counts against one allowance; the next /64 has its own.
    #[test]
    fn ipv6_addresses_are_counted_by_their_64_bit_prefix() {
        let limiter = FailureLimiter::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        limiter.record_failure(ip("2001:db8:1:2::1"), t0);
        limiter.record_failure(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), t0);
        assert_eq!(
            limiter.blocked_for(ip("2001:db8:1:2:dead::beef"), t0),
            Some(60)
        );
        assert_eq!(limiter.blocked_for(ip("2001:db8:1:3::1"), t0), None);
        assert_eq!(limiter.tracked(), 1);
        // An IPv4-mapped address is its IPv4 address.
        limiter.record_failure(ip("::ffff:192.0.2.7"), t0);
        limiter.record_failure(ip("192.0.2.7"), t0);
        assert_eq!(limiter.blocked_for(ip("192.0.2.7"), t0), Some(60));
    }

    /// At capacity the least recently seen source goes, not the whole table: a guesser that
    /// keeps knocking stays blocked however many fresh addresses fail meanwhile.
    #[test]
    fn at_capacity_the_least_recently_seen_source_is_evicted() {
        let limiter = FailureLimiter::with_capacity(1, Duration::from_secs(60), 3);
        let t0 = Instant::now();
        let guesser = ip("10.0.0.1");
        limiter.record_failure(guesser, t0);
        limiter.record_failure(ip("10.0.0.2"), t0);
        limiter.record_failure(ip("10.0.0.3"), t0);
        assert_eq!(limiter.blocked_for(guesser, t0), Some(60));
        // Full: each newcomer evicts the least recently seen one, never the guesser, who
        // is seen again between them.
        for last in 4..20 {
            limiter.record_failure(ip(&format!("10.0.0.{last}")), t0);
            assert_eq!(limiter.tracked(), 3);
            assert_eq!(
                limiter.blocked_for(guesser, t0),
                Some(60),
                "after 10.0.0.{last}"
            );
        }
        assert_eq!(limiter.blocked_for(ip("10.0.0.2"), t0), None, "evicted");
        assert_eq!(
            limiter.blocked_for(ip("10.0.0.19"), t0),
            Some(60),
            "the newest stays"
        );
    }
}
