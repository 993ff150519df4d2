//! The `healthcheck` subcommand of every image: distroless images have no shell and no
//! curl, so the binary probes its own readiness endpoint (over TLS when the service serves
//! TLS, trusting exactly the certificate it serves).

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// GETs `{path}` of `127.0.0.1:{port}` over HTTP/1.1 (HTTPS when `tls_cert` names the
/// certificate the service serves) and succeeds on a 2xx answer within `timeout`.
pub async fn probe(
    port: u16,
    path: &str,
    timeout: Duration,
    tls_cert: Option<&Path>,
) -> anyhow::Result<()> {
    let connector = tls_cert
        .map(|cert| crate::tls::pinned_client_config(cert).map(tokio_rustls::TlsConnector::from))
        .transpose()?;
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        match connector {
            None => exchange(tcp, port, path).await,
            Some(connector) => {
                let name = rustls_pki_types::ServerName::try_from("localhost")?;
                exchange(connector.connect(name, tcp).await?, port, path).await
            }
        }
    };
    let head = tokio::time::timeout(timeout, attempt).await.map_err(|_| {
        anyhow::anyhow!("no answer from 127.0.0.1:{port}{path} within {timeout:?}")
    })??;
    let status_line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    anyhow::ensure!(
        code.starts_with('2'),
        "127.0.0.1:{port}{path} answered {status_line:?}"
    );
    Ok(())
}

async fn exchange(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    port: u16,
    path: &str,
) -> anyhow::Result<Vec<u8>> {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    // A TLS peer may close without close_notify; what arrived is the answer.
    match stream.read_to_end(&mut head).await {
        Ok(_) => {}
        Err(err) if !head.is_empty() && err.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(err) => return Err(err.into()),
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::probe;
    use std::time::Duration;

    #[tokio::test]
    async fn probe_accepts_2xx_and_refuses_others() {
        let app = axum::Router::new()
            .route("/ok", axum::routing::get(|| async { "fine" }))
            .route(
                "/no",
                axum::routing::get(|| async {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "no")
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        probe(port, "/ok", Duration::from_secs(5), None)
            .await
            .unwrap();
        let err = probe(port, "/no", Duration::from_secs(5), None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("503"), "{err}");
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        assert!(
            probe(closed, "/ok", Duration::from_secs(5), None)
                .await
                .is_err()
        );
    }
}
