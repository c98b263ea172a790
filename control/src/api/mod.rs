//! The daemon's API: newline-delimited JSON over a Unix socket.
//!
//! The default socket is [`DEFAULT_SOCKET`] (mode 0600); `--socket` or
//! `TAPNET_SOCKET` choose another, so several daemons can run side by side.
//!
//! # Requests
//!
//! A request is one line: a JSON object, in UTF-8, of at most
//! [`MAX_REQUEST`] bytes before its newline. Its `op` member names the
//! operation; its other members are the operation's fields, and a member
//! the operation does not have is refused. That is the only form: a JSON
//! array, a bare value or anything else is refused (serde would accept an
//! array of the fields in order; the daemon does not). Fields marked `?`
//! may be left out (or be `null`):
//!
//! | `op` | fields |
//! |---|---|
//! | `version` | |
//! | `network_create` | `name`, `subnet` (`"A.B.C.D/N"`), `gateway`?, `mtu`?, `fdb_max`?, `fdb_ageing`? (seconds), `masquerade`? (default true), `internal`? (default false), `icc`? (default true), `max_macs_per_port`? (0: no limit; default the daemon's), `port_security`? (default false); overlays: `driver`? (`bridge`, `vxlan`, `gre`), `vni`?, `key`?, `ip_range`?, `underlay`?, `peers`? (a list), `port`?, `udp_csum`?, `mss_clamp`? |
//! | `network_ls` | |
//! | `network_inspect`, `network_rm` | `name` |
//! | `network_connect` | `network`, `container`, `ip`? |
//! | `network_disconnect` | `network`, `container` |
//! | `container_create` | `name`, `network` (`NET`, `none`, `host` or `container:OTHER`), `ip`?, `mac`?, `publish`? (a list of `-p` values) |
//! | `container_ls` | |
//! | `container_inspect`, `container_rm` | `name` |
//! | `fdb` | `network` |
//! | `fdb_add` | `network`, `mac`, `vtep` |
//! | `fdb_del` | `network`, `mac` |
//! | `overlay_check` | `network` |
//! | `stats`, `conntrack` | |
//! | `shutdown` | `keep`? (default false: remove everything, as SIGTERM; true: leave every container for the next daemon) |
//! | `takeover` | `workers` (the new daemon's): hand everything to a new daemon (`tapnet daemon --takeover`); the answer is followed by descriptors (SCM_RIGHTS) and waits for `ready`, see `daemon/takeover.rs` |
//!
//! For example `{"op":"container_create","name":"web","network":"front"}`.
//!
//! # Replies
//!
//! Each request gets one reply line, in order: `{"ok":true,"data":…}`, the
//! types of [`types`](self) serialized, or `{"ok":false,"error":"…"}` with a
//! one-line message; a refused request changed nothing. Names and other
//! strings a client sent are repeated in messages up to [`MAX_ECHO`]
//! characters. A connection may carry any number of requests; the daemon
//! reads the next one once it has answered the last.
//!
//! The daemon may also write an error line on a connection that has no
//! request pending, and close it: when it has [`MAX_CONNECTIONS`]
//! connections and a new one arrives (the one idle the longest goes), when
//! it runs out of file descriptors, and after [`IDLE_TIMEOUT`] without a
//! request.
//!
//! `types.rs` holds the requests and replies, `client.rs` sends one request
//! and reads its reply; the daemon's side is `daemon/server.rs`.

mod client;
mod types;

pub use client::{call, ClientError};
pub use types::*;

pub use crate::daemon::limits::{IDLE_TIMEOUT, MAX_CONNECTIONS, MAX_REQUEST};

pub const DEFAULT_SOCKET: &str = "/run/tapnet/tapnet.sock";
pub const DEFAULT_STATE_DIR: &str = "/run/tapnet";

/// The most characters of a name (or any other string a client sent) that
/// an error message repeats.
pub const MAX_ECHO: usize = 64;

/// `s` as an error message repeats it: control characters escaped (`\n`,
/// `\u{7f}`: a message stays one line, whatever a client named things),
/// then whole up to [`MAX_ECHO`] characters, else its first [`MAX_ECHO`]
/// characters and "…".
pub fn cut(s: &str) -> String {
    let mut shown = s.chars().flat_map(|c| {
        let plain = !c.is_control();
        std::iter::once(c).filter(move |_| plain).chain(c.escape_default().filter(move |_| !plain))
    });
    let mut out: String = shown.by_ref().take(MAX_ECHO).collect();
    if shown.next().is_some() {
        out.push('…');
    }
    out
}

