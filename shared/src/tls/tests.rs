//! The SDK's HTTP client end to end: a DynamoDB client calling a local
//! server over TLS (a test CA trusted, or Mozilla's roots only) and one
//! that never answers.

use std::{sync::Arc, time::Duration};

use aws_config::{retry::RetryConfig, timeout::TimeoutConfig, BehaviorVersion, Region};
use aws_sdk_dynamodb::{
    config::{http::HttpResponse, Credentials},
    error::SdkError,
    operation::list_tables::ListTablesError,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::mpsc,
};
use tokio_rustls::{
    rustls::{
        self,
        pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer},
    },
    TlsAcceptor,
};

use aws_smithy_runtime_api::client::result::DispatchFailure;

use super::*;

/// A test CA and a certificate for `localhost` it signed.
struct TestPki {
    ca: rustls::pki_types::CertificateDer<'static>,
    server: rustls::ServerConfig,
}

fn test_pki() -> TestPki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key)
    .unwrap();
    TestPki {
        ca: ca.der().clone(),
        server,
    }
}

/// Serves every connection over TLS, answering each request with a
/// DynamoDB `ListTables` result; the request heads go to the channel.
async fn serve_tls(server: rustls::ServerConfig) -> (u16, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let (seen, requests) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0; 16 * 1024];
                let n = tls.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let _ = seen.send(head);
                let body = r#"{"TableNames":["over-tls"]}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\n\
                     content-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.flush().await;
            });
        }
    });
    (port, requests)
}

fn dynamodb(
    endpoint: String,
    http: SdkHttpClient,
    timeouts: TimeoutConfig,
) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::for_tests())
        .endpoint_url(endpoint)
        .http_client(SharedHttpClient::new(http))
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts)
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

fn dispatch_failure<E, R>(e: &SdkError<E, R>) -> &DispatchFailure {
    match e {
        SdkError::DispatchFailure(failure) => failure,
        _ => panic!("not a dispatch failure"),
    }
}

/// A ListTables to `endpoint` through the client with Mozilla's roots,
/// expected to fail before an answer comes: its error.
async fn list_tables_failing(
    endpoint: String,
    timeouts: TimeoutConfig,
) -> SdkError<ListTablesError, HttpResponse> {
    let client = dynamodb(endpoint, SdkHttpClient::new(rustls_config()), timeouts);
    client.list_tables().send().await.unwrap_err()
}

fn trusting(ca: rustls::pki_types::CertificateDer<'static>) -> SdkHttpClient {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    SdkHttpClient::new(rustls_config_trusting(roots))
}

#[tokio::test]
async fn the_sdk_calls_a_server_whose_certificate_it_trusts_over_tls() {
    let pki = test_pki();
    let (port, mut requests) = serve_tls(pki.server).await;
    let client = dynamodb(
        format!("https://localhost:{port}"),
        trusting(pki.ca),
        TimeoutConfig::disabled(),
    );

    let listed = client.list_tables().send().await.unwrap();
    assert_eq!(listed.table_names(), ["over-tls"]);
    let head = requests.recv().await.unwrap();
    assert!(head.starts_with("POST / HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("x-amz-target: DynamoDB_20120810.ListTables"));
    assert!(head.contains("authorization: AWS4-HMAC-SHA256"));

    // The pooled connection carries the next call.
    let again = client.list_tables().send().await.unwrap();
    assert_eq!(again.table_names(), ["over-tls"]);
}

#[tokio::test]
async fn a_certificate_outside_the_compiled_in_roots_is_refused() {
    let pki = test_pki();
    let (port, mut requests) = serve_tls(pki.server).await;

    let endpoint = format!("https://localhost:{port}");
    let e = list_tables_failing(endpoint, TimeoutConfig::disabled()).await;
    assert!(dispatch_failure(&e).is_io(), "{e:?}");
    assert!(requests.try_recv().is_err(), "no request went out");
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_timeout_after_the_read_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let timeouts = TimeoutConfig::builder()
        .read_timeout(Duration::from_millis(200))
        .build();
    let client = dynamodb(
        format!("http://127.0.0.1:{port}"),
        SdkHttpClient::new(rustls_config()),
        timeouts,
    );

    // Timed from the call alone, not the client's construction.
    let started = std::time::Instant::now();
    let e = client.list_tables().send().await.unwrap_err();
    assert!(dispatch_failure(&e).is_timeout(), "{e:?}");
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn a_refused_connection_is_an_io_error_the_sdk_may_retry() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let e = list_tables_failing(endpoint, TimeoutConfig::disabled()).await;
    assert!(dispatch_failure(&e).is_io(), "{e:?}");
}
