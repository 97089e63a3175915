//! Manifest generations (docs/FORMAT.md, "Manifest"), after opening.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::repo::manifest::{Manifest, parse_file_name};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::decode(data, "fuzz") {
        let again = Manifest::decode(&m.encode().expect("encode"), "fuzz").expect("decode");
        assert_eq!(again, m);
    }
    if let Ok(name) = std::str::from_utf8(data) {
        let _ = parse_file_name(name);
    }
});
