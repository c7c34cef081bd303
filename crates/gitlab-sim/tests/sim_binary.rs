//! The `gitlab-sim` binary starts, serves its group's projects and counts what it served.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_gitlab-sim");

/// Kills the simulator however the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain HTTP/1.0 GET; returns status line and body.
fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the simulator");
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nPRIVATE-TOKEN: t0k\r\n\r\n");
    s.write_all(req.as_bytes()).expect("send");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read");
    let (head, body) = reply.split_once("\r\n\r\n").expect("a head and a body");
    (
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    )
}

#[test]
fn starts_serves_the_group_and_counts_requests() {
    let child = Command::new(BIN)
        .args([
            "--projects",
            "5",
            "--busy-share",
            "0.2",
            "--jobs-per-min",
            "10",
        ])
        .args(["--history", "600", "--duration", "120", "--token", "t0k"])
        .args(["--group", "g"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start gitlab-sim");
    let mut sim = Running(child);
    let stdout = sim.0.stdout.take().expect("piped stdout");
    let mut first = String::new();
    let mut lines = BufReader::new(stdout);
    lines.read_line(&mut first).expect("the first line");
    // Keep reading: the simulator prints more, and a closed pipe would make its next
    // `println!` panic (EPIPE), killing it mid-test.
    std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
    let addr = first
        .trim()
        .strip_prefix("gitlab-sim listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();

    let (status, body) = get(&addr, "/api/v4/groups/g/projects?per_page=100");
    assert!(status.contains(" 200 "), "{status}");
    let projects: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(projects.as_array().map(Vec::len), Some(5), "{body}");
    let (status, _) = get(&addr, "/api/v4/projects/1/jobs?per_page=100");
    assert!(status.contains(" 200 "), "{status}");

    let (status, body) = get(&addr, "/__sim/stats");
    assert!(status.contains(" 200 "), "{status}");
    let stats: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(stats["total"], 2, "{body}");
    assert_eq!(stats["group_projects"], 1, "{body}");
    assert_eq!(stats["jobs"], 1, "{body}");
}
