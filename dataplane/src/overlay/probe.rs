//! Overlay probes (`tapnet overlay check`): inner frames a prober sends
//! through the tunnel to a peer's dataplane, which sends each request back
//! the way it came as a reply of the same size. A reply shows that
//! encapsulated frames get through both ways, its size which inner frames
//! still fit the path (the path MTU), and its checksum and pattern that the
//! bytes arrived intact.
//!
//! A probe is an Ethernet frame no container sends: between two fixed,
//! locally administered MACs, with the IEEE local experimental EtherType
//! 0x88B5, so a peer that is not tapnet (a kernel vxlan device) simply
//! drops it.
//!
//! ```text
//!  0..6   dst MAC  02:74:6e:70:72:62     6..12  src MAC (the same)
//! 12..14  0x88b5                        14..22  "TNPROBE1"
//! 22      kind: 1 request, 2 reply      23      0
//! 24..28  prober's id                   28..32  sequence number
//! 32..34  frame length                  34..36  checksum (RFC 1071) of 14..len
//! 36..    pattern: (i + seq) * 7 mod 256
//! ```

use crate::wire::checksum;

/// The EtherType of probes: IEEE 802 Local Experimental EtherType 1.
pub const ETHERTYPE: u16 = 0x88b5;
/// Source and destination MAC of probes.
pub const MAC: [u8; 6] = [0x02, 0x74, 0x6e, 0x70, 0x72, 0x62];
const MAGIC: [u8; 8] = *b"TNPROBE1";
/// The shortest probe: the header above with no pattern.
pub const MIN_LEN: usize = 36;

/// Request or reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request = 1,
    Reply = 2,
}

/// A parsed probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub kind: Kind,
    pub id: u32,
    pub seq: u32,
    pub len: usize,
    /// Checksum and pattern are as sent.
    pub intact: bool,
}

#[inline]
fn pattern(i: usize, seq: u32) -> u8 {
    ((i as u32).wrapping_add(seq).wrapping_mul(7)) as u8
}

/// Write a probe of `len` bytes (at least [`MIN_LEN`], at most
/// `out.len()` and 65535) into `out`; returns its length, or 0 if it does
/// not fit.
pub fn build(out: &mut [u8], kind: Kind, id: u32, seq: u32, len: usize) -> usize {
    if len < MIN_LEN || len > out.len() || len > usize::from(u16::MAX) {
        return 0;
    }
    let f = &mut out[..len];
    f[0..6].copy_from_slice(&MAC);
    f[6..12].copy_from_slice(&MAC);
    f[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    f[14..22].copy_from_slice(&MAGIC);
    f[22] = kind as u8;
    f[23] = 0;
    f[24..28].copy_from_slice(&id.to_be_bytes());
    f[28..32].copy_from_slice(&seq.to_be_bytes());
    f[32..34].copy_from_slice(&(len as u16).to_be_bytes());
    for (i, b) in f[MIN_LEN..].iter_mut().enumerate() {
        *b = pattern(i, seq);
    }
    f[34..36].fill(0);
    let c = !checksum::data(&f[14..]);
    f[34..36].copy_from_slice(&c.to_be_bytes());
    len
}

/// Is `frame` (an inner Ethernet frame) a probe?
#[inline]
pub fn is_probe(frame: &[u8]) -> bool {
    frame.len() >= MIN_LEN && frame[12..14] == ETHERTYPE.to_be_bytes() && frame[14..22] == MAGIC
}

/// Parse a probe; `None` if `frame` is not one.
pub fn parse(frame: &[u8]) -> Option<Probe> {
    if !is_probe(frame) {
        return None;
    }
    let kind = match frame[22] {
        1 => Kind::Request,
        2 => Kind::Reply,
        _ => return None,
    };
    let id = u32::from_be_bytes([frame[24], frame[25], frame[26], frame[27]]);
    let seq = u32::from_be_bytes([frame[28], frame[29], frame[30], frame[31]]);
    let len = usize::from(u16::from_be_bytes([frame[32], frame[33]]));
    let intact = len == frame.len()
        && checksum::data(&frame[14..]) == 0xffff
        && frame[MIN_LEN..].iter().enumerate().all(|(i, &b)| b == pattern(i, seq));
    Some(Probe { kind, id, seq, len, intact })
}

/// Turn a probe request into its reply, in place (the kind byte changes,
/// so does the checksum). False, and nothing changes, for anything else.
pub fn answer(frame: &mut [u8]) -> bool {
    if !is_probe(frame) || frame[22] != Kind::Request as u8 {
        return false;
    }
    frame[22] = Kind::Reply as u8;
    let c = u16::from_be_bytes([frame[34], frame[35]]);
    // The kind byte is the high byte of the 16-bit word at 22 (RFC 1624).
    let c = checksum::update_u16(c, u16::from(Kind::Request as u8) << 8, u16::from(Kind::Reply as u8) << 8);
    frame[34..36].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_parse_answer() {
        let mut b = [0xa5u8; 1600];
        assert_eq!(build(&mut b, Kind::Request, 7, 3, 1464), 1464);
        let p = parse(&b[..1464]).unwrap();
        assert_eq!(p, Probe { kind: Kind::Request, id: 7, seq: 3, len: 1464, intact: true });
        assert!(answer(&mut b[..1464]));
        let r = parse(&b[..1464]).unwrap();
        assert_eq!((r.kind, r.intact), (Kind::Reply, true));
        // A reply is not answered again.
        assert!(!answer(&mut b[..1464]));
        assert_eq!(build(&mut b, Kind::Request, 1, 1, MIN_LEN), MIN_LEN);
        assert!(parse(&b[..MIN_LEN]).unwrap().intact);
        assert_eq!(build(&mut b, Kind::Request, 1, 1, MIN_LEN - 1), 0);
    }

    #[test]
    fn damage_is_seen() {
        let mut b = [0u8; 200];
        build(&mut b, Kind::Request, 9, 0, 200);
        for at in [14, 40, 199] {
            let mut d = b;
            d[at] ^= 0x10;
            let p = parse(&d);
            assert!(p.is_none() || !p.unwrap().intact, "damage at {at} unseen");
        }
        // Cut short: the length no longer matches.
        assert!(!parse(&b[..150]).unwrap().intact);
        assert!(parse(&b[..30]).is_none());
        let mut arp = [0u8; 60];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(!is_probe(&arp) && !answer(&mut arp));
    }
}
