//! Runs `sente-load smoke`: every scenario at tiny sizes against the sente-rs bench server
//! and the raw-ws peer. It checks that everything connects, replies, pushes and reconnects;
//! it asserts nothing about speed.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn smoke_mode_passes() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sente-load"))
        .arg("smoke")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sente-load");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for sente-load") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("sente-load smoke did not finish within 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    assert!(
        status.success(),
        "sente-load smoke failed ({status}):\n{out}\n{err}"
    );
    assert!(
        out.contains("trials passed, 0 failed"),
        "unexpected output:\n{out}"
    );
}
