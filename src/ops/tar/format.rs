//! The tar format, both ways: ustar headers with the GNU (long names,
//! base-256 numbers) and POSIX pax (`x` records) extensions.
//!
//! The reader is ours rather than the `tar` crate's because an importer of
//! untrusted streams needs three things that crate (0.4.46) does not give:
//! a size limit on extension members (it reads pax and GNU long-name
//! members into memory whatever their size), an error when a member's data
//! is cut short (its reader returns a short read as a normal end), and an
//! error when the stream ends without the end-of-archive blocks. The
//! `tar` crate is used by the tests as an independent implementation.

use crate::error::{Error, Result};
use std::io::{self, Read, Write};

pub const BLOCK: usize = 512;
/// pax, GNU long-name and long-link members larger than this are refused:
/// a real one holds a few hundred bytes, and the reader keeps it in memory.
pub const MAX_EXTENSION: u64 = 1 << 20;

pub const REGULAR: u8 = b'0';
pub const HARDLINK: u8 = b'1';
pub const SYMLINK: u8 = b'2';
pub const CHARDEV: u8 = b'3';
pub const BLOCKDEV: u8 = b'4';
pub const DIRECTORY: u8 = b'5';
pub const FIFO: u8 = b'6';
pub const PAX_LOCAL: u8 = b'x';

/// One member of a tar stream, with its extension headers applied.
#[derive(Clone, Debug, Default)]
pub struct Member {
    /// Byte offset of its (first) header in the uncompressed stream.
    pub offset: u64,
    pub typeflag: u8,
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    pub size: u64,
    /// Nanoseconds since the epoch.
    pub mtime: i64,
    pub atime: Option<i64>,
    pub ctime: Option<i64>,
    pub devmajor: u32,
    pub devminor: u32,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Why this member cannot be imported, found while reading its headers
    /// (its data is still skipped correctly, so the stream goes on).
    pub problem: Option<String>,
}

/// Reads members one at a time; `data` reads the current member's content.
pub struct TarReader<R> {
    inner: R,
    pos: u64,
    /// Unread data bytes of the current member, then its padding.
    remaining: u64,
    padding: u64,
    ended: bool,
}

fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(n) => &field[..n],
        None => field,
    }
}

/// An octal number field, or GNU base-256 (high bit of the first byte set).
pub fn parse_number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        if field[0] == 0xff {
            return None; // negative
        }
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(b as u64)?;
        }
        return Some(v);
    }
    let s = cstr(field);
    let s: Vec<u8> = s.iter().copied().filter(|&b| b != b' ').collect();
    if s.is_empty() {
        return Some(0);
    }
    let mut v: u64 = 0;
    for b in s {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add((b - b'0') as u64)?;
    }
    Some(v)
}

fn checksum_ok(h: &[u8; BLOCK]) -> bool {
    let Some(stored) = parse_number(&h[148..156]) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += b as u64;
        signed += b as i8 as i64;
    }
    stored == unsigned || stored as i64 == signed
}

/// A pax time (`1700000000.123456789`, `-1.5`) in nanoseconds.
pub fn parse_pax_time(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut ns: i64 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        ns += (b - b'0') as i64 * 10i64.pow(8 - i as u32);
    }
    let total = secs.checked_mul(1_000_000_000)?.checked_add(ns)?;
    Some(if neg { -total } else { total })
}

fn format_pax_time(ns: i64) -> String {
    let abs = ns.unsigned_abs();
    let (s, f) = (abs / 1_000_000_000, abs % 1_000_000_000);
    let sign = if ns < 0 { "-" } else { "" };
    if f == 0 {
        format!("{sign}{s}")
    } else {
        format!("{sign}{s}.{f:09}")
    }
}

/// pax records: (key, value) pairs, raw bytes.
pub type PaxRecords = Vec<(Vec<u8>, Vec<u8>)>;

