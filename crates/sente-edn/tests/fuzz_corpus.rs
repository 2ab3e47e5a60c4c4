//! Runs every seed of the `edn_read` fuzz target through the same checks as the target, so the
//! corpus (including inputs that once crashed) stays honest in ordinary `cargo test`.

use sente_edn::{ReadOptions, read, read_all, to_edn_string};

#[test]
fn edn_read_corpus_seeds_round_trip() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/edn_read");
    let opts = ReadOptions::default();
    let mut n = 0;
    for entry in std::fs::read_dir(&dir)
        .expect("fuzz corpus present")
        .flatten()
    {
        let bytes = std::fs::read(entry.path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(v) = read(&text, &opts) {
            let printed = to_edn_string(&v);
            let again = read(&printed, &opts)
                .unwrap_or_else(|e| panic!("{:?}: printed {printed:?} fails: {e}", entry.path()));
            if !printed.contains("##NaN") {
                assert_eq!(again, v, "{:?}", entry.path());
            }
        }
        let _ = read_all(&text, &opts);
        n += 1;
    }
    assert!(n >= 5, "expected the seed corpus, found {n} files");
}
