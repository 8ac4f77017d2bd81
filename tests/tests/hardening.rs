//! A node survives hostile clients: connections that send nothing, trickle a request
//! head (slowloris) or hold a place, held by `tests/py/hold_connections.py` from other
//! loopback addresses, neither starve a valid client nor outlive the header-read
//! timeout; past the caps new connections are closed at once and counted, and a client
//! already connected keeps being served.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};
use tollgate_tests::*;

/// The hostile client and the lines it prints.
struct Holder {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Holder {
    fn start(gw: &Gateway, source: &str, idle: usize, slow: usize) -> Result<Holder> {
        let mut child = tokio::process::Command::new("python3")
            .arg(workspace_dir().join("tests/py/hold_connections.py"))
            .args(["--port", &gw.port.to_string(), "--source", source])
            .args(["--idle", &idle.to_string(), "--slow", &slow.to_string()])
            .args(["--trickle-ms", "300", "--watch-secs", "15"])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("start hold_connections.py")?;
        let stdout = child.stdout.take().context("stdout")?;
        Ok(Holder {
            _child: child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The next line saying `event`.
    async fn next(&mut self, event: &str) -> Result<Value> {
        let wait = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = self.lines.next_line().await? {
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                if v["event"] == event {
                    return Ok(v);
                }
                println!("holder: {line}");
            }
            bail!("the holder ended before {event}")
        });
        wait.await.context(format!("no {event} from the holder"))?
    }
}

/// A valid request on a new connection; its status and how long it took.
async fn timed_request(gw: &Gateway, secret: &str) -> Result<(u16, Duration)> {
    let started = Instant::now();
    let (status, _, _) = messages(&gw.url(), secret, &ask("x")).await?;
    Ok((status, started.elapsed()))
}

fn ask(text: &str) -> Value {
    json!({"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn idle_and_slowloris_connections_neither_starve_clients_nor_outlive_the_timeout(
) -> Result<()> {
    let gw = Gateway::start(
        "[limits]\nheader_read_timeout_ms = 5000\nmax_connections_per_address = 1500\n",
    )
    .await?;
    let (_, secret) = gw.key(json!([{"provider": "mock"}])).await?;
    // 1,000 that never send a byte and 1,000 that trickle a head, from 127.0.0.2.
    let mut holder = Holder::start(&gw, "127.0.0.2", 1000, 1000)?;
    let held = holder.next("held").await?;
    println!("held: {held}");
    assert_eq!(held["open"], 1500, "{held}");
    assert_eq!(
        held["refused"], 500,
        "the address cap closed the rest at once"
    );
    // A valid client from another address is served at once meanwhile.
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let (status, took) = timed_request(&gw, &secret).await?;
        assert_eq!(status, 200);
        worst = worst.max(took);
    }
    println!("5 requests while 1,500 connections are held: slowest {worst:?}");
    assert!(worst < Duration::from_millis(100), "{worst:?}");
    assert_eq!(
        gw.metric("tollgate_http_connections_refused_total{cap=\"address\"}")
            .await?,
        500
    );
    // The timeout closes every held connection, the trickling ones included.
    let done = holder.next("done").await?;
    println!("done: {done}");
    assert_eq!(done["open"], 0, "{done}");
    let first = done["closed_after_ms"][0].as_u64().unwrap_or(0);
    let last = done["closed_after_ms"][1].as_u64().unwrap_or(u64::MAX);
    // Held for the timeout: 5 s from their start, which was at most about 1.5 s before
    // the watch began (opening 2,000 connections, then 0.3 s).
    assert!(
        first >= 3_000 && last <= 7_000,
        "closed from {first} to {last} ms"
    );
    assert!(
        gw.metric("tollgate_http_connections_timed_out_total")
            .await?
            >= 1500
    );
    assert!(gw.metric("tollgate_http_connections_open").await? <= 2);
    Ok(())
}

#[tokio::test]
async fn past_the_node_cap_new_connections_are_refused_and_open_ones_served() -> Result<()> {
    let gw =
        Gateway::start("[limits]\nheader_read_timeout_ms = 8000\nmax_connections = 100\n").await?;
    let (_, secret) = gw.key(json!([{"provider": "mock"}])).await?;
    // A client that is already connected (a kept-alive connection).
    let client = http();
    let body = serde_json::to_vec(&ask("first"))?;
    assert_eq!(
        messages_raw(&client, &gw.url(), &secret, body.clone())
            .await?
            .0,
        200
    );
    let mut holder = Holder::start(&gw, "127.0.0.3", 150, 0)?;
    let held = holder.next("held").await?;
    println!("held: {held}");
    assert_eq!(held["open"], 99, "{held}");
    let refused = gw.metric("tollgate_http_connections_refused_total{cap=\"node\"}");
    // /metrics needs a connection too: it is refused at the cap as well.
    assert!(
        refused.await.is_err(),
        "a new connection past the cap is closed"
    );
    assert_eq!(
        messages_raw(&client, &gw.url(), &secret, body).await?.0,
        200,
        "the connected client is still served"
    );
    drop(client);
    drop(holder);
    let counted = eventually(15, || async {
        gw.metric("tollgate_http_connections_refused_total{cap=\"node\"}")
            .await
            .is_ok_and(|n| n >= 51)
    })
    .await;
    assert!(counted, "refusals at the node cap are counted");
    Ok(())
}

/// Reads one HTTP/1.1 response with a `content-length` from `tcp`.
async fn read_response(tcp: &mut tokio::net::TcpStream) -> Result<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            bail!(
                "closed before the response ended: {}",
                String::from_utf8_lossy(&got)
            );
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= len {
                return Ok(text);
            }
        }
    }
}