/// Splits pax records (`LEN key=value\n`); an error names what is wrong.
pub fn parse_pax(data: &[u8]) -> std::result::Result<PaxRecords, String> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break; // some writers pad with NULs
        }
        let sp = rest
            .iter()
            .take(21)
            .position(|&b| b == b' ')
            .ok_or("a pax record has no length")?;
        let len = std::str::from_utf8(&rest[..sp])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or("a pax record length is not a number")?;
        if len <= sp + 2 || len > rest.len() {
            return Err(format!(
                "a pax record claims {len} bytes, the header has {}",
                rest.len()
            ));
        }
        let rec = &rest[sp + 1..len];
        if rec.last() != Some(&b'\n') {
            return Err("a pax record does not end in a newline".into());
        }
        let kv = &rec[..rec.len() - 1];
        let eq = kv
            .iter()
            .position(|&b| b == b'=')
            .ok_or("a pax record has no `=`")?;
        out.push((kv[..eq].to_vec(), kv[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

fn decimal(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Extension headers collected for the next member.
#[derive(Default)]
struct Pending {
    pax: PaxRecords,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    problem: Option<String>,
    any: bool,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            pos: 0,
            remaining: 0,
            padding: 0,
            ended: false,
        }
    }

    /// Bytes of the (uncompressed) stream consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn truncated(&self, what: &str) -> Error {
        Error::BadInput(format!(
            "the tar stream is truncated at byte {} ({what}): nothing was imported; check the file or the program that wrote it",
            self.pos
        ))
    }

    /// Fills `buf`; false at a clean end of input before the first byte.
    fn read_block(&mut self, buf: &mut [u8]) -> Result<bool> {
        let mut got = 0;
        while got < buf.len() {
            match self.inner.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => return Err(self.truncated("inside a header")),
                Ok(n) => {
                    got += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading the tar stream", e)),
            }
        }
        Ok(true)
    }

    fn skip(&mut self, mut n: u64, what: &str) -> Result<()> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let want = n.min(buf.len() as u64) as usize;
            match self.inner.read(&mut buf[..want]) {
                Ok(0) => return Err(self.truncated(what)),
                Ok(k) => {
                    n -= k as u64;
                    self.pos += k as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading the tar stream", e)),
            }
        }
        Ok(())
    }

    fn read_extension(&mut self, size: u64) -> Result<Vec<u8>> {
        let mut data = vec![0u8; size as usize];
        if !self.read_block(&mut data)? && size > 0 {
            return Err(self.truncated("inside an extension header"));
        }
        self.skip(pad(size), "inside an extension header")?;
        Ok(data)
    }

    /// The next member, or None after the end-of-archive blocks. Skips
    /// whatever of the previous member's data was not read.
    pub fn next_member(&mut self) -> Result<Option<Member>> {
        if self.ended {
            return Ok(None);
        }
        // saturating: a hostile size near 2^64 must not wrap into a small skip
        let rest = self.remaining.saturating_add(self.padding);
        self.skip(rest, "inside a member's data")?;
        self.remaining = 0;
        self.padding = 0;
        let mut pending = Pending::default();
        loop {
            let offset = self.pos;
            let mut h = [0u8; BLOCK];
            if !self.read_block(&mut h)? {
                return Err(if self.pos == 0 {
                    Error::BadInput("the input is empty, not a tar archive".into())
                } else {
                    self.truncated("no end-of-archive blocks")
                });
            }
            if h.iter().all(|&b| b == 0) {
                if pending.any {
                    return Err(self.truncated("extension headers without their member"));
                }
                self.ended = true;
                return Ok(None);
            }
            if !checksum_ok(&h) {
                return Err(Error::BadInput(if offset == 0 {
                    "the input is not a tar archive (no valid tar header at its start)".into()
                } else {
                    format!(
                        "the tar stream is damaged: bad header checksum at byte {offset}; nothing was imported"
                    )
                }));
            }
            let size = parse_number(&h[124..136]).ok_or_else(|| {
                Error::BadInput(format!(
                    "the tar stream is damaged: bad size field at byte {offset}"
                ))
            })?;
            let typeflag = h[156];
            if matches!(typeflag, b'x' | b'g' | b'L' | b'K') {
                // A global header describes no member: the archive may end after it.
                pending.any |= typeflag != b'g';
                if size > MAX_EXTENSION {
                    self.skip(size.saturating_add(pad(size)), "inside an extension header")?;
                    pending.problem = Some(format!(
                        "its extension header ({}) claims {size} bytes, over the {MAX_EXTENSION}-byte limit",
                        typeflag as char
                    ));
                    continue;
                }
                let data = self.read_extension(size)?;
                match typeflag {
                    b'x' => match parse_pax(&data) {
                        Ok(r) => pending.pax.extend(r),
                        Err(e) => pending.problem = Some(format!("malformed pax header: {e}")),
                    },
                    b'L' => pending.long_name = Some(cstr(&data).to_vec()),
                    b'K' => pending.long_link = Some(cstr(&data).to_vec()),
                    _ => {} // global pax headers (e.g. git's commit id) are ignored
                }
                continue;
            }
            let mut m = self.member(&h, offset, typeflag, size, pending)?;
            if typeflag == b'S' {
                self.skip_sparse_map(&h)?;
                m.problem = Some("GNU sparse members are not supported: write the tar without --sparse (or with --format=pax)".into());
            }
            self.remaining = m.size;
            self.padding = pad(m.size);
            return Ok(Some(m));
        }
    }

    /// An old-GNU sparse header may be followed by extension blocks.
    fn skip_sparse_map(&mut self, h: &[u8; BLOCK]) -> Result<()> {
        let mut more = h[482] != 0;
        while more {
            let mut b = [0u8; BLOCK];
            if !self.read_block(&mut b)? {
                return Err(self.truncated("inside a sparse map"));
            }
            more = b[504] != 0;
        }
        Ok(())
    }

    fn member(
        &self,
        h: &[u8; BLOCK],
        offset: u64,
        typeflag: u8,
        size: u64,
        p: Pending,
    ) -> Result<Member> {
        let ustar = &h[257..263] == b"ustar\0";
        let gnu = &h[257..265] == b"ustar  \0";
        let mut path = cstr(&h[0..100]).to_vec();
        if ustar && h[345] != 0 {
            let mut full = cstr(&h[345..500]).to_vec();
            full.push(b'/');
            full.extend_from_slice(&path);
            path = full;
        }
        let num = |r: std::ops::Range<usize>| parse_number(&h[r]).unwrap_or(0);
        let secs = |v: u64| (v as i64).saturating_mul(1_000_000_000);
        let mut m = Member {
            offset,
            typeflag: if typeflag == 0 { REGULAR } else { typeflag },
            path: p.long_name.unwrap_or(path),
            link: p.long_link.unwrap_or_else(|| cstr(&h[157..257]).to_vec()),
            mode: (num(100..108) & 0o7777) as u32,
            uid: num(108..116),
            gid: num(116..124),
            uname: if ustar || gnu {
                cstr(&h[265..297]).to_vec()
            } else {
                vec![]
            },
            gname: if ustar || gnu {
                cstr(&h[297..329]).to_vec()
            } else {
                vec![]
            },
            size,
            mtime: secs(num(136..148)),
            atime: (gnu && num(345..357) != 0).then(|| secs(num(345..357))),
            ctime: (gnu && num(357..369) != 0).then(|| secs(num(357..369))),
            devmajor: num(329..337) as u32,
            devminor: num(337..345) as u32,
            xattrs: Vec::new(),
            problem: p.problem,
        };
        for (k, v) in p.pax {
            apply_pax(&mut m, &k, v)?;
        }
        m.xattrs.sort();
        Ok(m)
    }

    /// Reads the current member's data (at most its size; a stream that
    /// ends before it is an error, not a short file).
    pub fn data(&mut self) -> MemberData<'_, R> {
        MemberData { r: self }
    }

    /// After the end of the archive: reads the input to its end (a second
    /// zero block, blocking-factor padding), so that a program writing it
    /// into a pipe finishes, and its exit status is seen.
    pub fn drain(&mut self) -> Result<()> {
        let mut buf = [0u8; 8192];
        loop {
            match self.inner.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => self.pos += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading the tar stream", e)),
            }
        }
    }
}

