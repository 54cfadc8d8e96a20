//! Standard base64 decoding, for the PNG a WebDriver screenshot replies with (a few lines here
//! rather than one more crate in the tests' dependencies).

use anyhow::{Result, bail};

/// Decodes standard base64 (`+`, `/`, `=` padding; line breaks ignored).
pub(super) fn decode(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b'\r' | b'\n' => continue,
            other => bail!("not base64: byte {other:#04x}"),
        };
        buffer = (buffer << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_padded_unpadded_and_binary_text() {
        assert_eq!(decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode("aGVsbG8h").unwrap(), b"hello!");
        assert_eq!(decode("iVBORw0KGgo=").unwrap(), b"\x89PNG\r\n\x1a\n");
        assert_eq!(decode("").unwrap(), b"");
    }

    #[test]
    fn refuses_characters_outside_the_alphabet() {
        let error = decode("aGV*bG8=").unwrap_err().to_string();
        assert!(error.contains("0x2a"), "{error}");
    }
}