/// A message that may quote client input anywhere (a JSON parser's, a
/// command-line parser's): every run of more than [`MAX_ECHO`] characters
/// without a space is cut as [`cut`] does, and the whole to 512 characters.
pub fn cut_words(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len().min(600));
    for (i, w) in msg.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&cut(w));
        if out.chars().count() > 512 {
            let end = out.char_indices().nth(512).map_or(out.len(), |(i, _)| i);
            out.truncate(end);
            // One mark where the message is cut, even where a cut word's
            // own mark ends what is kept.
            if !out.ends_with('…') {
                out.push('…');
            }
            break;
        }
    }
    out
}

/// Parse one request line (without its newline), or say in one line why
/// it is not one (see the module documentation for the format).
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    let text = std::str::from_utf8(line)
        .map_err(|e| format!("bad request: not UTF-8 (invalid byte at offset {})", e.valid_up_to()))?;
    let text = text.trim();
    if text.is_empty() {
        return Err("bad request: an empty line; send one JSON object per line, like {\"op\":\"version\"}".into());
    }
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("bad request: {}", cut_words(&e.to_string())))?;
    if !v.is_object() {
        return Err("bad request: a request is a JSON object, like {\"op\":\"network_ls\"}".into());
    }
    serde::Deserialize::deserialize(v)
        .map_err(|e: serde_json::Error| format!("bad request: {}", cut_words(&e.to_string())))
}