fn apply_pax(m: &mut Member, key: &[u8], v: Vec<u8>) -> Result<()> {
    let bad = |m: &mut Member, what: &str| {
        m.problem
            .get_or_insert_with(|| format!("malformed pax value for {what}"));
    };
    match key {
        b"path" => m.path = v,
        b"linkpath" => m.link = v,
        b"size" => {
            // The data's length: without it the stream cannot be followed.
            m.size = decimal(&v).ok_or_else(|| {
                Error::BadInput(format!(
                    "the tar stream is damaged: bad pax size at byte {}",
                    m.offset
                ))
            })?
        }
        b"uid" => match decimal(&v) {
            Some(x) => m.uid = x,
            None => bad(m, "uid"),
        },
        b"gid" => match decimal(&v) {
            Some(x) => m.gid = x,
            None => bad(m, "gid"),
        },
        b"uname" => m.uname = v,
        b"gname" => m.gname = v,
        b"mtime" => match parse_pax_time(&v) {
            Some(t) => m.mtime = t,
            None => bad(m, "mtime"),
        },
        b"atime" => m.atime = parse_pax_time(&v),
        b"ctime" => m.ctime = parse_pax_time(&v),
        b"SCHILY.devmajor" => m.devmajor = decimal(&v).unwrap_or(0) as u32,
        b"SCHILY.devminor" => m.devminor = decimal(&v).unwrap_or(0) as u32,
        k if k.starts_with(b"SCHILY.xattr.") => {
            m.xattrs.push((k[b"SCHILY.xattr.".len()..].to_vec(), v));
        }
        k if k.starts_with(b"GNU.sparse.") => {
            m.problem.get_or_insert_with(|| {
                "pax sparse files are not supported: write the tar without --sparse".into()
            });
        }
        _ => {} // comment, hdrcharset, charset, LIBARCHIVE.*, SCHILY.acl.*, ...
    }
    Ok(())
}

