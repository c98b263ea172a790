//! The daemon's request parser, `control::api::parse_request`, on whatever
//! bytes a client may send as one request line.
//!
//! Input: the line's bytes, as they are (the daemon hands the parser what
//! precedes a newline; the parser itself takes any bytes).
//!
//! Properties, besides "no panic":
//! - a refusal is one line (no CR, no LF), at most [`MAX_ERROR`]
//!   characters, and every space-separated word of it is at most
//!   `api::MAX_ECHO` characters and "…" (a client's names are cut);
//! - an accepted request serializes to one line that parses back to the
//!   same request.

#![no_main]

use control::api::{self, parse_request};
use libfuzzer_sys::fuzz_target;

/// The longest refusal: "bad request: " and a message `cut_words` cut to
/// 512 characters and "…".
const MAX_ERROR: usize = 13 + 513;

/// `FUZZ_TRACE=1` prints each outcome.
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some())
}

fuzz_target!(|data: &[u8]| {
    let r = parse_request(data);
    if trace() {
        eprintln!("{r:?}");
    }
    match r {
        Err(e) => check_error(&e),
        Ok(r) => {
            let line = serde_json::to_string(&r).expect("a request serializes");
            assert!(!line.contains(['\n', '\r']), "serialized over several lines: {line:?}");
            let again = parse_request(line.as_bytes()).unwrap_or_else(|e| panic!("{line} refused: {e}"));
            assert_eq!(format!("{again:?}"), format!("{r:?}"), "{line} parsed back differently");
            assert_eq!(serde_json::to_string(&again).unwrap(), line);
        }
    }
});

fn check_error(e: &str) {
    assert!(!e.contains(['\n', '\r']), "refusal of several lines: {e:?}");
    let n = e.chars().count();
    assert!(n <= MAX_ERROR, "refusal of {n} characters: {e:?}");
    for w in e.split(' ') {
        let n = w.chars().count();
        assert!(
            n <= api::MAX_ECHO || (n == api::MAX_ECHO + 1 && w.ends_with('…')),
            "word of {n} characters in a refusal: {w:?}"
        );
    }
}
