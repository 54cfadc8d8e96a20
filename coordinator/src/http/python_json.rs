//! JSON as Python's `json.dumps` writes it by default: forgather's workers send `NaN`,
//! `Infinity` and `-Infinity` as bare words (a loss that diverged, an MFU not yet measured),
//! which strict JSON refuses. forgather's server reads them and then drops non-finite
//! statistics (reference §2.6, §6 item 59); refusing the whole heartbeat instead would get a
//! healthy worker evicted. So a heartbeat body has those words turned into `null` first, which
//! the statistics whitelist drops like any non-number.

use std::borrow::Cow;

/// The words Python writes for non-finite floats, longest first (so `-Infinity` is not read as
/// `-` then `Infinity`).
const NON_FINITE: [&[u8]; 3] = [b"-Infinity", b"Infinity", b"NaN"];

/// `body` with every `NaN`, `Infinity` and `-Infinity` outside a string replaced by `null`;
/// borrowed unchanged when there is none. Everything else, malformed input included, is left
/// for the JSON parser to judge.
pub fn non_finite_as_null(body: &[u8]) -> Cow<'_, [u8]> {
    if !NON_FINITE
        .iter()
        .any(|word| contains(body, &word[word.len() - 3..]))
    {
        return Cow::Borrowed(body);
    }
    let mut out = Vec::with_capacity(body.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    while let Some(&byte) = body.get(i) {
        if in_string {
            out.push(byte);
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if byte == b'"' {
            in_string = true;
            out.push(byte);
            i += 1;
            continue;
        }
        let rest = body.get(i..).unwrap_or_default();
        if let Some(word) = NON_FINITE.iter().find(|word| rest.starts_with(word)) {
            out.extend_from_slice(b"null");
            i += word.len();
        } else {
            out.push(byte);
            i += 1;
        }
    }
    Cow::Owned(out)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn converted(text: &str) -> String {
        String::from_utf8(non_finite_as_null(text.as_bytes()).into_owned()).unwrap()
    }

    /// Bare non-finite words become null; the same words inside strings (keys, values,
    /// escaped quotes) stay as they are.
    #[test]
    fn python_non_finite_floats_become_null_outside_strings() {
        assert_eq!(
            converted(r#"{"loss": NaN, "mfu": Infinity, "x": -Infinity, "y": 1.5}"#),
            r#"{"loss": null, "mfu": null, "x": null, "y": 1.5}"#
        );
        assert_eq!(
            converted(r#"{"NaN": "Infinity \" NaN", "v": [NaN]}"#),
            r#"{"NaN": "Infinity \" NaN", "v": [null]}"#
        );
        let plain = br#"{"worker_id": "w0"}"#;
        assert!(matches!(non_finite_as_null(plain), Cow::Borrowed(_)));
    }
}
