//! Receive buffers for uploads that cannot be folded as they arrive (every upload of a round
//! but the first, which streams straight into the accumulator).
//!
//! At most `limits.staged_uploads` are in use at once, whatever the number of workers: an
//! upload waits for a slot with its bytes in the kernel's socket buffers. The buffers are
//! allocated, and their pages touched, as soon as the model is known, so the coordinator's
//! memory is the same with 1 worker as with 1000 and a container memory limit that is too
//! small fails at start-up rather than in the round a second worker joins.

use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The bounded set of receive buffers.
pub struct StagingPool {
    slots: Arc<Semaphore>,
    free: Mutex<Vec<Vec<u8>>>,
    /// Capacity of every pooled buffer (0 until [`StagingPool::reserve`]).
    buffer_bytes: Mutex<usize>,
    count: usize,
}

impl StagingPool {
    /// A pool of `count` slots; buffers come with [`StagingPool::reserve`].
    pub fn new(count: usize) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(count)),
            free: Mutex::new(Vec::new()),
            buffer_bytes: Mutex::new(0),
            count,
        })
    }

    /// Allocates every buffer with room for `bytes` and touches its pages.
    pub fn reserve(&self, bytes: usize) {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        *self
            .buffer_bytes
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = bytes;
        free.clear();
        for _ in 0..self.count {
            // calloc'd pages stay untouched until written: write one byte a page.
            let mut buffer = vec![0u8; bytes];
            for page in buffer.chunks_mut(4096) {
                page[0] = 1;
            }
            buffer.clear();
            free.push(buffer);
        }
    }

    /// Waits for a free slot and returns its buffer (empty, with the reserved capacity).
    pub async fn acquire(self: &Arc<Self>) -> StagingBuffer {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the staging semaphore is never closed");
        let bytes = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default();
        StagingBuffer {
            bytes,
            home: Some((self.clone(), permit)),
        }
    }

    fn give_back(&self, mut bytes: Vec<u8>) {
        let reserved = *self
            .buffer_bytes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if bytes.capacity() == reserved && reserved > 0 {
            bytes.clear();
            self.free
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(bytes);
        }
    }
}

/// The data section of an upload being received: a pooled buffer holding a slot (returned on
/// drop), or a buffer of its own (initial parameters, read once).
pub struct StagingBuffer {
    bytes: Vec<u8>,
    home: Option<(Arc<StagingPool>, OwnedSemaphorePermit)>,
}

impl StagingBuffer {
    /// A buffer outside any pool.
    pub fn owned() -> Self {
        Self {
            bytes: Vec::new(),
            home: None,
        }
    }

    /// Makes room for `bytes` in total (a no-op for a pooled buffer of the model's size); an
    /// error instead of an abort when the memory cannot be had.
    pub fn reserve_total(&mut self, bytes: usize) -> Result<(), std::collections::TryReserveError> {
        self.bytes
            .try_reserve_exact(bytes.saturating_sub(self.bytes.len()))
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
    }
}

impl Deref for StagingBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl std::fmt::Debug for StagingBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StagingBuffer({} bytes, pooled: {})",
            self.bytes.len(),
            self.home.is_some()
        )
    }
}

impl Drop for StagingBuffer {
    fn drop(&mut self) {
        if let Some((pool, _permit)) = self.home.take() {
            pool.give_back(std::mem::take(&mut self.bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buffers_are_reused_and_slots_bounded() {
        let pool = StagingPool::new(2);
        pool.reserve(1 << 16);
        let mut a = pool.acquire().await;
        let b = pool.acquire().await;
        assert_eq!(a.bytes.capacity(), 1 << 16);
        let address = a.bytes.as_ptr();
        a.extend(&[7; 100]);
        assert_eq!(&a[..2], &[7, 7]);
        // A third upload waits until one of the two is done.
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), pool.acquire());
        assert!(third.await.is_err(), "only two slots");
        drop(a);
        let c = pool.acquire().await;
        assert!(c.is_empty(), "a returned buffer comes back empty");
        assert_eq!(c.bytes.as_ptr(), address, "and is the same allocation");
        drop((b, c));
    }
}
