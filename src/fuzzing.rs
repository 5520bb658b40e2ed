//! The checks behind the fuzz targets in `fuzz/`, kept in the library so that the same code
//! also replays the committed corpus in every `cargo test` (`tests/fuzz_corpus.rs`), on stable
//! Rust and without the fuzzer.
//!
//! Each check takes arbitrary bytes, runs one hot path that client or node bytes reach, and
//! panics when an invariant breaks: a panic here is a finding. The first byte of the input
//! picks how the rest is cut into reads, so that the resumable parsers are exercised at every
//! split point.

use crate::cluster::key_slot;
use crate::protocol::command::{CommandTable, Lookup, Policy};
use crate::protocol::keyspec::KeyPositions;
use crate::protocol::request::{encode_command, Limits, RequestDecoder};
use crate::protocol::scan::{self, ReplyScanner};
use crate::proxy::action::common_slot;
use crate::proxy::fanout_batch::split_by_slot;
use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// Small limits, so that inputs of a few KiB reach every limit.
const LIMITS: Limits = Limits {
    max_inline: 256,
    max_bulk: 1024,
    max_args: 64,
    max_request: 4096,
    unauthenticated: false,
};

/// Extra read-buffer capacity the decoder may hold beyond its input (its grown buffer, twice).
const BUFFER_SLACK: usize = 64 * 1024;

/// What decoding one stream produced: the requests' arguments, then whether it ended in a
/// protocol error.
type Decoded = (Vec<Vec<Bytes>>, bool);

/// Decodes `data` fed in reads of `chunk` bytes, stopping at the first protocol error (as a
/// session does). Panics if the read buffer grows beyond what the input justifies.
fn decode_stream(data: &[u8], chunk: usize, limits: Limits) -> Decoded {
    let mut decoder = RequestDecoder::new(limits);
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(request)) => requests.push(request.args),
                Ok(None) => break,
                Err(_) => return (requests, true),
            }
            assert!(
                buf.capacity() <= data.len() + BUFFER_SLACK,
                "read buffer grew to {} bytes for {} bytes of input",
                buf.capacity(),
                data.len()
            );
        }
    }
    (requests, false)
}

/// The request decoder: no panic, limits hold, the same requests whatever the read sizes,
/// and every request survives re-encoding.
pub fn request_decoder(data: &[u8]) {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        unauthenticated: control & 0x80 != 0,
        ..LIMITS
    };
    let whole = decode_stream(input, input.len(), limits);
    let pieces = decode_stream(input, usize::from(control & 0x0f) + 1, limits);
    assert_eq!(
        whole, pieces,
        "the result depends on how the bytes were read"
    );
    for args in &whole.0 {
        assert!(args.len() <= limits.max_args, "{} arguments", args.len());
        assert!(args
            .iter()
            .all(|a| a.len() <= limits.max_bulk.max(limits.max_inline)));
        let again = decode_stream(&encode_command(args), usize::MAX, default_limits());
        assert_eq!(again, (vec![args.clone()], false), "re-encoding changed it");
    }
}

/// The default limits, which every re-encoded request of these checks is within.
fn default_limits() -> Limits {
    Limits::from_config(&crate::config::ProxySection::default())
}

/// The command router's pure part: lookup, key positions, slot checks and the split of a
/// multi-key command into per-slot parts. Every key of the command lands in exactly one part,
/// every part's keys share its slot, and each node's parts are one contiguous request.
pub fn command_router(table: &CommandTable, data: &[u8]) {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let (requests, _) = decode_stream(input, usize::from(control & 0x0f) + 1, LIMITS);
    for args in requests {
        let info = match table.lookup(&args) {
            Lookup::Found(info) => info,
            Lookup::Unknown | Lookup::UnknownSubcommand(_) | Lookup::WrongArity(_) => continue,
        };
        info.blocks(&args);
        let KeyPositions::Known(positions) = info.key_positions(&args) else {
            continue;
        };
        assert!(positions.iter().all(|&p| p > 0 && p < args.len()));
        let _ = common_slot(positions.iter().map(|&p| &args[p]));
        if !matches!(info.policy, Policy::Split(_)) || positions.len() < 2 {
            continue;
        }
        check_split(info, &args, &positions);
    }
}

