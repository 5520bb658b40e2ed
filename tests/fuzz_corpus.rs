//! Replays the fuzz targets' regression corpus (`fuzz/seeds/`) through the same checks the
//! fuzzer runs (`slotproxy::fuzzing`), so that every input that once broke a parser, and every
//! seed, is checked by each `cargo test` on stable Rust. The router check uses the command
//! table of a real redis-server, as the proxy does.

mod common;

use common::Standalone;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// Every input of one target's corpus, with its file name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let bytes = std::fs::read(&path).expect("corpus file");
            (path.display().to_string(), bytes)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{} is empty", dir.display());
    inputs
}

/// Runs `check` on each input, naming the input that fails.
fn replay(target: &str, check: impl Fn(&[u8])) {
    for (name, input) in corpus(target) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&input)));
        assert!(outcome.is_ok(), "{target}: {name} fails its check");
    }
}

#[test]
fn request_decoder_corpus() {
    replay("request_decoder", slotproxy::fuzzing::request_decoder);
}

#[test]
fn reply_scanner_corpus() {
    replay("reply_scanner", slotproxy::fuzzing::reply_scanner);
}

/// The raw `COMMAND` reply of the server at `addr`, read until it is complete.
fn command_reply(addr: std::net::SocketAddr) -> Vec<u8> {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(b"COMMAND\r\n").expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reply = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    while !matches!(slotproxy::protocol::scan::frame_len(&reply), Ok(Some(_))) {
        assert!(
            Instant::now() < deadline,
            "COMMAND reply incomplete after 10 s"
        );
        let n = stream.read(&mut buf).expect("read COMMAND reply");
        assert!(n > 0, "the server closed before the reply was complete");
        reply.extend_from_slice(&buf[..n]);
    }
    reply
}

#[test]
fn command_router_corpus_with_a_real_command_table() {
    let server = Standalone::start();
    let addr = server.node.addr().parse().expect("node address");
    let reply = command_reply(addr);
    let table = slotproxy::fuzzing::command_table(Some(&reply));
    assert!(table.len() > 200, "COMMAND gave {} commands", table.len());
    replay("command_router", |input| {
        slotproxy::fuzzing::command_router(&table, input)
    });
}