/// The current member's data; see `TarReader::data`.
pub struct MemberData<'a, R> {
    r: &'a mut TarReader<R>,
}

impl<R: Read> Read for MemberData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.r.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.r.remaining) as usize;
        let n = self.r.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the tar stream is truncated at byte {} (inside a member's data): nothing was imported; check the file or the program that wrote it",
                    self.r.pos
                ),
            ));
        }
        self.r.pos += n as u64;
        self.r.remaining -= n as u64;
        Ok(n)
    }
}

fn pad(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// What one tar member header says, for writing.
pub struct EntryHeader<'a> {
    pub path: &'a [u8],
    pub link: &'a [u8],
    pub typeflag: u8,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub uname: &'a str,
    pub gname: &'a str,
    pub size: u64,
    pub mtime: i64,
    pub atime: i64,
    pub devmajor: u32,
    pub devminor: u32,
    pub xattrs: &'a [(serde_bytes::ByteBuf, serde_bytes::ByteBuf)],
}

fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Writes `value` as octal into a field (NUL-terminated), or as GNU
/// base-256 when it does not fit; false if neither fits.
fn put_number(field: &mut [u8], value: u64) -> bool {
    let digits = field.len() - 1;
    if digits >= 22 || value < 1u64 << (3 * digits) {
        let s = format!("{value:0digits$o}");
        field[..digits].copy_from_slice(s.as_bytes());
        field[digits] = 0;
        return true;
    }
    if field.len() < 9 && value >= 1u64 << (8 * (field.len() - 1)) {
        return false;
    }
    field.fill(0);
    let n = field.len();
    for (i, b) in value.to_be_bytes().iter().rev().enumerate() {
        if i < n {
            field[n - 1 - i] = *b;
        }
    }
    field[0] |= 0x80;
    true
}

