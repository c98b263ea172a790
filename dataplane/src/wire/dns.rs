//! DNS messages (RFC 1035 §4.1): the header, names with compression
//! pointers (§4.1.4), the question section (§4.1.2), resource records
//! (§4.1.3), the EDNS(0) OPT pseudo-record (RFC 6891 §6.1.2), and
//! [`Response`], which turns a query into its response in place.
//!
//! ```text
//!                                 1  1  1  1  1  1
//!   0  1  2  3  4  5  6  7  8  9  0  1  2  3  4  5
//! |                      ID                       |
//! |QR|   Opcode  |AA|TC|RD|RA| Z|AD|CD|   RCODE   |
//! |                    QDCOUNT                    |
//! |                    ANCOUNT                    |
//! |                    NSCOUNT                    |
//! |                    ARCOUNT                    |
//! ```
//!
//! Names are walked on the message itself, never copied to the heap. The
//! walk enforces RFC 1035 §2.3.4 (a name is at most 255 bytes in wire form,
//! length bytes and root included; a label's length byte has room for 63 at
//! most) and makes compression pointers safe:
//!
//! - a pointer must land after the header and strictly before the start of
//!   the run of labels it ends, so every hop goes backwards and no chain
//!   can loop; a compressor only ever points at names it wrote earlier, so
//!   real messages always pass;
//! - at most [`MAX_POINTER_HOPS`] pointers are followed per name;
//! - label types 01 and 10 (RFC 6891 §5 deprecated the extended label types)
//!   are malformed.
//!
//! Every walk is bounded by the message length, so parsing any byte string
//! costs at most a few hundred steps and never panics.
//!
//! Not supported: more than one question when building a response (RFC
//! 9619 allows one), EDNS options (parsed as opaque RDATA and never
//! echoed), DNSSEC, TSIG, and writing compressed names other than the
//! pointer to the question.
//!
//! About 780 lines of code, the rest tests on captured queries: one file for
//! the DNS message format (header, names with compression, questions,
//! records, EDNS OPT) as smoltcp keeps one file per protocol.

use super::{be16, be32, Field, WireError};
use std::net::Ipv4Addr;

/// Why part of a DNS message could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The message ends inside a header, name, question or record.
    #[error("message truncated")]
    Truncated,
    /// A label length byte starts with 01 or 10 (RFC 1035 §4.1.4, RFC 6891 §5).
    #[error("unsupported label type")]
    BadLabelType,
    /// The name is longer than 255 bytes in wire form (RFC 1035 §2.3.4).
    #[error("name longer than 255 bytes")]
    NameTooLong,
    /// A compression pointer goes into the header, forwards, or back into
    /// the run of labels it ends (a loop).
    #[error("compression pointer into the header, forwards or into a loop")]
    BadPointer,
    /// More than `MAX_POINTER_HOPS` compression pointers in one name.
    #[error("too many compression pointers in one name")]
    TooManyPointers,
    /// An OPT record outside the additional section, not owned by the root,
    /// or more than one of them (RFC 6891 §6.1.1).
    #[error("misplaced, misnamed or duplicate OPT record")]
    BadOpt,
}

impl From<DnsError> for WireError {
    fn from(e: DnsError) -> WireError {
        match e {
            DnsError::Truncated => WireError::Truncated,
            _ => WireError::Malformed,
        }
    }
}

pub type Result<T> = core::result::Result<T, DnsError>;

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident: $repr:ty { $($(#[$vdoc:meta])* $variant:ident = $value:expr,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
            Unknown($repr),
        }
        impl From<$repr> for $name {
            fn from(v: $repr) -> Self {
                match v {
                    $($value => $name::$variant,)*
                    other => $name::Unknown(other),
                }
            }
        }
        impl From<$name> for $repr {
            fn from(v: $name) -> $repr {
                match v {
                    $($name::$variant => $value,)*
                    $name::Unknown(other) => other,
                }
            }
        }
    };
}

wire_enum! {
    /// OPCODE (RFC 1035 §4.1.1, IANA "DNS OpCodes").
    Opcode: u8 {
        Query = 0,
        /// Inverse query, obsoleted by RFC 3425.
        IQuery = 1,
        Status = 2,
        /// RFC 1996.
        Notify = 4,
        /// RFC 2136.
        Update = 5,
        /// DNS Stateful Operations, RFC 8490.
        Dso = 6,
    }
}

wire_enum! {
    /// RCODE (RFC 1035 §4.1.1, RFC 6891 §6.1.3). Values above 15 are
    /// extended: their upper 8 bits travel in the OPT record.
    Rcode: u16 {
        NoError = 0,
        FormErr = 1,
        ServFail = 2,
        NxDomain = 3,
        NotImp = 4,
        Refused = 5,
        YxDomain = 6,
        YxRrset = 7,
        NxRrset = 8,
        NotAuth = 9,
        NotZone = 10,
        /// RFC 6891 §9: the requestor's EDNS version is not implemented.
        BadVers = 16,
    }
}

wire_enum! {
    /// TYPE and QTYPE (RFC 1035 §3.2.2-3, IANA "Resource Record TYPEs").
    Type: u16 {
        A = 1,
        Ns = 2,
        Cname = 5,
        Soa = 6,
        Ptr = 12,
        Mx = 15,
        Txt = 16,
        Aaaa = 28,
        Srv = 33,
        /// EDNS(0) pseudo-record, RFC 6891 §6.1.1.
        Opt = 41,
        Https = 65,
        Ixfr = 251,
        Axfr = 252,
        /// QTYPE `*`, "ANY" (RFC 8482).
        Any = 255,
    }
}

wire_enum! {
    /// CLASS and QCLASS (RFC 1035 §3.2.4-5).
    Class: u16 {
        In = 1,
        Ch = 3,
        Hs = 4,
        /// RFC 2136 §1.
        None = 254,
        /// QCLASS `*`.
        Any = 255,
    }
}

mod field {
    use super::Field;
    pub const ID: Field = 0..2;
    pub const FLAGS: Field = 2..4;
    pub const QDCOUNT: Field = 4..6;
    pub const ANCOUNT: Field = 6..8;
    pub const NSCOUNT: Field = 8..10;
    pub const ARCOUNT: Field = 10..12;
}

