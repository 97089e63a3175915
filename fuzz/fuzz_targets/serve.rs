//! `strata serve` fed arbitrary bytes as its input stream: frame lengths,
//! MessagePack bodies, paths and file names, every operation, against a
//! real (temporary) repository directory it is restricted to. And the
//! client's side: replies from a hostile server.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::backend::remote::proto::{Hello, RemoteError, Request, Response, Welcome, read_frame};
use strata::backend::remote::server::{ServeOptions, serve};

fuzz_target!(|data: &[u8]| {
    // client side: the replies it decodes
    let mut r = data;
    let _ = read_frame::<std::result::Result<Welcome, RemoteError>>(&mut r);
    while let Ok(Some(_)) = read_frame::<Response>(&mut r) {}
    // server side: a fresh directory per input, so inputs are independent
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("repo")).expect("mkdir");
    let opts = ServeOptions {
        restrict_to_paths: vec![dir.path().to_path_buf()],
        quota: Some(1 << 20),
        ..Default::default()
    };
    let mut out = Vec::new();
    let _ = serve(&opts, data, &mut out);
    let mut r = data;
    let _ = read_frame::<Hello>(&mut r);
    let _ = read_frame::<Request>(&mut r);
    // nothing escapes the directory
    assert!(
        !dir.path()
            .parent()
            .expect("parent")
            .join("escaped")
            .exists()
    );
});
