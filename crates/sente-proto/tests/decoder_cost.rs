//! Issue 12, finding 1: no input makes a decoder superlinear. For every packer, each hostile
//! shape in `worst_cases` must cost at most [`BUDGET`] times the CPU per byte of a plain message of
//! the same size, decoded in the same run (a ratio, so a busy machine does not fail the test).
//! Before the fix these ratios were in the hundreds to thousands.

mod worst_cases;

use sente_proto::packer;
use worst_cases::{PACKERS, WORST, decode_cpu, decoded_len, limits, plain, wire};

/// Allowed CPU per byte of a hostile input, relative to a plain one.
const BUDGET: f64 = 20.0;

/// Input size: big enough that a quadratic check shows, small enough for a debug build.
const BYTES: usize = 256 << 10;

fn check(packer_name: &str) {
    let p = packer::by_name(packer_name).unwrap();
    let limits = limits();
    let plain_wire = wire(packer_name, &plain(BYTES));
    p.unpack(&plain_wire, &limits).expect("plain input decodes");
    let per_byte = |w: &[u8]| {
        let t = decode_cpu(&*p, w, &limits);
        t.as_secs_f64() / decoded_len(packer_name, w) as f64
    };
    let mut report = Vec::new();
    let mut worst_ratio = 0f64;
    for case in WORST {
        let w = wire(packer_name, &(case.build)(BYTES));
        if let Err(e) = p.unpack(&w, &limits) {
            // edn refuses duplicates; every other outcome must be a decoded value.
            assert!(
                packer_name.starts_with("edn") && e.to_string().contains("duplicate"),
                "{packer_name} {}: {e}",
                case.name
            );
        }
        // The plain cost is re-measured next to each case, so drift in machine load cancels.
        let ratio = per_byte(&w) / per_byte(&plain_wire);
        worst_ratio = worst_ratio.max(ratio);
        report.push(format!(
            "{}: {} bytes, {ratio:.1}x plain",
            case.name,
            decoded_len(packer_name, &w)
        ));
    }
    assert!(
        worst_ratio < BUDGET,
        "{packer_name}: a hostile input costs {worst_ratio:.1}x a plain one per byte (budget \
         {BUDGET}x):\n{}",
        report.join("\n")
    );
    eprintln!(
        "{packer_name}: worst {worst_ratio:.1}x\n  {}",
        report.join("\n  ")
    );
}

#[test]
fn edn_decoder_cost_is_linear() {
    check(PACKERS[0]);
}

#[test]
fn json_decoder_cost_is_linear() {
    check(PACKERS[1]);
}

#[test]
fn transit_decoder_cost_is_linear() {
    check(PACKERS[2]);
}

#[test]
fn msgpack_decoder_cost_is_linear() {
    check(PACKERS[3]);
}

#[test]
fn edn_gzip_decoder_cost_is_linear() {
    check(PACKERS[4]);
}

#[test]
fn json_gzip_decoder_cost_is_linear() {
    check(PACKERS[5]);
}

#[test]
fn transit_gzip_decoder_cost_is_linear() {
    check(PACKERS[6]);
}

#[test]
fn msgpack_gzip_decoder_cost_is_linear() {
    check(PACKERS[7]);
}

/// The shapes decode to what they say: the equal collections collapse (or, in edn, are refused
/// as duplicates), and distinct ones stay.
#[test]
fn hostile_shapes_decode_correctly() {
    let limits = limits();
    for name in PACKERS {
        let p = packer::by_name(name).unwrap();
        for case in WORST {
            let w = wire(name, &(case.build)(8 << 10));
            let got = p.unpack(&w, &limits);
            match case.name {
                "reordered-maps"
                | "reordered-sets"
                | "nested-reordered-maps"
                | "many-duplicates" => match got {
                    Ok(sente_edn::Value::Set(s)) => assert_eq!(s.len(), 1, "{name} {}", case.name),
                    Ok(other) => panic!("{name} {}: {other:?}", case.name),
                    Err(e) => assert!(name.starts_with("edn"), "{name} {}: {e}", case.name),
                },
                "sets-of-maps" => match got {
                    Ok(sente_edn::Value::Vector(v)) => {
                        assert!(
                            v.iter()
                                .all(|s| matches!(s, sente_edn::Value::Set(s) if s.len() == 1))
                        );
                    }
                    Ok(other) => panic!("{name} {}: {other:?}", case.name),
                    Err(e) => assert!(name.starts_with("edn"), "{name} {}: {e}", case.name),
                },
                _ => {
                    let want = (case.build)(8 << 10);
                    let got = got.unwrap_or_else(|e| panic!("{name} {}: {e}", case.name));
                    if name.starts_with("json") {
                        // json is lossy for lists and string keys; the size is what matters.
                        continue;
                    }
                    assert!(got == want, "{name} {}", case.name);
                }
            }
        }
    }
}

/// The measurement in BENCHMARKS.md ("Decoder worst cases"): median CPU milliseconds per MiB of
/// decoded input for every packer and shape, at 1 MiB. Run with
/// `cargo test --release -p sente-proto --test decoder_cost -- --ignored --nocapture`.
#[test]
#[ignore = "measurement; run by hand in release"]
fn worst_case_table() {
    use std::fmt::Write as _;
    use worst_cases::thread_cpu;
    let limits = limits();
    let bytes = 1 << 20;
    let cases: Vec<(&str, sente_edn::Value)> = std::iter::once(("plain", plain(bytes)))
        .chain(WORST.iter().map(|c| (c.name, (c.build)(bytes))))
        .collect();
    println!("| shape | {} |", PACKERS.join(" | "));
    println!("|---|{}", "---:|".repeat(PACKERS.len()));
    for (case, value) in &cases {
        let mut row = format!("| {case} |");
        for name in PACKERS {
            let p = packer::by_name(name).unwrap();
            let w = wire(name, value);
            let mut runs = Vec::new();
            // Each sample: decodes until 50 ms of CPU have passed (the clock moves at ticks).
            while runs.len() < 5 {
                let (t, mut n) = (thread_cpu(), 0u32);
                let spent = loop {
                    drop(p.unpack(&w, &limits));
                    n += 1;
                    let spent = thread_cpu().saturating_sub(t).as_secs_f64();
                    if spent >= 0.05 {
                        break spent;
                    }
                };
                runs.push(spent / f64::from(n));
                if runs.iter().sum::<f64>() > 3.0 {
                    break;
                }
            }
            runs.sort_by(f64::total_cmp);
            let mib = decoded_len(name, &w) as f64 / f64::from(1 << 20);
            let _ = write!(row, " {:.1} |", runs[runs.len() / 2] * 1000.0 / mib);
        }
        println!("{row}");
    }
}
