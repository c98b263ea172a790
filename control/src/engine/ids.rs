//! Identifiers: dense id pools for networks and ports, Docker-like short
//! hex ids, and the rules for network and container names.

use super::{Engine, EngineError, Result};

/// A small allocator of dense ids.
#[derive(Debug)]
pub(super) struct IdPool {
    free: Vec<u16>,
}

impl IdPool {
    pub(super) fn new(n: usize) -> IdPool {
        IdPool { free: (0..n as u16).rev().collect() }
    }
    pub(super) fn alloc(&mut self, what: &'static str) -> Result<u16> {
        self.free.pop().ok_or(EngineError::IdsExhausted(what))
    }
    pub(super) fn release(&mut self, id: u16) {
        self.free.push(id)
    }
    /// Take `id` out of the pool, if it is free there.
    pub(super) fn take(&mut self, id: u16) -> bool {
        match self.free.iter().position(|&x| x == id) {
            Some(i) => {
                self.free.swap_remove(i);
                true
            }
            None => false,
        }
    }
}

pub(super) fn check_name(what: &'static str, name: &str, max: usize) -> Result<()> {
    let bad = |why| Err(EngineError::BadName { what, name: crate::api::cut(name), why });
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.len() > max {
        return bad(if max == 15 {
            "at most 15 bytes (it names a network namespace and interfaces)"
        } else {
            "at most 64 bytes"
        });
    }
    let mut bytes = name.bytes();
    if !bytes.next().is_some_and(|b| b.is_ascii_alphanumeric()) {
        return bad("must start with a letter or digit");
    }
    if !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-') {
        return bad("only letters, digits, '_', '.' and '-' are allowed");
    }
    Ok(())
}

impl Engine {
    pub(super) fn new_id(&mut self, name: &str) -> String {
        // A stable-looking 12-hex-digit id, like Docker's short ids.
        self.seq += 1;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ std::process::id() as u64;
        for b in name.bytes().chain(self.seq.to_le_bytes()) {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        format!("{:012x}", h & 0xffff_ffff_ffff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_ids_are_not_given_out() {
        let mut p = IdPool::new(4);
        assert!(p.take(2));
        assert!(!p.take(2));
        let mut got: Vec<u16> = (0..3).map(|_| p.alloc("x").unwrap()).collect();
        got.sort();
        assert_eq!(got, vec![0, 1, 3]);
        assert!(p.alloc("x").is_err());
    }

    #[test]
    fn names() {
        assert!(check_name("container", "web-1", 15).is_ok());
        assert!(check_name("container", "abcdefghijklmnop", 15).is_err());
        assert!(check_name("container", "-x", 15).is_err());
        assert!(check_name("container", "a/b", 15).is_err());
        assert!(check_name("container", "", 15).is_err());
        assert!(check_name("network", "a b", 64).is_err());
    }
}
