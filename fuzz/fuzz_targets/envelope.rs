//! Object envelopes (docs/FORMAT.md, "Object envelope") and the compressed
//! payload inside: what `Repository::read_blob` does to bytes from a pack.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use strata::compress::{MAX_DECOMPRESSED, decompress};
use strata::crypto::ObjectType;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let ty = ObjectType::from_u8(1 + (sel >> 2) % 6).expect("type");
    let id = [sel; 32];
    // the raw bytes as an envelope of each kind: rejected, never a panic
    let s = &common::sealers()[(sel & 3) as usize];
    if let Ok(p) = s.open(ty, &id, rest.to_vec(), &|| "fuzz".into()) {
        assert!(p.len() < rest.len(), "an opened envelope is smaller");
    }
    // the bytes as the payload of an authentic envelope: decompression
    let env = common::plain().seal(ty, &id, rest).expect("seal");
    let payload = common::plain()
        .open(ty, &id, env, &|| "fuzz".into())
        .expect("own envelope opens");
    assert_eq!(payload, rest);
    if let Ok(out) = decompress(payload) {
        assert!(out.len() <= MAX_DECOMPRESSED);
    }
});
