//! The serve loop over real sockets: HTTPS with a certificate that is replaced while the
//! server runs, and the limits a slow or idle client runs into (headers, bodies,
//! connections).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agl_common::ops::Health;
use agl_common::serve::{ListenArgs, Listening, serve};
use agl_common::tls::{ServerTls, ServerTlsArgs, client_config};
use axum::Router;
use axum::routing::{get, post};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

struct Running {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start(args: &ListenArgs) -> Running {
    let app = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/echo", post(|body: axum::body::Bytes| async move { body }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listening = Listening::from_args(args).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        serve(
            listener,
            app,
            Arc::new(Health::default()),
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(1),
            || {},
            &listening,
        )
        .await
    });
    Running {
        addr,
        stop: Some(stop),
    }
}

fn write_pair(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.cert.pem()).unwrap();
    std::fs::write(&k, cert.signing_key.serialize_pem()).unwrap();
    (c, k)
}

/// A client trusting only `ca` (and the system roots, which do not hold it).
fn https_client(ca: &Path) -> reqwest::Client {
    let config = client_config(&[ca.to_owned()]).unwrap();
    agl_common::tls::http_client()
        .tls_backend_preconfigured((*config).clone())
        .resolve("localhost", "127.0.0.1:0".parse().unwrap())
        .no_proxy()
        .build()
        .unwrap()
}

#[tokio::test]
async fn https_is_served_and_a_replaced_certificate_is_used_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_pair(dir.path(), "live");
    // The first certificate, kept aside: the live file is overwritten below.
    let first_ca = dir.path().join("first.crt");
    std::fs::copy(&cert, &first_ca).unwrap();
    let args = ListenArgs {
        tls: ServerTlsArgs {
            tls_cert: Some(cert.clone()),
            tls_key: Some(key.clone()),
        },
        ..ListenArgs::default()
    };
    let server = start(&args).await;
    let url = format!("https://localhost:{}/hello", server.addr.port());

    let r = https_client(&first_ca).get(&url).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "hello");
    // The images' healthcheck probes it over TLS, trusting exactly the served certificate.
    let probe = |cert: Option<std::path::PathBuf>| async move {
        agl_common::probe::probe(
            server.addr.port(),
            "/hello",
            Duration::from_secs(5),
            cert.as_deref(),
        )
        .await
    };
    probe(Some(cert.clone())).await.unwrap();
    assert!(probe(None).await.is_err(), "plain HTTP is not answered");
    let (stranger, _) = write_pair(dir.path(), "stranger");
    assert!(
        probe(Some(stranger)).await.is_err(),
        "another certificate is not trusted"
    );
    // Plain HTTP on the TLS port gets no answer.
    assert!(
        agl_common::tls::http_client()
            .build()
            .unwrap()
            .get(format!("http://127.0.0.1:{}/hello", server.addr.port()))
            .send()
            .await
            .is_err()
    );

    // The Secret is updated: a new pair lands in the same files.
    let (new_cert, new_key) = write_pair(dir.path(), "next");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    // The server's own watcher reloads within its interval; wait for the new certificate.
    let deadline = Instant::now() + agl_common::tls::RELOAD_INTERVAL * 3;
    loop {
        match https_client(&new_cert).get(&url).send().await {
            Ok(r) => {
                assert_eq!(r.text().await.unwrap(), "hello");
                break;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("the new certificate was never served: {err}"),
        }
    }
    assert!(
        https_client(&first_ca).get(&url).send().await.is_err(),
        "the old certificate is gone"
    );
}

#[tokio::test]
async fn a_broken_replacement_keeps_the_previous_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_pair(dir.path(), "live");
    let tls = ServerTls::load(&ServerTlsArgs {
        tls_cert: Some(cert.clone()),
        tls_key: Some(key.clone()),
    })
    .unwrap()
    .unwrap();
    // Half-written: the certificate changed, the key is from another pair.
    let (other, _) = write_pair(dir.path(), "other");
    std::fs::copy(&other, &cert).unwrap();
    assert!(!tls.reload_if_changed(), "a mismatched pair is not taken");
    assert!(
        ServerTls::load(&ServerTlsArgs {
            tls_cert: Some(cert),
            tls_key: Some(key),
        })
        .is_err(),
        "and refused at start"
    );
}

fn limits() -> ListenArgs {
    ListenArgs {
        header_timeout_seconds: 0.5,
        body_timeout_seconds: 0.5,
        max_connections: 2,
        ..ListenArgs::default()
    }
}

/// Reads until the server closes the connection (or `limit` passes: `None`).
async fn read_to_close(tcp: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(limit, tcp.read_to_end(&mut out)).await;
    read.ok()
        .map(|_| String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn trickled_headers_and_idle_connections_are_closed_at_the_header_timeout() {
    let server = start(&limits()).await;
    let started = Instant::now();
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut slow, Duration::from_secs(5)).await;
    assert!(answer.is_some(), "closed");
    assert!(started.elapsed() < Duration::from_secs(3));

    // A connection that never sends anything is closed too.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        read_to_close(&mut idle, Duration::from_secs(5))
            .await
            .is_some()
    );

    // And one idle after a served request.
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut kept, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn a_body_that_never_finishes_gets_408() {
    let server = start(&limits()).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let answer = read_to_close(&mut tcp, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within"), "{answer}");
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let args = ListenArgs {
        header_timeout_seconds: 30.0,
        ..limits()
    };
    let server = start(&args).await;
    let url = format!("http://{}/hello", server.addr);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        // A request served proves the connection holds a slot.
        tcp.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(tcp);
    }
    let waiting = tokio::spawn(async move {
        agl_common::tls::http_client()
            .build()
            .unwrap()
            .get(url)
            .send()
            .await
            .map(|r| r.status())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "a third connection is not served");
    drop(held.pop());
    let status = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("served once a slot frees")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
}

/// Thousands of connections opened and left idle neither exhaust the server nor keep a real
/// client out: the limit holds them off, the idle timeout closes them, the client is served.
#[tokio::test]
async fn thousands_of_idle_connections_do_not_keep_a_client_out() {
    // Room for the idle sockets and the server's side of its 100 connections.
    let want = 2_000u64;
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(hard.min(want + 1_000)),
            maximum: limit.maximum,
        },
    );
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(want + 1_000);
    let idle_count = want.min(soft.saturating_sub(300)) as usize;
    assert!(idle_count >= 500, "open-files limit too low: {soft}");

    let args = ListenArgs {
        header_timeout_seconds: 1.0,
        max_connections: 100,
        ..ListenArgs::default()
    };
    let server = start(&args).await;
    let mut idle = Vec::with_capacity(idle_count);
    for _ in 0..idle_count {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let started = Instant::now();
    let client = agl_common::tls::http_client().build().unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        client.get(format!("http://{}/hello", server.addr)).send(),
    )
    .await
    .expect("served while thousands of idle connections are open")
    .unwrap();
    assert_eq!(r.text().await.unwrap(), "hello");
    eprintln!(
        "{idle_count} idle connections, a client served after {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