/// Length of the DNS header.
pub const HEADER_LEN: usize = field::ARCOUNT.end;
/// Longest name in wire form, length bytes and root label included
/// (RFC 1035 §2.3.4).
pub const MAX_NAME_LEN: usize = 255;
/// Longest label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;
/// Compression pointers followed in one name at most. A 255-byte name has
/// at most 127 labels, and a compressor writes at most one pointer per
/// label plus one, so no real name needs more.
pub const MAX_POINTER_HOPS: usize = 128;
/// Largest message over UDP without EDNS (RFC 1035 §2.3.4), and the floor
/// for an EDNS requestor's payload size (RFC 6891 §6.2.5).
pub const MIN_UDP_PAYLOAD: usize = 512;
/// An A record as [`Response::push_a`] writes it: a pointer to the
/// question's name, TYPE, CLASS, TTL, RDLENGTH and the address.
pub const A_RECORD_LEN: usize = 2 + 2 + 2 + 4 + 2 + 4;
/// An OPT record with no options (RFC 6891 §6.1.2).
pub const OPT_RECORD_LEN: usize = 1 + 2 + 2 + 4 + 2;
/// Fixed part of a resource record after its name: TYPE, CLASS, TTL,
/// RDLENGTH (RFC 1035 §4.1.3).
const RR_FIXED_LEN: usize = 10;

// The flags word (RFC 1035 §4.1.1; AD and CD from RFC 4035 §3.2).
const FLAG_QR: u16 = 0x8000;
const OPCODE_SHIFT: u32 = 11;
const OPCODE_MASK: u16 = 0x7800;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;
const FLAG_Z: u16 = 0x0040;
const FLAG_AD: u16 = 0x0020;
const FLAG_CD: u16 = 0x0010;
const RCODE_MASK: u16 = 0x000f;
/// The name `0xc000 | 12`: a pointer to the question right after the header.
const PTR_TO_QUESTION: u16 = 0xc000 | HEADER_LEN as u16;
/// DO, the first bit of the OPT record's flags (RFC 3225 §3).
const OPT_FLAG_DO: u16 = 0x8000;

