//! A tiny workload for demos and tests: an HTTP server and a client, using only
//! the standard library so that an image of it is a few files.
//!
//! `serve --port P --text T` answers every request with T and the number of
//! requests served; `fetch --url http://127.0.0.1:P/ [--interval-ms N]` fetches
//! a page every N ms and prints the body; `exit --code N` exits with N after
//! printing a line (for restart tests); `cat FILE` prints a file (for
//! secret-volume checks through exec); `ls DIR` lists a directory;
//! `udp-echo --port P` answers every datagram with `echo: ` and its bytes;
//! `open PATH [--mknod MAJ:MIN]` opens a device (making the node first);
//! `probe`, `forkbomb`, `membomb` and
//! `fill PATH` are a hostile tenant's attempts (see `attack.rs`).

#[path = "attack.rs"]
mod attack;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// Runs the sample workload with `args` (without the program name).
pub fn main(args: &[String]) -> i32 {
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    match args.first().map(String::as_str) {
        Some("serve") => {
            let port = flag("--port").and_then(|p| p.parse().ok()).unwrap_or(8080u16);
            let text = flag("--text").unwrap_or_else(|| "hello from sealpod".into());
            serve(port, &text)
        }
        Some("fetch") => {
            let url = flag("--url").unwrap_or_else(|| "http://127.0.0.1:8080/".into());
            let interval = flag("--interval-ms").and_then(|p| p.parse().ok()).unwrap_or(1000u64);
            let count = flag("--count").and_then(|p| p.parse().ok()).unwrap_or(u64::MAX);
            let direct = args.iter().any(|a| a == "--direct");
            let mut code = 0;
            for i in 0..count {
                let result = if direct { get_via(&url, None) } else { get(&url) };
                code = match result {
                    Ok(body) => {
                        println!("fetched: {}", body.trim_end());
                        0
                    }
                    Err(e) => {
                        println!("fetch failed: {e}");
                        1
                    }
                };
                let _ = std::io::stdout().flush();
                if i + 1 < count {
                    std::thread::sleep(Duration::from_millis(interval));
                }
            }
            // The exit code tells whether the last fetch worked.
            code
        }
        Some("cat") => match args.get(1).map(std::fs::read) {
            Some(Ok(bytes)) => {
                let _ = std::io::stdout().write_all(&bytes);
                0
            }
            Some(Err(e)) => {
                eprintln!("cat: {e}");
                1
            }
            None => {
                eprintln!("usage: cat FILE");
                2
            }
        },
        Some("probe") => attack::probe(&args[1..]),
        Some("forkbomb") => attack::forkbomb(),
        Some("membomb") => attack::membomb(),
        Some("fill") => {
            let max = flag("--max-bytes").and_then(|m| m.parse().ok());
            attack::fill(args.get(1).map_or("/fill", String::as_str), max, args.iter().any(|a| a == "--exit"))
        }
        Some("udp-echo") => udp_echo(flag("--port").and_then(|p| p.parse().ok()).unwrap_or(9000u16)),
        Some("ls") => match std::fs::read_dir(args.get(1).map_or("/", String::as_str)) {
            Ok(entries) => {
                let mut names: Vec<String> =
                    entries.flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
                names.sort();
                println!("{}", names.join("\n"));
                0
            }
            Err(e) => {
                eprintln!("ls: {e}");
                1
            }
        },
        Some("open") => attack::open_device(&args[1..]),
        Some("exit") => {
            let code = flag("--code").and_then(|c| c.parse().ok()).unwrap_or(1);
            println!("exiting with {code}");
            code
        }
        _ => {
            eprintln!("usage: serve --port P --text T | fetch --url URL [--interval-ms N] [--count N] [--direct] | exit --code N | cat FILE | ls DIR | udp-echo --port P | open PATH [--mknod MAJ:MIN] | probe [--reach ADDR]... [--outside-pid PID] | forkbomb | membomb | fill PATH [--max-bytes N] [--exit]");
            2
        }
    }
}

fn udp_echo(port: u16) -> i32 {
    let socket = match std::net::UdpSocket::bind(("0.0.0.0", port)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot bind UDP port {port}: {e}");
            return 1;
        }
    };
    println!("echoing UDP on port {port}");
    let _ = std::io::stdout().flush();
    let mut buf = [0u8; 65_536];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
        let mut answer = b"echo: ".to_vec();
        answer.extend_from_slice(&buf[..n]);
        let _ = socket.send_to(&answer, from);
    }
}

