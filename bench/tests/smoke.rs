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

/// Whether something accepts TCP connections at `addr` (else the cluster smoke is skipped).
fn reachable(addr: &str) -> bool {
    addr.parse()
        .is_ok_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

/// `sente-load cluster` at tiny sizes (2 nodes, 20 clients, 10 pushes/s, 1 s) on every
/// cluster target (its default targets): every push reaches every client through the backplane. Needs Redis on
/// 127.0.0.1:6379 and NATS on 127.0.0.1:4222 (skipped with a message otherwise); a few
/// seconds.
#[test]
fn cluster_smoke_delivers_everything() {
    if !reachable("127.0.0.1:6379") || !reachable("127.0.0.1:4222") {
        eprintln!("skipped: Redis (127.0.0.1:6379) or NATS (127.0.0.1:4222) is not reachable");
        return;
    }
    let dir = std::env::temp_dir().join(format!("sente-load-cluster-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_sente-load"))
        .args([
            "cluster",
            "--nodes",
            "2",
            "--clients",
            "20",
            "--rate",
            "10",
            "--secs",
            "1",
            "--warmup",
            "0.5",
            "--rounds",
            "1",
            "--out",
        ])
        .arg(&dir)
        .stdin(Stdio::null())
        .output()
        .expect("run sente-load cluster");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sente-load cluster failed ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let json = std::fs::read_dir(&dir)
        .expect("results directory")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-cluster.json"))
        .expect("a -cluster.json result");
    let r: sente_bench::report::Results =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("read results"))
            .expect("parse results");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        r.trials.len(),
        sente_bench::cluster::ClusterTarget::ALL.len(),
        "one trial per target:\n{text}"
    );
    for t in &r.trials {
        assert!(t.error.is_none(), "{} failed: {:?}", t.target, t.error);
        let share = t.metrics.get("delivered_ratio").copied().unwrap_or(0.0);
        assert!(
            share >= 0.9,
            "{} delivered {share} of the pushes:\n{text}",
            t.target
        );
        assert!(
            t.metrics.contains_key("server_cpu_us_per_event"),
            "{}: no server CPU",
            t.target
        );
    }
}