/// A zero-copy view of a DNS message: the header, and the offsets where the
/// sections start. The view spans the message only (UDP payload, or TCP
/// payload after the 2-byte length).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// A view with no checks; getters panic if the buffer is too short.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }
    /// A view of untrusted bytes: the header must be there. Sections are
    /// parsed on demand and report their own errors.
    pub fn new_checked(buffer: T) -> super::Result<Packet<T>> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }
    /// `Truncated` if the buffer is shorter than the header.
    pub fn check_len(&self) -> super::Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(WireError::Truncated)
        } else {
            Ok(())
        }
    }
    pub fn into_inner(self) -> T {
        self.buffer
    }
    /// The whole message.
    pub fn message(&self) -> &[u8] {
        self.buffer.as_ref()
    }
    #[inline]
    pub fn id(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::ID])
    }
    /// The flags word: QR, Opcode, AA, TC, RD, RA, Z, AD, CD, RCODE.
    #[inline]
    pub fn flags(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::FLAGS])
    }
    /// QR: a response (true) or a query.
    #[inline]
    pub fn is_response(&self) -> bool {
        self.flags() & FLAG_QR != 0
    }
    #[inline]
    pub fn opcode(&self) -> Opcode {
        Opcode::from(((self.flags() & OPCODE_MASK) >> OPCODE_SHIFT) as u8)
    }
    /// AA: Authoritative Answer.
    #[inline]
    pub fn authoritative(&self) -> bool {
        self.flags() & FLAG_AA != 0
    }
    /// TC: TrunCation.
    #[inline]
    pub fn truncated(&self) -> bool {
        self.flags() & FLAG_TC != 0
    }
    /// RD: Recursion Desired.
    #[inline]
    pub fn recursion_desired(&self) -> bool {
        self.flags() & FLAG_RD != 0
    }
    /// RA: Recursion Available.
    #[inline]
    pub fn recursion_available(&self) -> bool {
        self.flags() & FLAG_RA != 0
    }
    /// Z, which must be zero (RFC 1035 §4.1.1).
    #[inline]
    pub fn z(&self) -> bool {
        self.flags() & FLAG_Z != 0
    }
    /// AD: Authentic Data (RFC 4035 §3.2.3).
    #[inline]
    pub fn authentic_data(&self) -> bool {
        self.flags() & FLAG_AD != 0
    }
    /// CD: Checking Disabled (RFC 4035 §3.2.2).
    #[inline]
    pub fn checking_disabled(&self) -> bool {
        self.flags() & FLAG_CD != 0
    }
    /// The 4-bit RCODE of the header; an OPT record may extend it.
    #[inline]
    pub fn rcode(&self) -> Rcode {
        Rcode::from(self.flags() & RCODE_MASK)
    }
    #[inline]
    pub fn question_count(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::QDCOUNT])
    }
    #[inline]
    pub fn answer_count(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::ANCOUNT])
    }
    #[inline]
    pub fn authority_count(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::NSCOUNT])
    }
    #[inline]
    pub fn additional_count(&self) -> u16 {
        be16(&self.buffer.as_ref()[field::ARCOUNT])
    }
    /// The first question, right after the header.
    pub fn question(&self) -> Result<Question> {
        Question::parse(self.buffer.as_ref(), HEADER_LEN)
    }
    /// Walk the answer, authority and additional sections, which start at
    /// `at` (the end of the question section), and return the OPT record of
    /// the additional section if there is one.
    ///
    /// `BadOpt` for an OPT record in another section, a second one, or one
    /// not owned by the root (RFC 6891 §6.1.1). Bytes after the last record
    /// are ignored. Each record takes at least 11 bytes, so the walk ends
    /// after `len / 11` records whatever the counts say.
    pub fn find_opt(&self, at: usize) -> Result<Option<Opt>> {
        let msg = self.buffer.as_ref();
        let before_additional = usize::from(self.answer_count()) + usize::from(self.authority_count());
        let total = before_additional + usize::from(self.additional_count());
        let mut pos = at;
        let mut opt = None;
        for i in 0..total {
            let rr = Record::parse(msg, pos)?;
            if rr.rtype == Type::Opt {
                if i < before_additional || opt.is_some() {
                    return Err(DnsError::BadOpt);
                }
                opt = Some(Opt::from_record(&rr)?);
            }
            pos = rr.end();
        }
        Ok(opt)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_id(&mut self, v: u16) {
        self.buffer.as_mut()[field::ID].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_flags(&mut self, v: u16) {
        self.buffer.as_mut()[field::FLAGS].copy_from_slice(&v.to_be_bytes())
    }
    fn set_flag(&mut self, bit: u16, v: bool) {
        let f = self.flags() & !bit;
        self.set_flags(if v { f | bit } else { f })
    }
    pub fn set_response(&mut self, v: bool) {
        self.set_flag(FLAG_QR, v)
    }
    pub fn set_opcode(&mut self, op: Opcode) {
        let f = self.flags() & !OPCODE_MASK;
        self.set_flags(f | ((u16::from(u8::from(op)) << OPCODE_SHIFT) & OPCODE_MASK))
    }
    pub fn set_authoritative(&mut self, v: bool) {
        self.set_flag(FLAG_AA, v)
    }
    pub fn set_truncated(&mut self, v: bool) {
        self.set_flag(FLAG_TC, v)
    }
    pub fn set_recursion_desired(&mut self, v: bool) {
        self.set_flag(FLAG_RD, v)
    }
    pub fn set_recursion_available(&mut self, v: bool) {
        self.set_flag(FLAG_RA, v)
    }
    pub fn set_z(&mut self, v: bool) {
        self.set_flag(FLAG_Z, v)
    }
    pub fn set_authentic_data(&mut self, v: bool) {
        self.set_flag(FLAG_AD, v)
    }
    pub fn set_checking_disabled(&mut self, v: bool) {
        self.set_flag(FLAG_CD, v)
    }
    /// Set the 4-bit header RCODE: the low 4 bits of `rc`.
    pub fn set_rcode(&mut self, rc: Rcode) {
        let f = self.flags() & !RCODE_MASK;
        self.set_flags(f | (u16::from(rc) & RCODE_MASK))
    }
    pub fn set_question_count(&mut self, v: u16) {
        self.buffer.as_mut()[field::QDCOUNT].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_answer_count(&mut self, v: u16) {
        self.buffer.as_mut()[field::ANCOUNT].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_authority_count(&mut self, v: u16) {
        self.buffer.as_mut()[field::NSCOUNT].copy_from_slice(&v.to_be_bytes())
    }
    pub fn set_additional_count(&mut self, v: u16) {
        self.buffer.as_mut()[field::ARCOUNT].copy_from_slice(&v.to_be_bytes())
    }
}

/// The header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    pub response: bool,
    pub opcode: Opcode,
    pub authoritative: bool,
    pub truncated: bool,
    pub recursion_desired: bool,
    pub recursion_available: bool,
    pub authentic_data: bool,
    pub checking_disabled: bool,
    /// The 4-bit header RCODE.
    pub rcode: Rcode,
    pub question_count: u16,
    pub answer_count: u16,
    pub authority_count: u16,
    pub additional_count: u16,
}

impl Header {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> super::Result<Header> {
        p.check_len()?;
        Ok(Header {
            id: p.id(),
            response: p.is_response(),
            opcode: p.opcode(),
            authoritative: p.authoritative(),
            truncated: p.truncated(),
            recursion_desired: p.recursion_desired(),
            recursion_available: p.recursion_available(),
            authentic_data: p.authentic_data(),
            checking_disabled: p.checking_disabled(),
            rcode: p.rcode(),
            question_count: p.question_count(),
            answer_count: p.answer_count(),
            authority_count: p.authority_count(),
            additional_count: p.additional_count(),
        })
    }
    /// Write the header (Z zero); panics if the buffer is shorter than
    /// `HEADER_LEN`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_id(self.id);
        p.set_flags(0);
        p.set_response(self.response);
        p.set_opcode(self.opcode);
        p.set_authoritative(self.authoritative);
        p.set_truncated(self.truncated);
        p.set_recursion_desired(self.recursion_desired);
        p.set_recursion_available(self.recursion_available);
        p.set_authentic_data(self.authentic_data);
        p.set_checking_disabled(self.checking_disabled);
        p.set_rcode(self.rcode);
        p.set_question_count(self.question_count);
        p.set_answer_count(self.answer_count);
        p.set_authority_count(self.authority_count);
        p.set_additional_count(self.additional_count);
    }
}

/// A name inside a message, checked: where it is written and how long it
/// is once its pointers are followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameRef {
    /// Offset of the name's first byte.
    pub start: usize,
    /// Offset just past the name as written: after its root label, or after
    /// its first compression pointer.
    pub end: usize,
    /// Length in uncompressed wire form, length bytes and the root label
    /// included: 1 for the root, 5 for `web.`.
    pub wire_len: usize,
    /// Compression pointers followed.
    pub pointers: usize,
}

/// Walk the name at `at`, handing each label (without its length byte) to
/// `label` in order. This is the one place names are decoded; see the
/// module documentation for the rules it enforces.
pub fn visit_labels(msg: &[u8], at: usize, mut label: impl FnMut(&[u8])) -> Result<NameRef> {
    let mut pos = at;
    // Every pointer must land strictly before the start of the run of
    // labels it ends, so hops only go backwards and cannot loop.
    let mut run_start = at;
    let mut end = None;
    let mut wire_len = 1; // the root label
    let mut pointers = 0;
    loop {
        let Some(&len) = msg.get(pos) else { return Err(DnsError::Truncated) };
        match len >> 6 {
            0b00 if len == 0 => {
                let end = end.unwrap_or(pos + 1);
                return Ok(NameRef { start: at, end, wire_len, pointers });
            }
            0b00 => {
                let n = usize::from(len);
                wire_len += 1 + n;
                if wire_len > MAX_NAME_LEN {
                    return Err(DnsError::NameTooLong);
                }
                let Some(bytes) = msg.get(pos + 1..pos + 1 + n) else { return Err(DnsError::Truncated) };
                label(bytes);
                pos += 1 + n;
            }
            0b11 => {
                let Some(&low) = msg.get(pos + 1) else { return Err(DnsError::Truncated) };
                let target = usize::from(u16::from_be_bytes([len & 0x3f, low]));
                end.get_or_insert(pos + 2);
                pointers += 1;
                if pointers > MAX_POINTER_HOPS {
                    return Err(DnsError::TooManyPointers);
                }
                if target < HEADER_LEN || target >= run_start {
                    return Err(DnsError::BadPointer);
                }
                run_start = target;
                pos = target;
            }
            _ => return Err(DnsError::BadLabelType),
        }
    }
}