fn serve(port: u16, text: &str) -> i32 {
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on port {port}: {e}");
            return 1;
        }
    };
    println!("serving on port {port}");
    let _ = std::io::stdout().flush();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let text: std::sync::Arc<str> = text.into();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (served, text) = (served.clone(), text.clone());
        std::thread::spawn(move || answer(stream, &served, &text));
    }
    0
}

/// One connection of `serve`: `GET /` answers the text and a request
/// count; `/stream?n=K` sends K chunks 100 ms apart; `/hostname` the pod
/// copy's hostname; `/env/NAME` the variable's value; a request with
/// `Upgrade:` switches to an echo of every byte sent (as a WebSocket would
/// keep the connection). The connection stays open for more requests when
/// the client asks (`Connection: keep-alive`) or is a proxy
/// (`X-Forwarded-For`, which pools connections, as the provider's entry point
/// does); otherwise it closes after the answer, as simple clients expect.
fn answer(mut stream: std::net::TcpStream, served: &std::sync::atomic::AtomicU64, text: &str) {
    use std::io::Read;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).map_or(true, |n| n == 0) {
            return;
        }
        let (mut upgrade, mut keep_alive) = (false, false);
        let mut line = String::new();
        while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
            let lower = line.to_ascii_lowercase();
            upgrade |= lower.starts_with("upgrade:");
            keep_alive |= lower.starts_with("x-forwarded-for:")
                || (lower.starts_with("connection:") && lower.contains("keep-alive"));
            if lower.starts_with("connection:") && lower.contains("close") {
                keep_alive = false;
            }
            line.clear();
        }
        let n = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        println!("served {}", request_line.trim_end());
        let _ = std::io::stdout().flush();
        if upgrade {
            let _ = write!(stream, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n");
            let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(k) => {
                        if stream.write_all(&buf[..k]).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        if let Some(count) = path.strip_prefix("/stream?n=").and_then(|k| k.parse::<u32>().ok()) {
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            );
            for i in 0..count {
                let chunk = format!("chunk {i}\n");
                if write!(stream, "{:x}\r\n{chunk}\r\n", chunk.len()).is_err() {
                    return;
                }
                let _ = stream.flush();
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = write!(stream, "0\r\n\r\n");
            return;
        }
        let body = match path.strip_prefix("/env/") {
            Some(name) => format!("{}\n", std::env::var(name).unwrap_or_default()),
            // Which copy of the pod answered: each has its own hostname.
            None if path == "/hostname" => std::fs::read_to_string("/etc/hostname").unwrap_or_default(),
            None => format!("{text} (request {n})\n"),
        };
        let connection = if keep_alive { "keep-alive" } else { "close" };
        // One write: in pieces, a kept-alive connection would wait on
        // Nagle's algorithm and the client's delayed ACK (40 ms).
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(response.as_bytes()).is_err() || !keep_alive {
            return;
        }
    }
}

/// Fetches `http://host:port/path` and returns the body, through the proxy in
/// `HTTP_PROXY` when one is set (as pods with outbound access have).
pub fn get(url: &str) -> std::io::Result<String> {
    let proxy = std::env::var("HTTP_PROXY").or_else(|_| std::env::var("http_proxy")).ok();
    get_via(url, proxy.as_deref().and_then(|p| p.strip_prefix("http://")).map(|p| p.trim_end_matches('/')))
}

/// Fetches `url` directly, or through the HTTP proxy at `proxy` (`host:port`).
pub fn get_via(url: &str, proxy: Option<&str>) -> std::io::Result<String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| std::io::Error::other("only http:// URLs"))?;
    let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".into()));
    let mut stream = TcpStream::connect(proxy.unwrap_or(authority))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let target = if proxy.is_some() { url.to_owned() } else { path };
    write!(stream, "GET {target} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(|| std::io::Error::other("malformed response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or("");
        return Err(std::io::Error::other(format!("unexpected status: {status}: {}", body.trim_end())));
    }
    Ok(body.to_owned())
}
