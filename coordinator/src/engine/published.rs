//! The parameters a round published: θ encoded once in the download dtype, shared by every
//! response, and its buffer handed back to the next round's encoding once no response holds
//! it.

use std::sync::Arc;

use bytes::Bytes;

/// θ after a round, encoded once in the download dtype and shared by every response.
pub struct Published {
    /// Outer steps completed.
    pub round: u64,
    /// safetensors bytes.
    pub encoded: Bytes,
    /// The allocation behind `encoded`: once no response holds it any more, the next round
    /// encodes into it again instead of into fresh memory (faulting in a new buffer of the
    /// model's size costs more than the encoding itself).
    buffer: Arc<Vec<u8>>,
}

impl Published {
    /// θ after `round` steps, encoded in `buffer`.
    pub(super) fn new(round: u64, buffer: Vec<u8>) -> Self {
        let buffer = Arc::new(buffer);
        Self {
            round,
            encoded: Bytes::from_owner(SharedBuffer(buffer.clone())),
            buffer,
        }
    }

    /// The buffer back, if nothing else refers to this encoding any more.
    pub(super) fn into_buffer(self) -> Option<Vec<u8>> {
        drop(self.encoded);
        Arc::try_unwrap(self.buffer).ok()
    }
}

impl std::fmt::Debug for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Published")
            .field("round", &self.round)
            .field("bytes", &self.encoded.len())
            .finish()
    }
}

/// Lets `Bytes` share a buffer that [`Published`] can take back later.
struct SharedBuffer(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next round reuses an encoding's buffer only once no response holds it.
    #[test]
    fn a_published_buffer_comes_back_only_when_no_response_holds_it() {
        let published = Published::new(3, vec![7u8; 4096]);
        let streaming = published.encoded.clone();
        assert!(
            published.into_buffer().is_none(),
            "a response still streams it"
        );
        assert_eq!(
            &streaming[..],
            &[7u8; 4096][..],
            "and its bytes stay intact"
        );

        let published = Published::new(4, vec![1u8; 16]);
        drop(published.encoded.clone());
        assert_eq!(published.into_buffer(), Some(vec![1u8; 16]));
    }
}
