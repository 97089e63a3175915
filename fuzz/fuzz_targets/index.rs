//! Index files (docs/FORMAT.md, "Index files"), after opening: what every
//! repository open reads for each index delta.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::repo::index::{Index, decode, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(packs) = decode(data, "fuzz") {
        // what decodes re-encodes to the same bytes (after the compression byte)
        assert_eq!(&encode(&packs)[1..], data);
        let mut index = Index::default();
        for (pack, entries) in &packs {
            index.add_pack(*pack, entries);
        }
        assert!(index.pack_count() <= packs.len());
    }
});
