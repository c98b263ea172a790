//! `struct virtio_net_hdr` (legacy 10-byte form, Virtio 1.1 §5.1.6), which a
//! TAP opened with `IFF_VNET_HDR` puts in front of every frame.
//!
//! It carries the offload metadata that lets 64 KiB TCP super-frames cross
//! the dataplane whole: `gso_type`/`gso_size` say how the kernel must
//! segment the frame and `csum_start`/`csum_offset` say where the checksum
//! it has not yet computed goes. tapnet forwards the header untouched; this
//! view only validates it so that a malformed header is dropped and counted
//! instead of being handed to another port. The TAP's header is in native
//! byte order (tapnet never sets `TUNSETVNETBE`), which is little-endian on
//! every platform tapnet builds for.

use super::{Field, Result, WireError};

mod field {
    use super::Field;
    pub const FLAGS: usize = 0;
    pub const GSO_TYPE: usize = 1;
    pub const HDR_LEN: Field = 2..4;
    pub const GSO_SIZE: Field = 4..6;
    pub const CSUM_START: Field = 6..8;
    pub const CSUM_OFFSET: Field = 8..10;
}

/// Size of the header tapnet configures with `TUNSETVNETHDRSZ`.
pub const VNET_HDR_LEN: usize = 10;

pub const F_NEEDS_CSUM: u8 = 1;
pub const F_DATA_VALID: u8 = 2;
pub const F_RSC_INFO: u8 = 4;

pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
pub const GSO_ECN: u8 = 0x80;