/// ustar splits a path of up to 256 bytes into prefix (155) / name (100)
/// at a `/`.
fn split_ustar(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((&[], path));
    }
    let min = path.len().saturating_sub(101);
    (min..path.len().min(156))
        .rev()
        .filter(|&i| path[i] == b'/')
        .map(|i| (&path[..i], &path[i + 1..]))
        .find(|(p, n)| !p.is_empty() && !n.is_empty() && n.len() <= 100)
}

/// Writes the headers of one member (a pax header first when the ustar
/// fields cannot hold it all); returns the bytes written.
pub fn write_header(w: &mut dyn Write, e: &EntryHeader) -> io::Result<u64> {
    let mut pax = Vec::new();
    let split = split_ustar(e.path);
    let binary = std::str::from_utf8(e.path).is_err() || std::str::from_utf8(e.link).is_err();
    if split.is_none() || e.link.len() > 100 {
        if binary {
            pax_record(&mut pax, b"hdrcharset", b"BINARY");
        }
        if split.is_none() {
            pax_record(&mut pax, b"path", e.path);
        }
        if e.link.len() > 100 {
            pax_record(&mut pax, b"linkpath", e.link);
        }
    }
    let secs = e.mtime.div_euclid(1_000_000_000);
    if e.mtime.rem_euclid(1_000_000_000) != 0 || !(0..0o77777777777).contains(&secs) {
        pax_record(&mut pax, b"mtime", format_pax_time(e.mtime).as_bytes());
    }
    if e.atime != e.mtime {
        pax_record(&mut pax, b"atime", format_pax_time(e.atime).as_bytes());
    }
    for (k, v, max) in [("uid", e.uid, 0o7777777), ("gid", e.gid, 0o7777777)] {
        if v > max {
            pax_record(&mut pax, k.as_bytes(), v.to_string().as_bytes());
        }
    }
    for (k, v) in [("uname", e.uname), ("gname", e.gname)] {
        if v.len() > 32 {
            pax_record(&mut pax, k.as_bytes(), v.as_bytes());
        }
    }
    if e.size > 0o77777777777 {
        pax_record(&mut pax, b"size", e.size.to_string().as_bytes());
    }
    for (k, v) in e.xattrs {
        let mut key = b"SCHILY.xattr.".to_vec();
        key.extend_from_slice(k);
        pax_record(&mut pax, &key, v);
    }
    let mut written = 0;
    if !pax.is_empty() {
        let base = e.path.rsplit(|&b| b == b'/').find(|c| !c.is_empty());
        let mut name = b"PaxHeaders/".to_vec();
        name.extend_from_slice(base.unwrap_or(b"x"));
        name.truncate(100);
        let h = ustar_block(&EntryHeader {
            path: &name,
            link: b"",
            typeflag: PAX_LOCAL,
            mode: 0o644,
            size: pax.len() as u64,
            uname: "",
            gname: "",
            xattrs: &[],
            ..*e
        });
        w.write_all(&h)?;
        w.write_all(&pax)?;
        w.write_all(&[0u8; BLOCK][..pad(pax.len() as u64) as usize])?;
        written += (BLOCK + pax.len()) as u64 + pad(pax.len() as u64);
    }
    w.write_all(&ustar_block(e))?;
    Ok(written + BLOCK as u64)
}