/// A split command's parts carry each key once, by slot, grouped by node.
fn check_split(info: &crate::protocol::command::CommandInfo, args: &[Bytes], positions: &[usize]) {
    let span = info.legacy.step.max(1) as usize;
    let parts = split_by_slot(args, positions, span, |slot| usize::from(slot % 3));
    let mut seen = vec![0u32; positions.len()];
    let mut end = 0;
    for (i, part) in parts.list.iter().enumerate() {
        assert_eq!(part.at.start, end, "parts are not back to back");
        end = part.at.end;
        assert!(
            i == 0 || parts.list[i - 1].node <= part.node,
            "a node's parts are apart"
        );
        let decoded = decode_stream(&parts.payload(i), usize::MAX, default_limits());
        let [one] = decoded.0.as_slice() else {
            panic!("part {i} is not one command");
        };
        assert_eq!(one[0], args[0]);
        for &k in &part.keys {
            seen[k] += 1;
            assert_eq!(key_slot(&args[positions[k]]), part.slot);
        }
    }
    assert_eq!(end, parts.encoded.len());
    assert!(
        seen.iter().all(|&n| n == 1),
        "keys not split exactly once: {seen:?}"
    );
}

/// The node reply scanner and the reply readers: no panic, the same frame length whatever
/// the read sizes, and elements that are whole frames.
pub fn reply_scanner(data: &[u8]) {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let whole = scan::frame_len(input);
    let chunk = usize::from(control & 0x0f) + 1;
    let mut scanner = ReplyScanner::default();
    let mut pieces = Ok(None);
    let mut have = 0;
    while have < input.len() {
        have = (have + chunk).min(input.len());
        pieces = scanner.scan(&input[..have]);
        if !matches!(pieces, Ok(None)) {
            break;
        }
    }
    match (&whole, &pieces) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "frame length depends on the read sizes"),
        (Err(_), Err(_)) => {}
        _ => panic!("whole: {whole:?}, in pieces: {pieces:?}"),
    }
    let Ok(Some(len)) = whole else {
        return;
    };
    assert!(len <= input.len());
    let frame = Bytes::copy_from_slice(&input[..len]);
    let _ = (scan::classify(&frame), scan::is_error(&frame));
    let _ = (scan::integer(&frame), scan::string(&frame));
    for element in scan::array_elements(&frame).unwrap_or_default() {
        assert_eq!(scan::frame_len(&element).ok(), Some(Some(element.len())));
    }
}

/// The command table the router check uses: `COMMAND`'s raw reply from a real node when
/// given (panics if it does not parse: the fuzz set-up is broken), else a few commands.
pub fn command_table(command_reply: Option<&[u8]>) -> CommandTable {
    if let Some(raw) = command_reply {
        match CommandTable::from_command_reply(&Bytes::copy_from_slice(raw)) {
            Ok(table) => return table,
            Err(error) => panic!("the COMMAND reply given does not parse: {error}"),
        }
    }
    let entry = |name: &str, arity: i64, flag: &str, first: i64, last: i64, step: i64| {
        format!(
            "*6\r\n${}\r\n{name}\r\n:{arity}\r\n*1\r\n+{flag}\r\n:{first}\r\n:{last}\r\n:{step}\r\n",
            name.len()
        )
    };
    let entries = [
        entry("get", 2, "readonly", 1, 1, 1),
        entry("set", -3, "write", 1, 1, 1),
        entry("mget", -2, "readonly", 1, -1, 1),
        entry("mset", -3, "write", 1, -1, 2),
        entry("del", -2, "write", 1, -1, 1),
        entry("exists", -2, "readonly", 1, -1, 1),
        entry("ping", -1, "fast", 0, 0, 0),
    ];
    let raw = format!("*{}\r\n{}", entries.len(), entries.concat());
    match CommandTable::from_command_reply(&Bytes::from(raw)) {
        Ok(table) => table,
        Err(error) => panic!("the built-in command table does not parse: {error}"),
    }
}
