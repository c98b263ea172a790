//! Requests built and replies parsed by offset: [`MsgBuilder`] writes a
//! header, a family header and attributes, padded as the kernel expects;
//! [`Msg`] and [`Attrs`] walk what comes back, stopping at the first
//! truncated piece.

use std::net::Ipv4Addr;

use super::abi::*;

/// A NUL-terminated (or unterminated) UTF-8 attribute value.
pub(super) fn c_string(v: &[u8]) -> Option<String> {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8(v[..end].to_vec()).ok()
}

pub(super) fn ipv4(v: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(v).ok().map(Ipv4Addr::from)
}

pub(super) fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

pub(super) fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

pub(super) fn i32_at(b: &[u8], off: usize) -> Option<i32> {
    u32_at(b, off).map(|v| v as i32)
}

/// Netlink messages and attributes are padded to 4 bytes.
pub(super) const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Builds one netlink request: the header, a family header, then
/// attributes, each padded to 4 bytes; nests write their length last.
pub(super) struct MsgBuilder {
    buf: Vec<u8>,
}

impl MsgBuilder {
    pub(super) fn new(ty: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.resize(NLMSG_HDRLEN, 0);
        buf[nlmsghdr::TYPE..][..2].copy_from_slice(&ty.to_ne_bytes());
        buf[nlmsghdr::FLAGS..][..2].copy_from_slice(&flags.to_ne_bytes());
        Self { buf }
    }

    /// Appends a family header (ifinfomsg, ifaddrmsg, rtmsg), padded.
    pub(super) fn header(mut self, h: &[u8]) -> Self {
        self.buf.extend_from_slice(h);
        self.pad();
        self
    }

    pub(super) fn attr(mut self, ty: u16, value: &[u8]) -> Self {
        let len = u16::try_from(NLA_HDRLEN + value.len()).expect("netlink attributes built here are small");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.pad();
        self
    }

    pub(super) fn attr_u32(self, ty: u16, v: u32) -> Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    /// A NUL-terminated string attribute.
    pub(super) fn attr_str(self, ty: u16, s: &str) -> Self {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(ty, &v)
    }

