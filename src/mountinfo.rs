//! The kernel's mount table (`/proc/self/mountinfo`), read by the metrics
//! (which file system holds a repository) and by `strata umount` (is this
//! a FUSE mount).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// One mounted file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub point: PathBuf,
    /// `ext4`, `fuse`, `fuse.strata`, ...
    pub fstype: String,
}

/// Every mount, in the kernel's order (a later mount on the same point is
/// on top). Empty where /proc is not mounted.
pub fn read() -> Vec<Mount> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines().filter_map(parse_line).collect()
}

/// Fields: id parent major:minor root mountpoint options ... - fstype
/// source super-options.
fn parse_line(line: &str) -> Option<Mount> {
    let point = line.split(' ').nth(4)?;
    let fstype = line.split(" - ").nth(1)?.split(' ').next()?;
    Some(Mount {
        point: PathBuf::from(OsString::from_vec(unescape(point))),
        fstype: fstype.to_string(),
    })
}

/// Mount points are octal-escaped: a space is `\040`.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push(
                    d.iter()
                        .fold(0u8, |n, c| n.wrapping_mul(8).wrapping_add(c - b'0')),
                );
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_escaped_mount_points() {
        let m = parse_line("47 27 0:41 / /tmp/a\\040b ro,nosuid - fuse r::a ro,user_id=0").unwrap();
        assert_eq!(m.point, PathBuf::from("/tmp/a b"));
        assert_eq!(m.fstype, "fuse");
        assert!(parse_line("garbage").is_none());
        assert!(read().iter().any(|m| m.point == std::path::Path::new("/")));
    }
}