/// One reply line, newline included.
pub fn reply_line(r: Result<serde_json::Value, String>) -> Vec<u8> {
    let resp = match r {
        Ok(data) => Response { ok: true, data: Some(data), error: None },
        Err(e) => Response { ok: false, data: None, error: Some(e.replace('\n', " ")) },
    };
    let mut out =
        serde_json::to_vec(&resp).unwrap_or_else(|_| b"{\"ok\":false,\"error\":\"unserializable reply\"}".to_vec());
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(line: &[u8]) -> String {
        parse_request(line).expect_err(&String::from_utf8_lossy(line))
    }

    #[test]
    fn one_form_of_request() {
        assert!(matches!(parse_request(br#"{"op":"network_ls"}"#), Ok(Request::NetworkLs {})));
        let r = parse_request(br#" {"op":"container_create","name":"web","network":"front","ip":null} "#).unwrap();
        assert!(matches!(r, Request::ContainerCreate(ContainerSpec { ref name, .. }) if name == "web"));
        let r = parse_request(br#"{"op":"network_connect","network":"n","container":"c"}"#).unwrap();
        assert!(matches!(r, Request::NetworkConnect { ip: None, .. }));
        // What serde alone would take, and the daemon does not.
        for bad in [
            &br#"["container_rm","web"]"#[..],
            br#"["network_ls"]"#,
            br#"["network_create","x","10.1.0.0/24"]"#,
            br#""network_ls""#,
            b"42",
            b"null",
        ] {
            assert!(refused(bad).starts_with("bad request: a request is a JSON object"), "{bad:?}");
        }
        // Unknown members, in every kind of operation.
        for bad in [
            &br#"{"op":"network_ls","verbose":true}"#[..],
            br#"{"op":"container_rm","name":"a","force":true}"#,
            br#"{"op":"network_create","name":"x","subnet":"10.1.0.0/24","gatway":"10.1.0.9"}"#,
            br#"{"op":"container_create","name":"a","network":"n","pubish":["80:80"]}"#,
        ] {
            assert!(refused(bad).contains("unknown field"), "{}", refused(bad));
        }
        assert!(refused(br#"{"op":"frobnicate"}"#).contains("unknown variant"));
        assert!(refused(b"").contains("empty line"));
        assert!(refused(b"{").starts_with("bad request: "));
    }

    #[test]
    fn port_security_fields_are_optional() {
        // A request from before the fields existed still parses, to the defaults.
        let Ok(Request::NetworkCreate(s)) =
            parse_request(br#"{"op":"network_create","name":"x","subnet":"10.1.0.0/24"}"#)
        else {
            panic!("refused")
        };
        assert_eq!((s.max_macs_per_port, s.port_security), (None, false));
        let line =
            br#"{"op":"network_create","name":"x","subnet":"10.1.0.0/24","max_macs_per_port":0,"port_security":true}"#;
        let Ok(Request::NetworkCreate(s)) = parse_request(line) else { panic!("refused") };
        assert_eq!((s.max_macs_per_port, s.port_security), (Some(0), true));
        assert!(refused(br#"{"op":"network_create","name":"x","subnet":"10.1.0.0/24","max_macs_per_port":-1}"#)
            .starts_with("bad request: "));
    }

    #[test]
    fn non_utf8_and_long_input_get_one_short_line() {
        assert_eq!(
            refused(b"{\"op\":\"network_inspect\",\"name\":\"\xff\xfe\"}"),
            "bad request: not UTF-8 (invalid byte at offset 32)"
        );
        let long = format!(r#"{{"op":"{}"}}"#, "x".repeat(100_000));
        let e = refused(long.as_bytes());
        assert!(e.len() < 400 && !e.contains('\n'), "{e}");
        let line = reply_line(Err("two\nlines".into()));
        assert_eq!(line, b"{\"ok\":false,\"error\":\"two lines\"}\n");
    }

    #[test]
    fn control_characters_in_names_are_escaped() {
        // Found by fuzzing (`api` target): an unknown operation whose name
        // holds a newline (`\n` in the JSON string) was repeated raw, so
        // the refusal spanned two lines.
        let line = br#"{"op":"vernetwori_create\\\\\\\\\\\\\\\\$\\\\\\\\\\\n"}"#;
        let e = refused(line);
        assert!(!e.contains(['\n', '\r']), "{e}");
        assert!(e.starts_with(r"bad request: unknown variant `vernetwori_create\\\\\\\\$\\\\\\n`"), "{e}");
        assert_eq!(cut("a\r\nb\u{85}\u{7f}"), r"a\r\nb\u{85}\u{7f}");
        // Escapes count as what they show.
        assert_eq!(cut(&"\n".repeat(40)), format!("{}…", r"\n".repeat(32)));
    }

    #[test]
    fn a_message_cut_after_a_cut_word_has_one_mark() {
        // Found by fuzzing (`api` target): the 512th character of the
        // message was the "…" of a cut word, and the cut of the whole
        // message added a second one.
        const LINE: &[u8] = br#"{"op":"  rrrrrr  rrrrrrrrr\rr\rrrrrrrrrr  rrrrrrrrrrrrrr\\Arrrrrr  rrrrrrrrr\\rrrr\rrrrrr5\rrrrrrrrv\rrrrrrr\rr\\rrrrrrv\rrrrrr rrrrrr\\rr  rrrrrrrrr\\Arrrrrr  rrrrrrrrrrrrrr\\rrnamerrrrv\rrrrrrrrrrr\\\rrrrrr\rr\rrrrrrrrv\rrrrr  rrrrrrrrr\\rr  rrrrrrrrr\\Arrrrrr  rrrrrrrrr\\rrrr\rrrrrr\\rrrrrrv\rrrrrrr\rr\\rrrrrrv\rrrrrrrrv\rrrrrr  rrrrrrrrr\rr  rr7rrrrrrr\\Arrrrrr  rrrrrrr\\rrrr\rrrrrr\\rrrrrv\rrrrrr\\rrrrv\rrrrrrr\rr\\rrrrrrv\rrrrrr  rrr!rrrrrr\\r  -rrrr\rrrrrrv\rrrr\rrrr\\rrrrrr\rr\rrrrrrrrrrrv\rr?\rrrrrr\\\rack"}"#;
        let e = refused(LINE);
        assert!(e.ends_with('…') && !e.contains("……") && e.chars().count() <= 13 + 513, "{e}");
        let words = vec!["a".repeat(64); 6].join(" ") + " " + &"a".repeat(56);
        let m = cut_words(&format!("{words} {} c", "b".repeat(100)));
        assert_eq!(m, format!("{words} {}…", "b".repeat(64)));
    }

    #[test]
    fn long_input_is_cut() {
        assert_eq!(cut("web"), "web");
        let x64 = "x".repeat(64);
        assert_eq!(cut(&x64), x64);
        assert_eq!(cut(&"x".repeat(100_000)), format!("{x64}…"));
        // Characters, not bytes: never splits one.
        let e = "é".repeat(70);
        assert_eq!(cut(&e), format!("{}…", "é".repeat(64)));
        let m = cut_words(&format!("unknown variant `{}`, expected one of `a`", "y".repeat(5000)));
        assert_eq!(m, format!("unknown variant {}… expected one of `a`", &format!("`{}", "y".repeat(63))));
        let spaced = "ab ".repeat(10_000);
        let m = cut_words(&spaced);
        assert!(m.chars().count() <= 513 && m.ends_with('…'), "{}", m.len());
    }
}
