//! Arbitrary bytes (as lossy UTF-8) into the edn reader: it must never panic, and whatever it
//! reads must print to text that reads back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sente_edn::{ReadOptions, UnknownTags, read, to_edn_string};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let opts = ReadOptions::default();
    if let Ok(v) = read(&text, &opts) {
        let printed = to_edn_string(&v);
        let again = read(&printed, &opts).expect("printed edn must read back");
        if !printed.contains("##NaN") {
            assert_eq!(again, v, "{printed}");
        }
    }
    let strict = ReadOptions { unknown_tags: UnknownTags::Error, max_depth: 8, ..ReadOptions::default() };
    let _ = read(&text, &strict);
    let _ = sente_edn::read_all(&text, &opts);
});
