//! A TCP relay the tests control, put between the proxy and one node to make network faults
//! on loopback without root: `pause` stops moving bytes both ways while keeping the
//! connections open (a blackhole: nothing is lost, as TCP would retransmit, it just does not
//! arrive), `cut` closes every connection and refuses new ones (a partition the kernel
//! reports), `heal` undoes either.

use parking_lot::Mutex;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
struct Switches {
    paused: AtomicBool,
    cut: AtomicBool,
    stopped: AtomicBool,
    streams: Mutex<Vec<TcpStream>>,
}

/// A relay from a free loopback port to `target`.
pub struct Relay {
    /// Where clients connect.
    pub port: u16,
    switches: Arc<Switches>,
}

impl Relay {
    /// Starts relaying from a free port to `target`.
    pub fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("relay addr").port();
        let switches = Arc::new(Switches::default());
        let shared = switches.clone();
        std::thread::spawn(move || accept_loop(listener, target, shared));
        Relay { port, switches }
    }

    /// Stops moving bytes; connections stay open and hold what they carry.
    pub fn pause(&self) {
        self.switches.paused.store(true, Ordering::SeqCst);
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.switches.cut.store(true, Ordering::SeqCst);
        for stream in self.switches.streams.lock().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Moves bytes again and accepts connections.
    pub fn heal(&self) {
        self.switches.cut.store(false, Ordering::SeqCst);
        self.switches.paused.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.switches.stopped.store(true, Ordering::SeqCst);
        self.cut();
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, switches: Arc<Switches>) {
    while !switches.stopped.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((client, _)) => client,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        if switches.cut.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect(target) else {
            continue;
        };
        let _ = client.set_nonblocking(false);
        let mut streams = switches.streams.lock();
        for stream in [&client, &server] {
            if let Ok(clone) = stream.try_clone() {
                streams.push(clone);
            }
        }
        drop(streams);
        for (from, to) in [(&client, &server), (&server, &client)] {
            let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                continue;
            };
            let switches = switches.clone();
            std::thread::spawn(move || pump(from, to, switches));
        }
    }
}

/// Copies `from` to `to` until either side closes; while paused, bytes read are held back
/// and nothing more is read.
fn pump(mut from: TcpStream, mut to: TcpStream, switches: Arc<Switches>) {
    let mut buf = [0u8; 16 * 1024];
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let hold = || {
        while switches.paused.load(Ordering::SeqCst) && !switches.cut.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    loop {
        hold();
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        // A read that began before the pause must not slip through.
        hold();
        if switches.cut.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
