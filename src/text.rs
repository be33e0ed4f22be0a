//! Text helpers: bounds on text that goes from a tenant or a proxy into a message (a condition, an Event, a log
//! line), and the digest that names things derived from text.

use sha2::{Digest, Sha256};

/// The hex SHA-256 of `text`: a stable, fixed-length name for it (LiteLLM's id of a key, an object name
/// derived from a longer one, a fingerprint of a configuration).
pub(crate) fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// At most `max` characters of `text`, with an ellipsis when it was longer.
pub(crate) fn bounded_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// At most `max` bytes of `text`, the ellipsis that marks a cut included, cut on a character boundary: for
/// fields the API server limits in bytes.
pub(crate) fn bounded_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_hold_and_cut_on_character_boundaries() {
        let long = "é".repeat(1000);
        let cut = bounded_bytes(&long, 1024);
        assert!(cut.len() <= 1024 && cut.ends_with('…'), "{}", cut.len());
        assert_eq!(bounded_bytes("short", 1024), "short");
        assert_eq!(bounded_chars(&long, 3), "ééé…");
        assert_eq!(bounded_chars("short", 5), "short");
    }
}