    /// A nested attribute whose contents `f` appends. `NLA_F_NESTED` is not
    /// set, as by iproute2: the link attributes used here are parsed by the
    /// kernel's non-strict ("deprecated") parser, and `VETH_INFO_PEER` is
    /// not even typed as nested.
    pub(super) fn nest(mut self, ty: u16, f: impl FnOnce(Self) -> Self) -> Self {
        let start = self.buf.len();
        self = self.attr(ty, &[]);
        self = f(self);
        let len = u16::try_from(self.buf.len() - start).expect("netlink attributes built here are small");
        self.buf[start..][..2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    fn pad(&mut self) {
        self.buf.resize(align4(self.buf.len()), 0);
    }

    /// The finished message, with its length and sequence number.
    pub(super) fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).expect("netlink messages built here are small");
        self.buf[nlmsghdr::LEN..][..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[nlmsghdr::SEQ..][..4].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// One received netlink message.
pub(super) struct Msg<'a> {
    pub(super) ty: u16,
    pub(super) flags: u16,
    pub(super) seq: u32,
    pub(super) payload: &'a [u8],
}

impl<'a> Msg<'a> {
    /// The first message of `buf` and what follows it, or `None` if the
    /// header is truncated or its length is out of bounds.
    pub(super) fn parse(buf: &'a [u8]) -> Option<(Self, &'a [u8])> {
        let len = u32_at(buf, nlmsghdr::LEN)? as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let msg = Msg {
            ty: u16_at(buf, nlmsghdr::TYPE)?,
            flags: u16_at(buf, nlmsghdr::FLAGS)?,
            seq: u32_at(buf, nlmsghdr::SEQ)?,
            payload: &buf[NLMSG_HDRLEN..len],
        };
        Some((msg, buf.get(align4(len)..).unwrap_or_default()))
    }
}

/// Iterates over `(type, value)` attributes; stops at the first truncated
/// one. The type has the nested/byte-order flag bits masked off.
pub(super) struct Attrs<'a>(pub(super) &'a [u8]);

impl<'a> Iterator for Attrs<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let len = u16_at(self.0, 0)? as usize;
        let ty = u16_at(self.0, 2)? & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > self.0.len() {
            self.0 = &[];
            return None;
        }
        let value = &self.0[NLA_HDRLEN..len];
        self.0 = self.0.get(align4(len)..).unwrap_or_default();
        Some((ty, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::link::{ifinfomsg, newlink, parse_link};

    fn ne16(v: u16) -> [u8; 2] {
        v.to_ne_bytes()
    }

    #[test]
    fn builder_pads_attributes_and_sets_lengths() {
        let msg = MsgBuilder::new(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK)
            .header(&ifinfomsg(7, 1, 1))
            .attr_str(IFLA_IFNAME, "eth0")
            .attr(IFLA_ADDRESS, &[2, 0, 0, 0, 0, 1])
            .attr_u32(IFLA_MTU, 1400)
            .finish(42);
        let mut want = Vec::new();
        want.extend(64u32.to_ne_bytes());
        want.extend(ne16(RTM_SETLINK));
        want.extend(ne16(NLM_F_REQUEST | NLM_F_ACK));
        want.extend(42u32.to_ne_bytes());
        want.extend(0u32.to_ne_bytes()); // port id
        want.extend([0, 0]); // family, pad
        want.extend(ne16(0)); // ifi_type
        want.extend(7u32.to_ne_bytes());
        want.extend(1u32.to_ne_bytes());
        want.extend(1u32.to_ne_bytes());
        want.extend(ne16(9)); // 4 + "eth0\0"
        want.extend(ne16(IFLA_IFNAME));
        want.extend(*b"eth0\0\0\0\0"); // 3 bytes of padding
        want.extend(ne16(10));
        want.extend(ne16(IFLA_ADDRESS));
        want.extend([2, 0, 0, 0, 0, 1, 0, 0]);
        want.extend(ne16(8));
        want.extend(ne16(IFLA_MTU));
        want.extend(1400u32.to_ne_bytes());
        assert_eq!(msg, want);
    }

    #[test]
    fn builder_nests_veth_peer() {
        let msg = newlink("a").nest(IFLA_LINKINFO, |m| {
            m.attr_str(IFLA_INFO_KIND, "veth").nest(IFLA_INFO_DATA, |m| {
                m.nest(VETH_INFO_PEER, |m| m.header(&ifinfomsg(0, 0, 0)).attr_str(IFLA_IFNAME, "b"))
            })
        });
        let msg = msg.finish(1);
        assert_eq!(u32_at(&msg, 0), Some(msg.len() as u32));
        assert_eq!(msg.len() % 4, 0);
        let mut top = Attrs(&msg[NLMSG_HDRLEN + ifinfomsg::LEN..]);
        assert_eq!(top.next(), Some((IFLA_IFNAME, &b"a\0"[..])));
        let (ty, linkinfo) = top.next().unwrap();
        assert_eq!((ty, linkinfo.len()), (IFLA_LINKINFO, 12 + 4 + 4 + 16 + 8));
        assert_eq!(top.next(), None);
        let mut li = Attrs(linkinfo);
        assert_eq!(li.next(), Some((IFLA_INFO_KIND, &b"veth\0"[..])));
        let (ty, data) = li.next().unwrap();
        assert_eq!(ty, IFLA_INFO_DATA);
        let (ty, peer) = Attrs(data).next().unwrap();
        assert_eq!(ty, VETH_INFO_PEER);
        assert_eq!(&peer[..ifinfomsg::LEN], &[0; 16]);
        // "b\0" makes a 6-byte attribute, padded to 8; a nest's length covers
        // its last child's padding, as iproute2's do.
        let name = [ne16(6).as_slice(), &ne16(IFLA_IFNAME), b"b\0", &[0, 0]].concat();
        assert_eq!(&peer[ifinfomsg::LEN..], name);
    }

    #[test]
    fn parsers_reject_truncated_input() {
        // Attribute claims 8 bytes, only 6 present: iteration stops.
        let attrs = [ne16(8).as_slice(), &ne16(IFLA_MTU), &[1, 2]].concat();
        assert_eq!(Attrs(&attrs).count(), 0);
        // Flag bits (NLA_F_NESTED) are masked off the type.
        let nested = [ne16(4).as_slice(), &ne16(IFLA_LINKINFO | 0x8000)].concat();
        assert_eq!(Attrs(&nested).next(), Some((IFLA_LINKINFO, &[][..])));
        // Message header claims more than the datagram holds.
        let mut m = MsgBuilder::new(NLMSG_DONE, 0).finish(3);
        assert!(Msg::parse(&m).is_some());
        m[0] = 32;
        assert!(Msg::parse(&m).is_none());
        assert!(Msg::parse(&m[..10]).is_none());
        assert!(parse_link(&[0; 8]).is_none());
    }
}