/// Check the name at `at`.
pub fn parse_name(msg: &[u8], at: usize) -> Result<NameRef> {
    visit_labels(msg, at, |_| {})
}

/// Decode the name at `at` into `out` in uncompressed wire form (length
/// bytes, labels, root byte) and return it with its length, which is
/// `NameRef::wire_len`. The bytes are copied as they are, case included.
pub fn read_name(msg: &[u8], at: usize, out: &mut [u8; MAX_NAME_LEN]) -> Result<(NameRef, usize)> {
    let mut n = 0;
    let name = visit_labels(msg, at, |label| {
        // The walk checks the total length before it hands a label over,
        // so the label, its length byte and the root byte still fit.
        out[n] = label.len() as u8;
        out[n + 1..n + 1 + label.len()].copy_from_slice(label);
        n += 1 + label.len();
    })?;
    out[n] = 0;
    Ok((name, n + 1))
}

/// A question (RFC 1035 §4.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Question {
    pub name: NameRef,
    pub qtype: Type,
    pub qclass: Class,
}

impl Question {
    /// Parse the question at `at`.
    pub fn parse(msg: &[u8], at: usize) -> Result<Question> {
        let name = parse_name(msg, at)?;
        let Some(fixed) = msg.get(name.end..name.end + 4) else { return Err(DnsError::Truncated) };
        Ok(Question { name, qtype: Type::from(be16(fixed)), qclass: Class::from(be16(&fixed[2..])) })
    }
    /// Offset just past the question.
    pub const fn end(&self) -> usize {
        self.name.end + 4
    }
}

/// A resource record (RFC 1035 §4.1.3), its RDATA left in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub name: NameRef,
    pub rtype: Type,
    /// CLASS, kept raw: OPT uses it for the UDP payload size.
    pub class: u16,
    /// TTL, kept raw: OPT uses it for the extended RCODE, version and flags.
    pub ttl: u32,
    /// Offset of the RDATA in the message.
    pub rdata_start: usize,
    pub rdata_len: usize,
}

impl Record {
    /// Parse the record at `at`; its RDATA must lie within `msg`.
    pub fn parse(msg: &[u8], at: usize) -> Result<Record> {
        let name = parse_name(msg, at)?;
        let Some(fixed) = msg.get(name.end..name.end + RR_FIXED_LEN) else { return Err(DnsError::Truncated) };
        let rdata_start = name.end + RR_FIXED_LEN;
        let rdata_len = usize::from(be16(&fixed[8..]));
        if msg.len() < rdata_start + rdata_len {
            return Err(DnsError::Truncated);
        }
        Ok(Record {
            name,
            rtype: Type::from(be16(fixed)),
            class: be16(&fixed[2..]),
            ttl: be32(&fixed[4..]),
            rdata_start,
            rdata_len,
        })
    }
    /// Offset just past the record.
    pub const fn end(&self) -> usize {
        self.rdata_start + self.rdata_len
    }
    /// The RDATA of an IN A record, if that is what this is.
    pub fn a_addr(&self, msg: &[u8]) -> Option<Ipv4Addr> {
        if self.rtype != Type::A || self.class != u16::from(Class::In) || self.rdata_len != 4 {
            return None;
        }
        let b = msg.get(self.rdata_start..self.rdata_start + 4)?;
        Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

/// The EDNS(0) OPT pseudo-record (RFC 6891 §6.1.2-3), options aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opt {
    /// The requestor's (or responder's) largest UDP payload.
    pub udp_payload_size: u16,
    /// The upper 8 bits of the 12-bit extended RCODE.
    pub ext_rcode: u8,
    pub version: u8,
    /// DO: DNSSEC records wanted (RFC 3225 §3).
    pub dnssec_ok: bool,
}

impl Opt {
    /// The OPT fields of a record of type OPT; `BadOpt` unless its owner is
    /// the root (RFC 6891 §6.1.2).
    pub fn from_record(rr: &Record) -> Result<Opt> {
        if rr.rtype != Type::Opt || rr.name.wire_len != 1 {
            return Err(DnsError::BadOpt);
        }
        Ok(Opt {
            udp_payload_size: rr.class,
            ext_rcode: (rr.ttl >> 24) as u8,
            version: (rr.ttl >> 16) as u8,
            dnssec_ok: rr.ttl as u16 & OPT_FLAG_DO != 0,
        })
    }
    /// Write the record with no options into the first `OPT_RECORD_LEN`
    /// bytes of `buf`; panics if `buf` is shorter.
    pub fn emit(&self, buf: &mut [u8]) {
        let b = &mut buf[..OPT_RECORD_LEN];
        b[0] = 0; // the root
        b[1..3].copy_from_slice(&u16::from(Type::Opt).to_be_bytes());
        b[3..5].copy_from_slice(&self.udp_payload_size.to_be_bytes());
        b[5] = self.ext_rcode;
        b[6] = self.version;
        b[7..9].copy_from_slice(&(if self.dnssec_ok { OPT_FLAG_DO } else { 0 }).to_be_bytes());
        b[9..11].fill(0); // RDLENGTH
    }
}

/// A response built in place over the query it answers.
///
/// [`Response::new`] keeps the query's ID, Opcode, RD, CD and question
/// section, and rewrites the rest of the header; records are appended
/// after the question, overwriting whatever followed it in the query;
/// [`Response::finish`] writes the OPT record, if any, and the counts.
///
/// The size limit covers the OPT record, which is reserved up front: a
/// response always carries its OPT. An answer that does not fit is left
/// out and sets TC (RFC 2181 §9), so the client retries over TCP; the
/// answers that did fit stay.
#[derive(Debug)]
pub struct Response<'a> {
    buf: &'a mut [u8],
    len: usize,
    /// Where the answers must stop: the size limit less the OPT record.
    answer_limit: usize,
    answers: u16,
    opt: Option<Opt>,
}

