//! Compression of tar streams: detected by magic bytes on import, chosen by
//! file extension or `--tar-filter` on export.

use crate::error::{Error, Result};
use std::io::{self, BufRead, Read, Write};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TarCompression {
    None,
    Gzip(u32),
    Zstd(i32),
    Xz(u32),
}

impl TarCompression {
    /// `none`, `gzip[,L]`, `zstd[,L]`, `xz[,L]`; borg's filter commands
    /// (`gzip -9`, `zstd -19`, `xz`, `cat`) mean the same.
    pub fn parse(spec: &str) -> Result<Self> {
        let spec = spec.trim();
        let (name, level) = match spec.split_once([',', ' ']) {
            Some((n, l)) => (n, Some(l.trim().trim_start_matches('-'))),
            None => (spec, None),
        };
        let level = |default: u32, max: u32| -> Result<u32> {
            match level {
                None | Some("") => Ok(default),
                Some(l) => l
                    .parse::<u32>()
                    .ok()
                    .filter(|&v| v <= max)
                    .ok_or_else(|| bad(spec)),
            }
        };
        Ok(match name {
            "none" | "cat" => TarCompression::None,
            "gzip" | "gz" => TarCompression::Gzip(level(6, 9)?),
            "zstd" | "zst" => TarCompression::Zstd(level(3, 22)? as i32),
            "xz" => TarCompression::Xz(level(6, 9)?),
            _ => return Err(bad(spec)),
        })
    }

    /// By the name of the output file: `.tar.gz`/`.tgz`, `.tar.zst`/
    /// `.tzst`, `.tar.xz`/`.txz`; anything else (and `-`) is plain.
    pub fn from_file_name(name: &str) -> Self {
        let n = name.to_ascii_lowercase();
        if n.ends_with(".gz") || n.ends_with(".tgz") {
            TarCompression::Gzip(6)
        } else if n.ends_with(".zst") || n.ends_with(".tzst") {
            TarCompression::Zstd(3)
        } else if n.ends_with(".xz") || n.ends_with(".txz") {
            TarCompression::Xz(6)
        } else {
            TarCompression::None
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            TarCompression::None => "none",
            TarCompression::Gzip(_) => "gzip",
            TarCompression::Zstd(_) => "zstd",
            TarCompression::Xz(_) => "xz",
        }
    }
}

fn bad(spec: &str) -> Error {
    Error::invalid(format!(
        "--tar-filter `{spec}`: use auto, none, gzip[,0-9], zstd[,1-22] or xz[,0-9]"
    ))
}

/// Looks at the first bytes of `input` and returns the matching decoder.
pub fn decoder<'a>(
    mut input: impl BufRead + Send + 'a,
) -> Result<(Box<dyn Read + Send + 'a>, TarCompression)> {
    let head = input
        .fill_buf()
        .map_err(|e| Error::io("reading the tar input", e))?
        .to_vec();
    let starts = |m: &[u8]| head.starts_with(m);
    Ok(if starts(&[0x1f, 0x8b]) {
        (
            Box::new(flate2::bufread::MultiGzDecoder::new(input)),
            TarCompression::Gzip(6),
        )
    } else if starts(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let d = zstd::stream::read::Decoder::with_buffer(input)
            .map_err(|e| Error::io("starting the zstd decoder", e))?;
        (Box::new(d), TarCompression::Zstd(3))
    } else if starts(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        (
            Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(input)),
            TarCompression::Xz(6),
        )
    } else if starts(b"BZh") {
        return Err(Error::BadInput(
            "the input is bzip2-compressed, which strata does not read: use `bzip2 -dc FILE | strata import-tar REPO::NAME -`".into(),
        ));
    } else {
        (Box::new(input), TarCompression::None)
    })
}

/// A compressing writer that must be finished (trailers, checksums).
pub trait FinishWrite: Write + Send {
    fn finish_stream(self: Box<Self>) -> io::Result<()>;
}

struct Plain<W: Write + Send>(W);

impl<W: Write + Send> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write + Send> FinishWrite for Plain<W> {
    fn finish_stream(mut self: Box<Self>) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write + Send> FinishWrite for flate2::write::GzEncoder<W> {
    fn finish_stream(self: Box<Self>) -> io::Result<()> {
        self.finish()?.flush()
    }
}

impl<W: Write + Send> FinishWrite for zstd::stream::write::Encoder<'static, W> {
    fn finish_stream(self: Box<Self>) -> io::Result<()> {
        self.finish()?.flush()
    }
}

impl<W: Write + Send> FinishWrite for liblzma::write::XzEncoder<W> {
    fn finish_stream(self: Box<Self>) -> io::Result<()> {
        self.finish()?.flush()
    }
}

pub fn encoder<W: Write + Send + 'static>(
    out: W,
    c: TarCompression,
) -> Result<Box<dyn FinishWrite>> {
    Ok(match c {
        TarCompression::None => Box::new(Plain(out)),
        TarCompression::Gzip(l) => Box::new(flate2::write::GzEncoder::new(
            out,
            flate2::Compression::new(l),
        )),
        TarCompression::Zstd(l) => Box::new(
            zstd::stream::write::Encoder::new(out, l)
                .map_err(|e| Error::io("starting the zstd encoder", e))?,
        ),
        TarCompression::Xz(l) => Box::new(liblzma::write::XzEncoder::new(out, l)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_and_extensions() {
        assert_eq!(
            TarCompression::parse("gzip -9").unwrap(),
            TarCompression::Gzip(9)
        );
        assert_eq!(
            TarCompression::parse("zstd,19").unwrap(),
            TarCompression::Zstd(19)
        );
        assert_eq!(TarCompression::parse("xz").unwrap(), TarCompression::Xz(6));
        assert!(TarCompression::parse("bzip2").is_err());
        assert!(TarCompression::parse("gzip,12").is_err());
        assert_eq!(
            TarCompression::from_file_name("a.TGZ"),
            TarCompression::Gzip(6)
        );
        assert_eq!(TarCompression::from_file_name("-"), TarCompression::None);
    }

    #[test]
    fn every_encoder_is_detected_and_decoded() {
        for c in [
            TarCompression::None,
            TarCompression::Gzip(1),
            TarCompression::Zstd(1),
            TarCompression::Xz(1),
        ] {
            let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
            struct Sink(std::sync::mpsc::Sender<Vec<u8>>);
            impl Write for Sink {
                fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                    let _ = self.0.send(b.to_vec());
                    Ok(b.len())
                }
                fn flush(&mut self) -> io::Result<()> {
                    Ok(())
                }
            }
            let mut e = encoder(Sink(tx), c).unwrap();
            e.write_all(&b"ustar-ish payload ".repeat(1000)).unwrap();
            e.finish_stream().unwrap();
            let bytes: Vec<u8> = rx.try_iter().flatten().collect();
            let (mut d, found) = decoder(&bytes[..]).unwrap();
            assert_eq!(found.name(), c.name());
            let mut back = Vec::new();
            d.read_to_end(&mut back).unwrap();
            assert_eq!(back, b"ustar-ish payload ".repeat(1000));
        }
    }
}