/// A zero-copy view of a virtio-net header.
#[derive(Debug, Clone)]
pub struct VnetHdr<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VnetHdr<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        VnetHdr { buffer }
    }
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < VNET_HDR_LEN {
            return Err(WireError::Truncated);
        }
        Ok(VnetHdr { buffer })
    }
    #[inline]
    fn u16_at(&self, f: Field) -> u16 {
        let b = &self.buffer.as_ref()[f];
        u16::from_le_bytes([b[0], b[1]])
    }
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }
    #[inline]
    pub fn gso_type(&self) -> u8 {
        self.buffer.as_ref()[field::GSO_TYPE]
    }
    #[inline]
    pub fn hdr_len(&self) -> u16 {
        self.u16_at(field::HDR_LEN)
    }
    #[inline]
    pub fn gso_size(&self) -> u16 {
        self.u16_at(field::GSO_SIZE)
    }
    #[inline]
    pub fn csum_start(&self) -> u16 {
        self.u16_at(field::CSUM_START)
    }
    #[inline]
    pub fn csum_offset(&self) -> u16 {
        self.u16_at(field::CSUM_OFFSET)
    }
    /// True when the frame is a GSO super-frame the kernel will segment.
    #[inline]
    pub fn is_gso(&self) -> bool {
        self.gso_type() & !GSO_ECN != GSO_NONE
    }

    /// Check the header against the length of the frame that follows it,
    /// with the rules the kernel applies in `virtio_net_hdr_to_skb`.
    #[inline]
    pub fn validate(&self, frame_len: usize) -> Result<()> {
        if self.flags() & !(F_NEEDS_CSUM | F_DATA_VALID | F_RSC_INFO) != 0 {
            return Err(WireError::Malformed);
        }
        let gso = self.gso_type() & !GSO_ECN;
        match gso {
            GSO_NONE => {
                if self.gso_type() & GSO_ECN != 0 {
                    return Err(WireError::Malformed);
                }
            }
            GSO_TCPV4 | GSO_TCPV6 | GSO_UDP | GSO_UDP_L4 => {
                if self.gso_size() == 0 || self.hdr_len() as usize > frame_len {
                    return Err(WireError::Malformed);
                }
            }
            _ => return Err(WireError::Malformed),
        }
        if self.flags() & F_NEEDS_CSUM != 0 && self.csum_start() as usize + self.csum_offset() as usize + 2 > frame_len
        {
            return Err(WireError::Malformed);
        }
        Ok(())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VnetHdr<T> {
    fn set_u16(&mut self, f: Field, v: u16) {
        self.buffer.as_mut()[f].copy_from_slice(&v.to_le_bytes())
    }
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v
    }
    pub fn set_gso_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::GSO_TYPE] = v
    }
    pub fn set_hdr_len(&mut self, v: u16) {
        self.set_u16(field::HDR_LEN, v)
    }
    pub fn set_gso_size(&mut self, v: u16) {
        self.set_u16(field::GSO_SIZE, v)
    }
    pub fn set_csum_start(&mut self, v: u16) {
        self.set_u16(field::CSUM_START, v)
    }
    pub fn set_csum_offset(&mut self, v: u16) {
        self.set_u16(field::CSUM_OFFSET, v)
    }
    /// An all-zero header: no offload, checksum already complete.
    pub fn clear(&mut self) {
        self.buffer.as_mut()[..VNET_HDR_LEN].fill(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Header of a TCPv4 TSO super-frame read from a TAP while iperf3 ran:
    // NEEDS_CSUM, GSO_TCPV4, hdr_len 66, gso_size 1448, csum at 34+16.
    const TSO4: [u8; 10] = [0x01, 0x01, 0x42, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00];

    #[test]
    fn deconstruct() {
        let h = VnetHdr::new_checked(&TSO4[..]).unwrap();
        assert_eq!(h.flags(), F_NEEDS_CSUM);
        assert_eq!(h.gso_type(), GSO_TCPV4);
        assert_eq!(h.hdr_len(), 66);
        assert_eq!(h.gso_size(), 1448);
        assert_eq!(h.csum_start(), 34);
        assert_eq!(h.csum_offset(), 16);
        assert!(h.is_gso());
        assert_eq!(h.validate(65226), Ok(()));
    }

    #[test]
    fn construct() {
        let mut buf = [0xa5u8; 10];
        let mut h = VnetHdr::new_unchecked(&mut buf[..]);
        h.clear();
        h.set_flags(F_NEEDS_CSUM);
        h.set_gso_type(GSO_TCPV4);
        h.set_hdr_len(66);
        h.set_gso_size(1448);
        h.set_csum_start(34);
        h.set_csum_offset(16);
        assert_eq!(buf, TSO4);
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(VnetHdr::new_checked(&TSO4[..9]).unwrap_err(), WireError::Truncated);
        let check = |f: &dyn Fn(&mut VnetHdr<&mut [u8]>), len: usize| {
            let mut b = TSO4;
            f(&mut VnetHdr::new_unchecked(&mut b[..]));
            VnetHdr::new_unchecked(&b[..]).validate(len)
        };
        // Checksum field beyond the end of a non-GSO frame.
        let no_gso = |h: &mut VnetHdr<&mut [u8]>| {
            h.set_gso_type(GSO_NONE);
            h.set_gso_size(0);
        };
        assert_eq!(check(&no_gso, 51), Err(WireError::Malformed));
        assert_eq!(check(&no_gso, 52), Ok(()));
        // GSO headers longer than the frame.
        assert_eq!(check(&|_| {}, 65), Err(WireError::Malformed));
        assert_eq!(check(&|_| {}, 66), Ok(()));
        // Unknown GSO type, unknown flag, zero gso_size, ECN without GSO.
        assert_eq!(check(&|h| h.set_gso_type(2), 1500), Err(WireError::Malformed));
        assert_eq!(check(&|h| h.set_flags(0x40), 1500), Err(WireError::Malformed));
        assert_eq!(check(&|h| h.set_gso_size(0), 1500), Err(WireError::Malformed));
        assert_eq!(check(&|h| h.set_gso_type(GSO_ECN), 1500), Err(WireError::Malformed));
        assert_eq!(check(&|h| h.set_hdr_len(2000), 1500), Err(WireError::Malformed));
        // A plain frame with no offload is always fine.
        assert_eq!(check(&|h| h.clear(), 60), Ok(()));
    }
}
