//! The wire protocol between a client and `strata serve` (docs/PROTOCOL.md):
//! length-prefixed MessagePack frames over any byte stream (an SSH channel,
//! or a pipe in tests).

use crate::backend::{FileInfo, FileKind, Space};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

pub const PROTOCOL_MAGIC: &str = "strata-serve";
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest frame either side accepts: a 64 MiB pack plus envelope. A peer
/// announcing more is disconnected before anything is allocated.
pub const MAX_FRAME: u32 = 64 * 1024 * 1024 + 64 * 1024;
/// The largest pack a remote repository may use (it must fit in a frame).
pub const MAX_REMOTE_PACK: u32 = 64 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Config,
    Key,
    Pack,
    Index,
    Manifest,
    Lock,
}

impl From<FileKind> for Kind {
    fn from(k: FileKind) -> Self {
        match k {
            FileKind::Config => Kind::Config,
            FileKind::Key => Kind::Key,
            FileKind::Pack => Kind::Pack,
            FileKind::Index => Kind::Index,
            FileKind::Manifest => Kind::Manifest,
            FileKind::Lock => Kind::Lock,
        }
    }
}

impl From<Kind> for FileKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::Config => FileKind::Config,
            Kind::Key => FileKind::Key,
            Kind::Pack => FileKind::Pack,
            Kind::Index => FileKind::Index,
            Kind::Manifest => FileKind::Manifest,
            Kind::Lock => FileKind::Lock,
        }
    }
}

/// First frame of the client.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hello {
    pub magic: String,
    pub version: u32,
    /// Repository path as the client wrote it (relative: to the server
    /// user's home directory).
    pub path: String,
    /// The client wants to create the repository (`init`).
    pub create: bool,
}

/// The server's answer to `Hello`: what it will allow.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Welcome {
    pub magic: String,
    pub version: u32,
    pub server: String,
    pub append_only: bool,
    pub read_only: bool,
    pub quota: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Create,
    List {
        kind: Kind,
    },
    Read {
        kind: Kind,
        name: String,
    },
    ReadRange {
        kind: Kind,
        name: String,
        offset: u64,
        len: u32,
    },
    Write {
        kind: Kind,
        name: String,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    Delete {
        kind: Kind,
        name: String,
    },
    Exists {
        kind: Kind,
        name: String,
    },
    Space,
    RemoveStaleTemporaries {
        older_than_secs: u64,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    #[serde(flatten)]
    pub op: Op,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireFile {
    pub name: String,
    pub size: u64,
    pub modified: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Payload {
    Done,
    Bytes {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    Files {
        files: Vec<WireFile>,
    },
    Flag {
        value: bool,
    },
    Space {
        total: u64,
        free: u64,
    },
    Count {
        n: u64,
    },
}

/// Error classes, so the client can rebuild a meaningful local error.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    NotFound,
    AlreadyExists,
    Denied,
    QuotaExceeded,
    DiskFull,
    NotARepository,
    RepositoryExists,
    Invalid,
    Io,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RemoteError {
    pub code: ErrorCode,
    pub message: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Response {
    pub id: u64,
    pub result: std::result::Result<Payload, RemoteError>,
}

impl From<&FileInfo> for WireFile {
    fn from(f: &FileInfo) -> Self {
        Self {
            name: f.name.clone(),
            size: f.size,
            modified: f.modified,
        }
    }
}

impl From<WireFile> for FileInfo {
    fn from(f: WireFile) -> Self {
        Self {
            name: f.name,
            size: f.size,
            modified: f.modified,
        }
    }
}

impl From<Space> for Payload {
    fn from(s: Space) -> Self {
        Payload::Space {
            total: s.total,
            free: s.free,
        }
    }
}

/// Writes one frame: u32 LE length, then the MessagePack body.
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> std::io::Result<()> {
    let body = rmp_serde::to_vec_named(msg).map_err(std::io::Error::other)?;
    if body.len() > MAX_FRAME as usize {
        return Err(std::io::Error::other(format!(
            "frame of {} bytes exceeds the protocol limit",
            body.len()
        )));
    }
    w.write_all(&(body.len() as u32).to_le_bytes())?;
    w.write_all(&body)?;
    w.flush()
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(Error::io("reading from the connection", e)),
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(Error::invalid(format!(
            "peer sent a frame of {len} bytes, more than the limit of {MAX_FRAME}"
        )));
    }
    // Memory grows with the bytes that arrive, not with what the peer
    // announced: a length prefix alone cannot make us allocate 64 MiB.
    let mut body = Vec::with_capacity((len as usize).min(1 << 20));
    let got = Read::take(&mut *r, len as u64)
        .read_to_end(&mut body)
        .map_err(|e| Error::io("reading from the connection", e))?;
    if got != len as usize {
        return Err(Error::io(
            "reading from the connection",
            std::io::ErrorKind::UnexpectedEof.into(),
        ));
    }
    rmp_serde::from_slice(&body)
        .map(Some)
        .map_err(|e| Error::invalid(format!("malformed protocol frame: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_frames_are_refused() {
        let req = Request {
            id: 7,
            op: Op::Write {
                kind: Kind::Pack,
                name: "ab".into(),
                data: vec![1, 2, 3],
            },
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &req).unwrap();
        let back: Request = read_frame(&mut &buf[..]).unwrap().unwrap();
        assert_eq!(back, req);
        let mut huge = (MAX_FRAME + 1).to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        assert!(read_frame::<Request>(&mut &huge[..]).is_err());
        assert!(read_frame::<Request>(&mut &[][..]).unwrap().is_none());
    }
}