fn ustar_block(e: &EntryHeader) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    let (prefix, name) = split_ustar(e.path).unwrap_or((&[], &e.path[..e.path.len().min(100)]));
    h[..name.len()].copy_from_slice(name);
    h[345..345 + prefix.len()].copy_from_slice(prefix);
    put_number(&mut h[100..108], e.mode as u64 & 0o7777);
    put_number(&mut h[108..116], e.uid as u64);
    put_number(&mut h[116..124], e.gid as u64);
    put_number(&mut h[124..136], e.size);
    let secs = e.mtime.div_euclid(1_000_000_000).clamp(0, 0o77777777777);
    put_number(&mut h[136..148], secs as u64);
    h[156] = e.typeflag;
    let link = &e.link[..e.link.len().min(100)];
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let uname = &e.uname.as_bytes()[..e.uname.len().min(32)];
    h[265..265 + uname.len()].copy_from_slice(uname);
    let gname = &e.gname.as_bytes()[..e.gname.len().min(32)];
    h[297..297 + gname.len()].copy_from_slice(gname);
    if matches!(e.typeflag, CHARDEV | BLOCKDEV) {
        put_number(&mut h[329..337], e.devmajor as u64);
        put_number(&mut h[337..345], e.devminor as u64);
    }
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| b as u64).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h
}

/// Zeros up to the next block boundary after `size` data bytes.
pub fn write_padding(w: &mut dyn Write, size: u64) -> io::Result<u64> {
    let n = pad(size);
    w.write_all(&[0u8; BLOCK][..n as usize])?;
    Ok(n)
}

