//! The items stream of an archive (MessagePack items, concatenated), as
//! `list`, `extract`, `diff` and `mount` read it, including the path
//! normalisation extraction applies to each item.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::archive::item::read_item;

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    // every item consumes at least one byte, so this ends
    while !r.is_empty() {
        let before = r.len();
        match read_item(&mut r) {
            Ok(item) => {
                let _ = item.mode_string();
                let _ = item.path_lossy();
                let _ = strata::ops::tar::import::normalize(&item.path);
            }
            Err(_) => break,
        }
        assert!(r.len() < before);
    }
});
