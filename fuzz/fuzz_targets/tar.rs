//! The tar importer's reader (src/ops/tar/format.rs): headers, GNU long
//! names, pax records, base-256 numbers, sparse maps, member data; and the
//! path normalisation `import-tar` applies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Read;
use strata::ops::tar::format::TarReader;
use strata::ops::tar::import::normalize;

fuzz_target!(|data: &[u8]| {
    let mut r = TarReader::new(data);
    let mut buf = [0u8; 4096];
    for _ in 0..10_000 {
        match r.next_member() {
            Ok(Some(m)) => {
                let _ = normalize(&m.path);
                let _ = normalize(&m.link);
                let mut d = r.data();
                let mut got = 0u64;
                loop {
                    match d.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n as u64,
                    }
                }
                assert!(got <= m.size);
            }
            Ok(None) => {
                let _ = r.drain();
                break;
            }
            Err(_) => break,
        }
    }
    assert!(r.position() <= data.len() as u64);
});