/// How long until the server closes `tcp` (at most `limit`).
async fn closed_after(tcp: &mut tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let mut buf = [0u8; 64];
    match tokio::time::timeout(limit, tcp.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Some(started.elapsed()),
        _ => None,
    }
}

/// A kept-alive connection waits for its next request for the idle timeout, longer than
/// the header-read timeout; once a next head has begun, that one, and its body, are due
/// within the header-read timeout.
#[tokio::test]
async fn idle_keep_alive_and_a_slow_next_head_have_their_own_timeouts() -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let gw =
        Gateway::start("[limits]\nheader_read_timeout_ms = 1000\nidle_timeout_ms = 3000\n").await?;
    let request = format!(
        "GET /health/live HTTP/1.1\r\nhost: 127.0.0.1:{}\r\n\r\n",
        gw.port
    );
    // Idle after an answer: closed by the idle timeout, not the header one.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await?;
    tcp.write_all(request.as_bytes()).await?;
    let answer = read_response(&mut tcp).await?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let idle = closed_after(&mut tcp, Duration::from_secs(10)).await;
    println!("idle keep-alive closed after {idle:?}");
    assert!(
        idle.is_some_and(|t| t >= Duration::from_millis(2_500) && t <= Duration::from_millis(5_000)),
        "{idle:?}"
    );
    // A next head begun and left: closed by the header timeout.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await?;
    tcp.write_all(request.as_bytes()).await?;
    read_response(&mut tcp).await?;
    tcp.write_all(b"GET /health/live HTTP/1.1\r\n").await?;
    let slow = closed_after(&mut tcp, Duration::from_secs(10)).await;
    println!("slow next head closed after {slow:?}");
    assert!(
        slow.is_some_and(|t| t >= Duration::from_millis(700) && t <= Duration::from_millis(2_500)),
        "{slow:?}"
    );
    // A whole head, then a body trickled to hold a request slot: cut like a slow head.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port)).await?;
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1:{}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{",
        gw.port
    );
    tcp.write_all(head.as_bytes()).await?;
    let slow_body = closed_after(&mut tcp, Duration::from_secs(10)).await;
    println!("slow body closed after {slow_body:?}");
    assert!(
        slow_body.is_some_and(|t| t <= Duration::from_millis(2_500)),
        "{slow_body:?}"
    );
    assert!(
        gw.metric("tollgate_http_connections_idle_closed_total")
            .await?
            >= 1
    );
    Ok(())
}
