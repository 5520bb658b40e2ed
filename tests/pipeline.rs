//! Pipelined commands to many nodes come back in the order they were sent.

mod common;
use common::{Cluster, TestProxy};
use redis::Value;

#[test]
fn thousand_mixed_commands_keep_their_order() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut con = proxy.conn();
    let key = |i: usize| format!("pipe:{i}");
    let mut pipe = redis::pipe();
    let mut expected = Vec::new();
    let mut counters = [0i64; 13];
    for i in 0..1000 {
        match i % 5 {
            0 => {
                pipe.cmd("SET").arg(key(i)).arg(i);
                expected.push(Value::Okay);
            }
            1 => {
                pipe.cmd("GET").arg(key(i - 1));
                expected.push(Value::BulkString((i - 1).to_string().into_bytes()));
            }
            2 => {
                counters[i % 13] += 1;
                pipe.cmd("INCR").arg(format!("ctr:{}", i % 13));
                expected.push(Value::Int(counters[i % 13]));
            }
            3 => {
                pipe.cmd("MGET")
                    .arg(key(i - 3))
                    .arg(key(i - 2))
                    .arg(key(i + 1000));
                expected.push(Value::Array(vec![
                    Value::BulkString((i - 3).to_string().into_bytes()),
                    Value::Nil,
                    Value::Nil,
                ]));
            }
            _ => {
                pipe.cmd("ECHO").arg(i);
                expected.push(Value::BulkString(i.to_string().into_bytes()));
            }
        }
    }
    let got: Vec<Value> = pipe.query(&mut con).expect("pipeline");
    assert_eq!(got.len(), 1000);
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "reply #{i}");
    }
}

#[test]
fn many_clients_pipelining_at_once_each_see_their_own_order() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let mut con = proxy.conn();
            std::thread::spawn(move || {
                for round in 0..20 {
                    let mut pipe = redis::pipe();
                    for i in 0..50 {
                        pipe.cmd("SET")
                            .arg(format!("c{t}:{i}"))
                            .arg(round * 100 + i)
                            .ignore();
                        pipe.cmd("GET").arg(format!("c{t}:{i}"));
                    }
                    let got: Vec<i64> = pipe.query(&mut con).expect("pipeline");
                    let want: Vec<i64> = (0..50).map(|i| round * 100 + i).collect();
                    assert_eq!(got, want);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
}

/// Split commands (MSET, MGET, DEL over several slots) and single-node commands on the same
/// keys, in one pipeline: each sees the writes of those before it.
#[test]
fn split_and_single_node_commands_on_the_same_keys_keep_their_order() {
    let cluster = Cluster::start(3, 0);
    let proxy = TestProxy::start(&cluster);
    let mut con = proxy.conn();
    let mut pipe = redis::pipe();
    let mut expected = Vec::new();
    let bulk = |s: String| Value::BulkString(s.into_bytes());
    for i in 0..300 {
        let (a, b) = (format!("order:a:{i}"), format!("order:b:{i}"));
        pipe.cmd("MSET").arg(&a).arg(i).arg(&b).arg(i);
        expected.push(Value::Okay);
        pipe.cmd("GET").arg(&a);
        expected.push(bulk(i.to_string()));
        pipe.cmd("SET").arg(&b).arg("x");
        expected.push(Value::Okay);
        pipe.cmd("MGET").arg(&a).arg(&b);
        expected.push(Value::Array(vec![bulk(i.to_string()), bulk("x".into())]));
        pipe.cmd("DEL").arg(&a).arg(&b);
        expected.push(Value::Int(2));
        pipe.cmd("EXISTS").arg(&b);
        expected.push(Value::Int(0));
    }
    let got: Vec<Value> = pipe.query(&mut con).expect("pipeline");
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "reply #{i}");
    }
}
