//! Micro-benchmarks of the pure functions every command goes through: request decoding,
//! command lookup, key hashing, reply framing and reply encoding.
//!
//! `cargo bench --bench hot_paths` measures; `cargo test --all-targets` (and so `.ci/run`)
//! runs each once as a test, without timing, so they cannot rot.

use bytes::{Bytes, BytesMut};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use redis_protocol::resp2::types::BytesFrame;
use slotproxy::cluster::key_slot;
use slotproxy::protocol::command::{CommandTable, Lookup};
use slotproxy::protocol::reply;
use slotproxy::protocol::request::{encode_command, Limits, RequestDecoder};
use slotproxy::protocol::scan::frame_len;
use tokio_util::codec::Decoder;

fn limits() -> Limits {
    Limits {
        max_inline: 64 * 1024,
        max_bulk: 512 * 1024 * 1024,
        max_args: 1024 * 1024,
        max_request: 512 * 1024 * 1024,
        unauthenticated: false,
    }
}

/// A `COMMAND` reply with the entries the benchmarks look up.
fn command_table() -> CommandTable {
    let entry = |name: &str, arity: i64, flag: &str, first: i64, last: i64, step: i64| {
        BytesFrame::Array(vec![
            BytesFrame::BulkString(Bytes::copy_from_slice(name.as_bytes())),
            BytesFrame::Integer(arity),
            BytesFrame::Array(vec![BytesFrame::SimpleString(Bytes::copy_from_slice(
                flag.as_bytes(),
            ))]),
            BytesFrame::Integer(first),
            BytesFrame::Integer(last),
            BytesFrame::Integer(step),
        ])
    };
    let reply = BytesFrame::Array(vec![
        entry("get", 2, "readonly", 1, 1, 1),
        entry("set", -3, "write", 1, 1, 1),
        entry("mget", -2, "readonly", 1, -1, 1),
        entry("mset", -3, "write", 1, -1, 2),
    ]);
    CommandTable::from_command_reply(&reply::encode(&reply)).expect("table")
}

fn decode(c: &mut Criterion) {
    let one = encode_command(&["GET", "key:000000042"]);
    let mut pipeline = BytesMut::new();
    for _ in 0..16 {
        pipeline.extend_from_slice(&one);
    }
    let pipeline = pipeline.freeze();
    c.bench_function("decode 16 pipelined GETs", |b| {
        b.iter(|| {
            let mut decoder = RequestDecoder::new(limits());
            let mut buf = BytesMut::from(&pipeline[..]);
            let mut n = 0;
            while let Ok(Some(request)) = decoder.decode(&mut buf) {
                black_box(&request);
                n += 1;
            }
            assert_eq!(n, 16);
        })
    });
}

fn lookup(c: &mut Criterion) {
    let table = command_table();
    let args = vec![Bytes::from_static(b"GET"), Bytes::from_static(b"key:1")];
    c.bench_function("command lookup (GET)", |b| {
        b.iter(|| matches!(table.lookup(black_box(&args)), Lookup::Found(_)))
    });
}

fn slots(c: &mut Criterion) {
    c.bench_function("key_slot plain key", |b| {
        b.iter(|| key_slot(black_box(b"key:000000042")))
    });
    c.bench_function("key_slot hash tag", |b| {
        b.iter(|| key_slot(black_box(b"{user1000}.following")))
    });
}

fn replies(c: &mut Criterion) {
    let bulk = reply::bulk(Bytes::from(vec![b'x'; 64]));
    let array = reply::array_of_raw(&vec![bulk.clone(); 10]);
    c.bench_function("frame a 64-byte bulk reply", |b| {
        b.iter(|| frame_len(black_box(&bulk)))
    });
    c.bench_function("frame a 10-element array reply", |b| {
        b.iter(|| frame_len(black_box(&array)))
    });
    c.bench_function("encode an integer reply", |b| {
        b.iter(|| reply::integer(black_box(12345)))
    });
    let elements = vec![bulk; 10];
    c.bench_function("join 10 replies into an array", |b| {
        b.iter(|| reply::array_of_raw(black_box(&elements)))
    });
}

criterion_group!(hot_paths, decode, lookup, slots, replies);
criterion_main!(hot_paths);