/// The end-of-archive marker: two zero blocks.
pub fn write_end(w: &mut dyn Write) -> io::Result<u64> {
    w.write_all(&[0u8; 2 * BLOCK])?;
    Ok(2 * BLOCK as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header whose size (GNU base-256) is 2^64 - 1: found by the `tar`
    /// fuzz target, where skipping it (size + padding) overflowed.
    fn huge_member(typeflag: u8) -> Vec<u8> {
        let mut h = [0u8; BLOCK];
        h[..4].copy_from_slice(b"huge");
        h[124] = 0x80;
        h[128..136].fill(0xff);
        h[156] = typeflag;
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let mut t = h.to_vec();
        t.extend_from_slice(&[1u8; 3 * BLOCK]);
        t
    }

    #[test]
    fn a_size_near_2_64_is_truncation_not_overflow() {
        for flag in [REGULAR, PAX_LOCAL] {
            let data = huge_member(flag);
            let mut r = TarReader::new(&data[..]);
            let mut err = None;
            for _ in 0..3 {
                match r.next_member() {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        err = Some(e.to_string());
                        break;
                    }
                }
            }
            let err = err.expect("a stream this short is an error");
            assert!(err.contains("truncated"), "{err}");
        }
    }

    #[test]
    fn numbers_octal_and_base256() {
        assert_eq!(parse_number(b"0000644\0"), Some(0o644));
        assert_eq!(parse_number(b"   644 \0"), Some(0o644));
        assert_eq!(parse_number(b"\0\0\0\0"), Some(0));
        assert_eq!(parse_number(b"0009\0"), None);
        let mut f = [0u8; 12];
        assert!(put_number(&mut f, 1 << 40));
        assert_eq!(f[0] & 0x80, 0x80);
        assert_eq!(parse_number(&f), Some(1 << 40));
        let mut f = [0u8; 8];
        assert!(put_number(&mut f, 0o7777777));
        assert_eq!(&f, b"7777777\0");
        assert!(put_number(&mut f, 1 << 30));
        assert_eq!(parse_number(&f), Some(1 << 30));
    }

    #[test]
    fn pax_records_and_times() {
        let mut out = Vec::new();
        pax_record(&mut out, b"path", b"a");
        assert_eq!(out, b"9 path=a\n");
        let mut long = Vec::new();
        pax_record(&mut long, b"path", &[b'x'; 95]);
        assert_eq!(&long[..4], b"105 ");
        assert_eq!(long.len(), 105);
        assert_eq!(
            parse_pax(&out).unwrap(),
            vec![(b"path".to_vec(), b"a".to_vec())]
        );
        assert!(parse_pax(b"99999999999999999999 path=a\n").is_err());
        assert!(parse_pax(b"5 x=1\n").is_err());
        assert_eq!(parse_pax_time(b"1.5"), Some(1_500_000_000));
        assert_eq!(parse_pax_time(b"-1.5"), Some(-1_500_000_000));
        assert_eq!(parse_pax_time(b"12"), Some(12_000_000_000));
        assert_eq!(parse_pax_time(b"1.1234567891"), Some(1_123_456_789));
        for t in [0, 1, -1, 1_600_000_000_123_456_789, -1_500_000_000] {
            assert_eq!(parse_pax_time(format_pax_time(t).as_bytes()), Some(t));
        }
    }

    #[test]
    fn ustar_split() {
        let p = [b"d".repeat(150), b"f".repeat(100)].join(&b'/');
        let (pre, name) = split_ustar(&p).unwrap();
        assert_eq!((pre.len(), name.len()), (150, 100));
        assert!(split_ustar(&b"x".repeat(101)).is_none());
    }

    #[test]
    fn written_headers_read_back() {
        let long = [b"d".repeat(200), b"caf\xe9".to_vec()].join(&b'/');
        let xattrs = vec![(
            serde_bytes::ByteBuf::from(b"user.k".to_vec()),
            serde_bytes::ByteBuf::from(b"v\n\0w".to_vec()),
        )];
        let e = EntryHeader {
            path: &long,
            link: b"",
            typeflag: REGULAR,
            mode: 0o4755,
            uid: 1 << 24,
            gid: 7,
            uname: "someone",
            gname: "",
            size: 3,
            mtime: 1_600_000_000_123_456_789,
            atime: 1_600_000_000_123_456_789,
            devmajor: 0,
            devminor: 0,
            xattrs: &xattrs,
        };
        let mut buf = Vec::new();
        write_header(&mut buf, &e).unwrap();
        buf.extend_from_slice(b"abc");
        write_padding(&mut buf, 3).unwrap();
        write_end(&mut buf).unwrap();
        let mut r = TarReader::new(&buf[..]);
        let m = r.next_member().unwrap().unwrap();
        assert_eq!(m.path, long);
        assert_eq!((m.mode, m.uid, m.gid, m.size), (0o4755, 1 << 24, 7, 3));
        assert_eq!(m.mtime, 1_600_000_000_123_456_789);
        assert_eq!(m.uname, b"someone");
        assert_eq!(m.xattrs, vec![(b"user.k".to_vec(), b"v\n\0w".to_vec())]);
        let mut data = Vec::new();
        r.data().read_to_end(&mut data).unwrap();
        assert_eq!(data, b"abc");
        assert!(r.next_member().unwrap().is_none());
    }

    #[test]
    fn truncation_is_an_error() {
        let e = EntryHeader {
            path: b"f",
            link: b"",
            typeflag: REGULAR,
            mode: 0o644,
            uid: 0,
            gid: 0,
            uname: "",
            gname: "",
            size: 1000,
            mtime: 0,
            atime: 0,
            devmajor: 0,
            devminor: 0,
            xattrs: &[],
        };
        let mut buf = Vec::new();
        write_header(&mut buf, &e).unwrap();
        buf.extend_from_slice(&[1u8; 600]);
        let mut r = TarReader::new(&buf[..]);
        r.next_member().unwrap().unwrap();
        let mut data = Vec::new();
        let err = r.data().read_to_end(&mut data).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        // a stream that ends at a member boundary without the end blocks
        let mut buf = Vec::new();
        write_header(&mut buf, &EntryHeader { size: 0, ..e }).unwrap();
        let mut r = TarReader::new(&buf[..]);
        r.next_member().unwrap().unwrap();
        assert!(matches!(r.next_member(), Err(Error::BadInput(_))));
    }
}
