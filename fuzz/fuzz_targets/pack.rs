//! Pack files: trailer, header length, sealed header, header entries
//! (docs/FORMAT.md, "Pack files"), as `check` and index rebuilds read them.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use strata::crypto::ObjectType;
use strata::repo::pack::{HEADER_AAD_ID, PACK_MAGIC, read_header};

fuzz_target!(|data: &[u8]| {
    // the raw bytes as a whole pack
    let _ = read_header(common::plain(), data, "fuzz");
    // the bytes as a header plaintext after `n` blob bytes, in an authentic
    // envelope with a correct trailer: reaches the entry parser
    if data.len() < 2 {
        return;
    }
    let n = u16::from_le_bytes([data[0], data[1]]) as usize;
    let header = &data[2..];
    let mut pack = vec![0u8; n];
    let sealed = common::plain()
        .seal(ObjectType::PackHeader, &HEADER_AAD_ID, header)
        .expect("seal");
    pack.extend_from_slice(&sealed);
    pack.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
    pack.extend_from_slice(PACK_MAGIC);
    if let Ok(entries) = read_header(common::plain(), &pack, "fuzz") {
        let mut end = 0u64;
        for e in &entries {
            assert_eq!(e.offset as u64, end, "entries are contiguous");
            end += e.length as u64;
        }
        assert_eq!(end, n as u64, "entries cover the blob bytes exactly");
    }
});
