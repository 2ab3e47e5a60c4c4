//! The query-string / urlencoded-form parser of the server (`crates/sente/src/params.rs`, which
//! has no dependencies, included as a module): never panics, never keeps more fields than the cap.
#![no_main]

#[path = "../../crates/sente/src/params.rs"]
#[allow(dead_code, unreachable_pub)]
mod params;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for max in [0, 1, 64] {
        if let Ok(p) = params::Params::parse(&text, max) {
            assert!(p.iter().count() <= max);
        }
    }
    let _ = params::cookie(&text, "sid");
});
