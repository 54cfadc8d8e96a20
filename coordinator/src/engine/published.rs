//! The parameters a round published: θ encoded once in the download dtype, shared by every
//! response, and its buffer handed back to the next round's encoding once no response holds
//! it. A `torch.save` copy is made on the first request that asks for one and shared too.

use std::sync::Arc;

use bytes::Bytes;
use diloco_contract::wire::torch_save;
use tokio::sync::OnceCell;

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
    /// The same tensors as a `torch.save` archive, once a response has asked for it.
    torch_save: OnceCell<Bytes>,
}

impl Published {
    /// θ after `round` steps, encoded in `buffer`.
    pub(super) fn new(round: u64, buffer: Vec<u8>) -> Self {
        let buffer = Arc::new(buffer);
        Self {
            round,
            encoded: Bytes::from_owner(SharedBuffer(buffer.clone())),
            buffer,
            torch_save: OnceCell::new(),
        }
    }

    /// θ as a `torch.save` archive (a copy of the bytes, no conversion of values): written off
    /// the async threads by the first response that asks, then shared by all of the round's.
    pub async fn torch_save(&self) -> Result<Bytes, String> {
        self.torch_save
            .get_or_try_init(|| async {
                let encoded = self.encoded.clone();
                tokio::task::spawn_blocking(move || torch_save::from_safetensors(&encoded))
                    .await
                    .map_err(|e| e.to_string())?
                    .map(Bytes::from)
            })
            .await
            .cloned()
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

    /// The `torch.save` copy is written once per round: every response shares its bytes.
    #[tokio::test]
    async fn the_torch_save_copy_is_written_once_and_shared() {
        let layout =
            diloco_contract::wire::layout::ModelLayout::new(vec![("w".into(), vec![2, 3])])
                .unwrap();
        let blob = diloco_contract::wire::safetensors::encode(
            &layout,
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            diloco_contract::wire::dtype::WireDtype::Fp32,
            &Default::default(),
        );
        let published = Published::new(1, blob.clone());
        let (first, second) = tokio::join!(published.torch_save(), published.torch_save());
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!(first.as_ptr(), second.as_ptr(), "one copy, shared");
        assert_eq!(first, torch_save::from_safetensors(&blob).unwrap());
    }
}
