//! Finding the off-site drive at first boot, and formatting one only when
//! the node's settings consent and exactly one blank drive is there.
//! "Blank" means `wipefs` finds no signature at all (no partition table, no
//! file system, no RAID or LVM member): a drive with anything on it is
//! never touched, whatever the settings say.

use crate::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What first boot does about the drive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrivePlan {
    /// A file system with the label is there; the mount unit mounts it.
    Present(PathBuf),
    /// Format this blank device as ext4 with the label.
    Format(PathBuf),
    /// Nothing to do now; the message says why and what the person can do.
    Wait(String),
}

/// The device holding a file system labelled `label`, if any.
pub fn find_by_label(label: &str) -> Result<Option<PathBuf>> {
    // -c /dev/null: probe the devices, not blkid's cache, which may
    // remember a drive as it was before it was formatted.
    let out = Command::new("blkid")
        .args(["-c", "/dev/null", "-l", "-o", "device", "-t"])
        .arg(format!("LABEL={label}"))
        .output()
        .map_err(|e| Error::io("running blkid (util-linux) to find the drive", e))?;
    // blkid exits 2 when nothing matches.
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok((out.status.success() && !dev.is_empty()).then(|| PathBuf::from(dev)))
}

/// The signatures `wipefs` finds on a device (empty: blank).
pub fn signatures(dev: &Path) -> Result<Vec<String>> {
    let out = Command::new("wipefs")
        .args(["--no-act", "--noheadings", "--output", "TYPE,LABEL"])
        .arg(dev)
        .output()
        .map_err(|e| Error::io("running wipefs (util-linux) to look at the drive", e))?;
    if !out.status.success() {
        return Err(Error::invalid(format!(
            "cannot read {}: {}",
            dev.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect())
}

/// Whole disks on USB (the SD card and everything else are never candidates).
pub fn usb_disks(sys_block: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut disks: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            std::fs::canonicalize(e.path())
                .map(|p| p.to_string_lossy().contains("/usb"))
                .unwrap_or(false)
        })
        .map(|e| Path::new("/dev").join(e.file_name()))
        .collect();
    disks.sort();
    disks
}

/// Decides what to do about the drive. `device` restricts formatting to
/// one device; `candidates` are the USB disks otherwise.
pub fn plan(
    label: &str,
    consent: bool,
    device: Option<&Path>,
    candidates: &[PathBuf],
    present: Option<PathBuf>,
    signatures_of: &dyn Fn(&Path) -> Result<Vec<String>>,
) -> Result<DrivePlan> {
    if let Some(dev) = present {
        return Ok(DrivePlan::Present(dev));
    }
    let by_hand = format!(
        "format a drive yourself with `mkfs.ext4 -L {label} /dev/sdX` and plug it in; it is mounted when it appears"
    );
    if !consent {
        return Ok(DrivePlan::Wait(format!(
            "no drive labelled {label}: {by_hand} (or set format_blank_drive = true)"
        )));
    }
    let looked_at: Vec<PathBuf> = match device {
        Some(d) => vec![d.to_path_buf()],
        None => candidates.to_vec(),
    };
    let mut blank = Vec::new();
    let mut used = Vec::new();
    for dev in &looked_at {
        if !dev.exists() {
            continue;
        }
        let sigs = signatures_of(dev)?;
        if sigs.is_empty() {
            blank.push(dev.clone());
        } else {
            used.push(format!("{} has {}", dev.display(), sigs.join(", ")));
        }
    }
    match blank.as_slice() {
        [one] => Ok(DrivePlan::Format(one.clone())),
        [] if used.is_empty() => Ok(DrivePlan::Wait(match device {
            Some(d) => format!(
                "no drive labelled {label}, and {} is not there: plug it in and reboot",
                d.display()
            ),
            None => format!(
                "no drive labelled {label} and no blank USB drive: plug one in and reboot, or {by_hand}"
            ),
        })),
        [] => Ok(DrivePlan::Wait(format!(
            "no drive labelled {label}, and strata formats only blank drives ({}): wipe the one you mean yourself (wipefs -a) and reboot, or {by_hand}",
            used.join("; ")
        ))),
        many => Ok(DrivePlan::Wait(format!(
            "no drive labelled {label}, and {} blank drives ({}): set drive.device to the one to format",
            many.len(),
            many.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Formats a blank device as ext4 with `label`, checking again that it is
/// blank right before (it may have changed since the plan).
pub fn format(dev: &Path, label: &str) -> Result<()> {
    let sigs = signatures(dev)?;
    if !sigs.is_empty() {
        return Err(Error::invalid(format!(
            "{} is no longer blank ({}): not formatting it",
            dev.display(),
            sigs.join(", ")
        )));
    }
    // -m 0: a data drive needs no blocks reserved for root.
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0", "-L", label])
        .arg(dev)
        .output()
        .map_err(|e| Error::io("running mkfs.ext4 (e2fsprogs)", e))?;
    if !out.status.success() {
        return Err(Error::invalid(format!(
            "mkfs.ext4 {} failed: {}",
            dev.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sigs(map: &'static [(&'static str, &'static str)]) -> impl Fn(&Path) -> Result<Vec<String>> {
        move |p: &Path| {
            Ok(map
                .iter()
                .filter(|(d, _)| Path::new(d) == p)
                .map(|(_, s)| s.to_string())
                .collect())
        }
    }

    #[test]
    fn a_labelled_drive_wins() {
        let p = plan(
            "STRATA",
            true,
            None,
            &[],
            Some("/dev/sdb".into()),
            &sigs(&[]),
        )
        .unwrap();
        assert_eq!(p, DrivePlan::Present("/dev/sdb".into()));
    }

    #[test]
    fn no_consent_never_formats() {
        let p = plan(
            "STRATA",
            false,
            None,
            &["/dev/null".into()],
            None,
            &sigs(&[]),
        )
        .unwrap();
        assert!(
            matches!(p, DrivePlan::Wait(ref m) if m.contains("format_blank_drive = true")),
            "{p:?}"
        );
    }

    #[test]
    fn one_blank_drive_is_formatted_a_used_one_never() {
        // /dev/null and /dev/zero exist everywhere; they stand in for disks.
        let p = plan(
            "S",
            true,
            None,
            &["/dev/null".into(), "/dev/zero".into()],
            None,
            &sigs(&[("/dev/zero", "ext4 photos")]),
        )
        .unwrap();
        assert_eq!(p, DrivePlan::Format("/dev/null".into()));
        let p = plan(
            "S",
            true,
            Some(Path::new("/dev/zero")),
            &[],
            None,
            &sigs(&[("/dev/zero", "dos")]),
        )
        .unwrap();
        assert!(
            matches!(p, DrivePlan::Wait(ref m) if m.contains("/dev/zero has dos") && m.contains("only blank")),
            "{p:?}"
        );
    }

    #[test]
    fn two_blank_drives_are_ambiguous() {
        let p = plan(
            "S",
            true,
            None,
            &["/dev/null".into(), "/dev/zero".into()],
            None,
            &sigs(&[]),
        )
        .unwrap();
        assert!(
            matches!(p, DrivePlan::Wait(ref m) if m.contains("2 blank drives") && m.contains("drive.device")),
            "{p:?}"
        );
    }

    #[test]
    fn a_missing_device_waits() {
        let p = plan(
            "S",
            true,
            Some(Path::new("/dev/does-not-exist")),
            &[],
            None,
            &sigs(&[]),
        )
        .unwrap();
        assert!(
            matches!(p, DrivePlan::Wait(ref m) if m.contains("is not there")),
            "{p:?}"
        );
    }
}