impl<'a> Response<'a> {
    /// Start a response in `buf`, which holds the query.
    ///
    /// `question_end` is the offset just past the question section: the
    /// question is kept and QDCOUNT set to 1, or, with `HEADER_LEN`, there
    /// is no question (QDCOUNT 0). `limit` is the largest message the
    /// client accepts; the header, question and OPT always fit, so a
    /// smaller limit only leaves answers out. `rcode` may be extended
    /// (above 15); its upper bits then need `opt`. `opt` is the OPT record
    /// to send, if any.
    ///
    /// `Truncated` if `buf` is shorter than the question and OPT together
    /// or `question_end` is inside the header.
    pub fn new(
        buf: &'a mut [u8],
        question_end: usize,
        limit: usize,
        rcode: Rcode,
        opt: Option<Opt>,
    ) -> Result<Response<'a>> {
        let opt_len = if opt.is_some() { OPT_RECORD_LEN } else { 0 };
        if question_end < HEADER_LEN || buf.len() < question_end + opt_len {
            return Err(DnsError::Truncated);
        }
        let rc = u16::from(rcode);
        let opt = opt.map(|o| Opt { ext_rcode: (rc >> 4) as u8, ..o });
        let mut p = Packet::new_unchecked(&mut *buf);
        let keep = p.flags() & (OPCODE_MASK | FLAG_RD | FLAG_CD);
        p.set_flags(keep | FLAG_QR | (rc & RCODE_MASK));
        p.set_question_count(u16::from(question_end > HEADER_LEN));
        p.set_answer_count(0);
        p.set_authority_count(0);
        p.set_additional_count(0);
        let limit = limit.clamp(question_end + opt_len, buf.len());
        Ok(Response { buf, len: question_end, answer_limit: limit - opt_len, answers: 0, opt })
    }
    /// AA: set for names this server owns.
    pub fn set_authoritative(&mut self, v: bool) {
        Packet::new_unchecked(&mut *self.buf).set_authoritative(v)
    }
    /// RA: set when the server would recurse for other names.
    pub fn set_recursion_available(&mut self, v: bool) {
        Packet::new_unchecked(&mut *self.buf).set_recursion_available(v)
    }
    /// Append an IN A record for the question's name (a pointer to offset
    /// 12). False, and TC set, if it does not fit.
    pub fn push_a(&mut self, ttl: u32, addr: Ipv4Addr) -> bool {
        if self.len + A_RECORD_LEN > self.answer_limit || self.answers == u16::MAX {
            Packet::new_unchecked(&mut *self.buf).set_truncated(true);
            return false;
        }
        let b = &mut self.buf[self.len..self.len + A_RECORD_LEN];
        b[0..2].copy_from_slice(&PTR_TO_QUESTION.to_be_bytes());
        b[2..4].copy_from_slice(&u16::from(Type::A).to_be_bytes());
        b[4..6].copy_from_slice(&u16::from(Class::In).to_be_bytes());
        b[6..10].copy_from_slice(&ttl.to_be_bytes());
        b[10..12].copy_from_slice(&4u16.to_be_bytes());
        b[12..16].copy_from_slice(&addr.octets());
        self.len += A_RECORD_LEN;
        self.answers += 1;
        true
    }
    /// Answers appended so far.
    pub fn answers(&self) -> u16 {
        self.answers
    }
    /// Write the OPT record and the counts; the message length.
    pub fn finish(self) -> usize {
        let mut len = self.len;
        if let Some(opt) = self.opt {
            opt.emit(&mut self.buf[len..]);
            len += OPT_RECORD_LEN;
        }
        let mut p = Packet::new_unchecked(&mut *self.buf);
        p.set_answer_count(self.answers);
        p.set_additional_count(u16::from(self.opt.is_some()));
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // `dig @127.0.0.1 web A` (BIND 9.18), captured from a UDP socket: RD
    // and AD set, EDNS(0) with a 1232-byte payload and a client COOKIE.
    const DIG_A: [u8; 44] = [
        0xc2, 0x64, // ID
        0x01, 0x20, // RD, AD
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, // QD 1, AN 0, NS 0, AR 1
        0x03, b'w', b'e', b'b', 0x00, // web.
        0x00, 0x01, 0x00, 0x01, // A, IN
        0x00, // OPT: root
        0x00, 0x29, 0x04, 0xd0, // type OPT, payload 1232
        0x00, 0x00, 0x00, 0x00, // extended RCODE 0, version 0, no DO
        0x00, 0x0c, // RDLENGTH 12
        0x00, 0x0a, 0x00, 0x08, 0x9c, 0xe7, 0xc5, 0x5a, 0x00, 0xcc, 0xfd, 0x8b, // COOKIE (RFC 7873)
    ];

    // `dig +noedns web.front A`.
    const DIG_NOEDNS: [u8; 27] = [
        0xbf, 0xd2, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
        0x03, b'w', b'e', b'b', 0x05, b'f', b'r', b'o', b'n', b't', 0x00, 0x00, 0x01, 0x00, 0x01,
    ];

    // `dig +bufsize=4096 +dnssec db A`: DO set, 4096-byte payload.
    const DIG_DNSSEC: [u8; 43] = [
        0xff, 0x11, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, //
        0x02, b'd', b'b', 0x00, 0x00, 0x01, 0x00, 0x01, //
        0x00, 0x00, 0x29, 0x10, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x0c, //
        0x00, 0x0a, 0x00, 0x08, 0x29, 0x27, 0x0d, 0x3b, 0x96, 0x10, 0x39, 0x5d,
    ];

    // Response to DIG_A with two addresses, TTL 600, RA and AA, OPT echoed
    // with a 1232-byte payload and no options.
    const RESPONSE: [u8; 64] = [
        0xc2, 0x64, // ID
        0x85, 0x80, // QR, AA, RD, RA
        0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, // QD 1, AN 2, NS 0, AR 1
        0x03, b'w', b'e', b'b', 0x00, 0x00, 0x01, 0x00, 0x01, // question
        0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x58, 0x00, 0x04, 10, 88, 0, 2, // web A 10.88.0.2
        0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x58, 0x00, 0x04, 10, 89, 0, 2, // web A 10.89.0.2
        0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // OPT
    ];

    fn header_of_dig_a() -> Header {
        Header {
            id: 0xc264,
            response: false,
            opcode: Opcode::Query,
            authoritative: false,
            truncated: false,
            recursion_desired: true,
            recursion_available: false,
            authentic_data: true,
            checking_disabled: false,
            rcode: Rcode::NoError,
            question_count: 1,
            answer_count: 0,
            authority_count: 0,
            additional_count: 1,
        }
    }

    /// The name at `at` as dotted text, for assertions.
    fn text(msg: &[u8], at: usize) -> String {
        let mut s = String::new();
        visit_labels(msg, at, |l| {
            s.push_str(&String::from_utf8_lossy(l));
            s.push('.');
        })
        .unwrap();
        s
    }

    #[test]
    fn deconstruct_dig_query() {
        let p = Packet::new_checked(&DIG_A[..]).unwrap();
        assert_eq!(Header::parse(&p).unwrap(), header_of_dig_a());
        assert!(!p.z() && !p.truncated() && !p.checking_disabled());
        let q = p.question().unwrap();
        assert_eq!(q.name, NameRef { start: 12, end: 17, wire_len: 5, pointers: 0 });
        assert_eq!((q.qtype, q.qclass, q.end()), (Type::A, Class::In, 21));
        assert_eq!(text(&DIG_A, 12), "web.");
        let opt = p.find_opt(q.end()).unwrap().unwrap();
        assert_eq!(opt, Opt { udp_payload_size: 1232, ext_rcode: 0, version: 0, dnssec_ok: false });

        let p = Packet::new_checked(&DIG_NOEDNS[..]).unwrap();
        let q = p.question().unwrap();
        assert_eq!(text(&DIG_NOEDNS, 12), "web.front.");
        assert_eq!((q.name.wire_len, q.end()), (11, DIG_NOEDNS.len()));
        assert_eq!(p.find_opt(q.end()), Ok(None));

        let p = Packet::new_checked(&DIG_DNSSEC[..]).unwrap();
        let opt = p.find_opt(p.question().unwrap().end()).unwrap().unwrap();
        assert_eq!(opt, Opt { udp_payload_size: 4096, ext_rcode: 0, version: 0, dnssec_ok: true });
    }

    #[test]
    fn construct_header() {
        let mut buf = [0xa5u8; 12];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        header_of_dig_a().emit(&mut p);
        assert_eq!(buf, DIG_A[..12]);
        // Every flag setter reaches its own bit only.
        let mut p = Packet::new_unchecked([0u8; 12]);
        p.set_response(true);
        p.set_opcode(Opcode::Unknown(15));
        p.set_authoritative(true);
        p.set_truncated(true);
        p.set_recursion_desired(true);
        p.set_recursion_available(true);
        p.set_z(true);
        p.set_authentic_data(true);
        p.set_checking_disabled(true);
        p.set_rcode(Rcode::Unknown(15));
        assert_eq!(p.flags(), 0xffff);
        p.set_opcode(Opcode::Update);
        p.set_rcode(Rcode::BadVers); // low 4 bits of 16: zero
        assert_eq!(p.flags(), 0xaff0);
        assert_eq!((p.opcode(), p.rcode()), (Opcode::Update, Rcode::NoError));
    }

    #[test]
    fn enums_round_trip() {
        for v in 0..=15u8 {
            assert_eq!(u8::from(Opcode::from(v)), v);
        }
        for v in 0..=u16::from(u8::MAX) {
            assert_eq!(u16::from(Rcode::from(v)), v);
            assert_eq!(u16::from(Type::from(v)), v);
            assert_eq!(u16::from(Class::from(v)), v);
        }
        assert_eq!(Type::from(28), Type::Aaaa);
        assert_eq!(Rcode::from(16), Rcode::BadVers);
    }

    #[test]
    fn emit_response() {
        let mut buf = [0u8; 128];
        buf[..DIG_A.len()].copy_from_slice(&DIG_A);
        let opt = Opt { udp_payload_size: 1232, ext_rcode: 0, version: 0, dnssec_ok: false };
        let mut r = Response::new(&mut buf, 21, 512, Rcode::NoError, Some(opt)).unwrap();
        r.set_authoritative(true);
        r.set_recursion_available(true);
        assert!(r.push_a(600, Ipv4Addr::new(10, 88, 0, 2)));
        assert!(r.push_a(600, Ipv4Addr::new(10, 89, 0, 2)));
        assert_eq!(r.answers(), 2);
        let len = r.finish();
        assert_eq!(&buf[..len], &RESPONSE[..]);

        // It parses back: AD cleared, the answers point at the question.
        let p = Packet::new_checked(&buf[..len]).unwrap();
        assert!(p.is_response() && p.authoritative() && !p.authentic_data() && !p.truncated());
        let q = p.question().unwrap();
        let a1 = Record::parse(&buf, q.end()).unwrap();
        assert_eq!(a1.name, NameRef { start: 21, end: 23, wire_len: 5, pointers: 1 });
        assert_eq!((a1.ttl, a1.a_addr(&buf)), (600, Some(Ipv4Addr::new(10, 88, 0, 2))));
        let a2 = Record::parse(&buf, a1.end()).unwrap();
        assert_eq!(a2.a_addr(&buf), Some(Ipv4Addr::new(10, 89, 0, 2)));
        assert_eq!(text(&buf, a2.name.start), "web.");
        // The answers are skipped on the way to the OPT record.
        assert_eq!(p.find_opt(q.end()).unwrap(), Some(opt));
    }

    #[test]
    fn response_truncates_to_the_limit() {
        let mut buf = [0u8; 128];
        buf[..DIG_A.len()].copy_from_slice(&DIG_A);
        let opt = Opt { udp_payload_size: 1232, ext_rcode: 0, version: 0, dnssec_ok: false };
        // Room for one answer and the OPT record: 21 + 16 + 11 = 48.
        let mut r = Response::new(&mut buf, 21, 48 + 15, Rcode::NoError, Some(opt)).unwrap();
        assert!(r.push_a(600, Ipv4Addr::new(10, 88, 0, 2)));
        assert!(!r.push_a(600, Ipv4Addr::new(10, 89, 0, 2)));
        let len = r.finish();
        assert_eq!(len, 48);
        let p = Packet::new_checked(&buf[..len]).unwrap();
        assert!(p.truncated());
        assert_eq!((p.answer_count(), p.additional_count()), (1, 1));
        assert_eq!(p.find_opt(21).unwrap(), Some(opt));

        // A limit below the question and OPT still keeps both, and no answer.
        let mut buf = [0u8; 128];
        buf[..DIG_A.len()].copy_from_slice(&DIG_A);
        let mut r = Response::new(&mut buf, 21, 0, Rcode::NoError, Some(opt)).unwrap();
        assert!(!r.push_a(600, Ipv4Addr::new(10, 88, 0, 2)));
        assert_eq!(r.finish(), 32);
        // The buffer bounds the limit too.
        let mut small = DIG_A;
        let mut r = Response::new(&mut small[..], 21, 4096, Rcode::NoError, None).unwrap();
        assert!(r.push_a(1, Ipv4Addr::LOCALHOST));
        assert!(!r.push_a(1, Ipv4Addr::LOCALHOST));
        assert_eq!(r.finish(), 37);
    }

    #[test]
    fn error_responses() {
        // FORMERR without a question: a bare header.
        let mut buf = DIG_A;
        let len = Response::new(&mut buf[..], HEADER_LEN, 512, Rcode::FormErr, None).unwrap().finish();
        assert_eq!(&buf[..len], &[0xc2, 0x64, 0x81, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]);

        // BADVERS: extended RCODE 16 is 1 in the OPT record, 0 in the header.
        let mut buf = DIG_A;
        let opt = Opt { udp_payload_size: 1232, ext_rcode: 0, version: 0, dnssec_ok: false };
        let len = Response::new(&mut buf[..], 21, 512, Rcode::BadVers, Some(opt)).unwrap().finish();
        let p = Packet::new_checked(&buf[..len]).unwrap();
        assert_eq!(p.rcode(), Rcode::NoError);
        assert_eq!(p.find_opt(21).unwrap().unwrap().ext_rcode, 1);

        // The buffer must hold the question and the OPT record.
        let mut short = [0u8; 25];
        short.copy_from_slice(&DIG_A[..25]);
        assert_eq!(Response::new(&mut short[..], 21, 512, Rcode::NoError, Some(opt)).unwrap_err(), DnsError::Truncated);
        assert_eq!(Response::new(&mut short[..], 11, 512, Rcode::NoError, None).unwrap_err(), DnsError::Truncated);
    }

    #[test]
    fn read_name_decompresses() {
        // A response's answer name is a pointer to "web" at 12; a third
        // name "www" + pointer to the answer's pointer chains two hops.
        let mut msg = RESPONSE[..53].to_vec();
        let third = msg.len();
        msg.extend_from_slice(&[3, b'w', b'w', b'w', 0xc0, 21]);
        let mut out = [0u8; MAX_NAME_LEN];
        let (name, n) = read_name(&msg, third, &mut out).unwrap();
        assert_eq!(&out[..n], b"\x03www\x03web\x00");
        assert_eq!(name, NameRef { start: third, end: third + 6, wire_len: 9, pointers: 2 });
        // The root name.
        let (name, n) = read_name(&[0u8; 13], 12, &mut out).unwrap();
        assert_eq!((name.wire_len, n, out[0]), (1, 1, 0));
    }

    fn message_with_name(name: &[u8]) -> Vec<u8> {
        let mut m = DIG_NOEDNS[..12].to_vec();
        m.extend_from_slice(name);
        m.extend_from_slice(&[0, 1, 0, 1]);
        m
    }

    #[test]
    fn pointer_loops_and_bad_pointers() {
        // A pointer to itself.
        assert_eq!(Question::parse(&message_with_name(&[0xc0, 12]), 12).unwrap_err(), DnsError::BadPointer);
        // A label, then a pointer back to the start of the same name.
        assert_eq!(Question::parse(&message_with_name(&[1, b'a', 0xc0, 12]), 12).unwrap_err(), DnsError::BadPointer);
        // Into the header, and forwards.
        assert_eq!(parse_name(&message_with_name(&[0xc0, 5]), 12).unwrap_err(), DnsError::BadPointer);
        assert_eq!(parse_name(&message_with_name(&[0xc0, 14, 0]), 12).unwrap_err(), DnsError::BadPointer);
        // Two names pointing at each other: 20 -> 12 is backwards, then 12
        // -> 20 is not before the run that started at 12.
        let mut m = DIG_NOEDNS[..12].to_vec();
        m.extend_from_slice(&[1, b'x', 0xc0, 20, 0, 0, 0, 0]);
        m.extend_from_slice(&[1, b'y', 0xc0, 12]);
        assert_eq!(parse_name(&m, 20).unwrap_err(), DnsError::BadPointer);
        assert_eq!(parse_name(&m, 12).unwrap_err(), DnsError::BadPointer);
        // The deepest chain allowed, then one more hop: pointer i points at
        // pointer i-1, and the first points at the root at 12.
        let chain = |hops: usize| {
            let mut m = DIG_NOEDNS[..12].to_vec();
            m.push(0);
            for i in 0..hops {
                let target = if i == 0 { 12 } else { 13 + 2 * (i - 1) };
                m.extend_from_slice(&(0xc000u16 | target as u16).to_be_bytes());
            }
            let last = m.len() - 2;
            (m, last)
        };
        let (m, last) = chain(MAX_POINTER_HOPS);
        assert_eq!(parse_name(&m, last).unwrap().pointers, MAX_POINTER_HOPS);
        let (m, last) = chain(MAX_POINTER_HOPS + 1);
        assert_eq!(parse_name(&m, last).unwrap_err(), DnsError::TooManyPointers);
        // The 14-bit offset reads both bytes.
        let mut m = vec![0u8; 0x150];
        m[0x100] = 0;
        m[0x140..0x142].copy_from_slice(&[0xc1, 0x00]);
        assert_eq!(parse_name(&m, 0x140).unwrap().wire_len, 1);
    }

    #[test]
    fn name_lengths() {
        let name_of = |labels: &[usize]| {
            let mut n = Vec::new();
            for &l in labels {
                n.push(l as u8);
                n.extend_from_slice(&vec![b'a'; l]);
            }
            n.push(0);
            n
        };
        // 3 × (1 + 63) + (1 + 61) + 1 = 255: the longest name.
        let m = message_with_name(&name_of(&[63, 63, 63, 61]));
        assert_eq!(Question::parse(&m, 12).unwrap().name.wire_len, 255);
        let mut out = [0u8; MAX_NAME_LEN];
        assert_eq!(read_name(&m, 12, &mut out).unwrap().1, 255);
        let m = message_with_name(&name_of(&[63, 63, 63, 62]));
        assert_eq!(Question::parse(&m, 12).unwrap_err(), DnsError::NameTooLong);
        assert_eq!(read_name(&m, 12, &mut out).unwrap_err(), DnsError::NameTooLong);
        // Too long only once a pointer is followed.
        let mut m = message_with_name(&name_of(&[63, 63, 63, 59]));
        let at = m.len();
        m.extend_from_slice(&[2, b'x', b'y', 0xc0, 12]);
        assert_eq!(parse_name(&m, at).unwrap_err(), DnsError::NameTooLong);
        // A length byte of 64 or 128 is a label type, not a length.
        for bad in [0x40u8, 0x7f, 0x80, 0xbf] {
            assert_eq!(parse_name(&message_with_name(&[bad, 0]), 12).unwrap_err(), DnsError::BadLabelType, "{bad:#x}");
        }
    }

    #[test]
    fn truncated() {
        assert_eq!(Packet::new_checked(&DIG_A[..11]).unwrap_err(), WireError::Truncated);
        for len in HEADER_LEN..21 {
            let p = Packet::new_checked(&DIG_A[..len]).unwrap();
            assert_eq!(p.question().unwrap_err(), DnsError::Truncated, "len {len}");
        }
        for len in 21..DIG_A.len() {
            let p = Packet::new_checked(&DIG_A[..len]).unwrap();
            assert_eq!(p.find_opt(21).unwrap_err(), DnsError::Truncated, "len {len}");
        }
        // A pointer cut after its first byte.
        assert_eq!(parse_name(&[0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xc0], 12).unwrap_err(), DnsError::Truncated);
        // Counts far beyond the message end the walk at the message end.
        let mut m = DIG_A;
        m[10..12].copy_from_slice(&[0xff; 2]);
        assert_eq!(Packet::new_checked(&m[..]).unwrap().find_opt(21).unwrap_err(), DnsError::Truncated);
        // ... and an OPT record counted as an answer is misplaced.
        m[6..8].copy_from_slice(&[0xff; 2]);
        assert_eq!(Packet::new_checked(&m[..]).unwrap().find_opt(21).unwrap_err(), DnsError::BadOpt);
    }

    #[test]
    fn bad_opt_records() {
        // Two OPT records.
        let mut two = DIG_NOEDNS.to_vec();
        two[11] = 2;
        let opt = [0u8, 0, 41, 2, 0, 0, 0, 0, 0, 0, 0];
        two.extend_from_slice(&opt);
        two.extend_from_slice(&opt);
        let p = Packet::new_checked(&two[..]).unwrap();
        assert_eq!(p.find_opt(DIG_NOEDNS.len()).unwrap_err(), DnsError::BadOpt);
        // One is fine.
        two[11] = 1;
        let p = Packet::new_checked(&two[..]).unwrap();
        assert_eq!(p.find_opt(DIG_NOEDNS.len()).unwrap().unwrap().udp_payload_size, 512);
        // In the answer section.
        two[7] = 1;
        two[11] = 0;
        let p = Packet::new_checked(&two[..]).unwrap();
        assert_eq!(p.find_opt(DIG_NOEDNS.len()).unwrap_err(), DnsError::BadOpt);
        // Owned by a name other than the root.
        let mut named = DIG_NOEDNS.to_vec();
        named[11] = 1;
        named.extend_from_slice(&[1, b'x', 0, 0, 41, 2, 0, 0, 0, 0, 0, 0, 0]);
        let p = Packet::new_checked(&named[..]).unwrap();
        assert_eq!(p.find_opt(DIG_NOEDNS.len()).unwrap_err(), DnsError::BadOpt);
    }

    #[test]
    fn random_and_mutated_messages_never_panic() {
        // splitmix64, seeded: a failure reproduces exactly.
        let mut state = 0x0d15_ea5e_u64;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let seeds = [&DIG_A[..], &DIG_NOEDNS[..], &DIG_DNSSEC[..], &RESPONSE[..]];
        let mut out = [0u8; MAX_NAME_LEN];
        let mut parsed = 0;
        for i in 0..100_000 {
            let mut m = seeds[i % seeds.len()].to_vec();
            for _ in 0..1 + next() % 4 {
                let at = (next() % m.len() as u64) as usize;
                // Bias towards bytes that look like pointers and lengths.
                m[at] = match next() % 3 {
                    0 => 0xc0 | (next() % 64) as u8,
                    1 => (next() % 70) as u8,
                    _ => next() as u8,
                };
            }
            if next() % 4 == 0 {
                m.truncate((next() % (m.len() as u64 + 1)) as usize);
            }
            let Ok(p) = Packet::new_checked(&m[..]) else { continue };
            let _ = Header::parse(&p);
            for at in [HEADER_LEN, 17, 21, 23] {
                if let Ok((name, n)) = read_name(&m, at, &mut out) {
                    assert_eq!(name.wire_len, n, "iteration {i}");
                    assert!(n <= MAX_NAME_LEN && name.pointers <= MAX_POINTER_HOPS && name.end <= m.len());
                }
            }
            if let Ok(q) = p.question() {
                parsed += 1;
                if let Ok(Some(opt)) = p.find_opt(q.end()) {
                    let mut copy = m.clone();
                    copy.resize(m.len() + 40, 0);
                    let limit = (next() % 600) as usize;
                    let mut r = Response::new(&mut copy, q.end(), limit, Rcode::NoError, Some(opt)).unwrap();
                    while r.push_a(1, Ipv4Addr::LOCALHOST) {}
                    let len = r.finish();
                    assert!(len <= limit.max(q.end() + OPT_RECORD_LEN), "iteration {i}");
                    let p = Packet::new_checked(&copy[..len]).unwrap();
                    assert!(p.is_response() && p.truncated());
                    assert_eq!(p.find_opt(q.end()).unwrap().map(|o| o.udp_payload_size), Some(opt.udp_payload_size));
                }
            }
        }
        assert!(parsed > 20_000, "{parsed}");
    }

    #[test]
    fn wire_error_conversion() {
        assert_eq!(WireError::from(DnsError::Truncated), WireError::Truncated);
        assert_eq!(WireError::from(DnsError::BadPointer), WireError::Malformed);
    }
}
