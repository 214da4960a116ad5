//! TLS for the two HTTP clients (DynamoDB and Secrets Manager through the
//! AWS SDK, RunPod through reqwest): one rustls configuration with
//! Mozilla's root certificates compiled in as ready-made trust anchors.
//!
//! The clients' own defaults read and parse every file in the system
//! certificate directory (147 files here, counted with strace). The SDK's
//! HTTPS client takes extra roots only as PEM, which it parses once when a
//! client is built and again at the first request: 1.7–2.4 ms of a cold
//! start and as much of its first request (BENCHMARKS.md, issue 15). So the
//! SDK gets [`SdkHttpClient`], hyper over the same rustls configuration as
//! reqwest: nothing to parse, built once. AWS's and RunPod's endpoints have
//! public certificates, so the compiled-in roots (webpki-roots: Mozilla's
//! list, maintained by the rustls project) are enough, and are as current
//! as the build.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use aws_smithy_runtime_api::client::{
    http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
        SharedHttpConnector,
    },
    orchestrator::{HttpRequest, HttpResponse},
    result::ConnectorError,
    runtime_components::RuntimeComponents,
};
use aws_smithy_types::body::SdkBody;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{connect::HttpConnector as TcpConnector, Client},
    rt::{TokioExecutor, TokioTimer},
};

/// The TLS configuration of both clients: Mozilla's roots as trust anchors.
pub fn rustls_config() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    rustls_config_trusting(roots)
}

fn rustls_config_trusting(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("aws-lc-rs supports TLS 1.2 and 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth()
}

/// The AWS SDK's HTTP client, on [`rustls_config`].
pub fn aws_http_client() -> SharedHttpClient {
    SharedHttpClient::new(SdkHttpClient::new(rustls_config()))
}

/// An HTTP(S) client for the AWS SDK: hyper's pooled HTTP/1.1 client over
/// rustls, as the SDK's default client is (but for the trust store and
/// HTTP/2, which DynamoDB and Secrets Manager do not use). The SDK asks for
/// a connector before every attempt, with the settings of its timeout
/// configuration; one connector (one pool) is kept per settings asked for,
/// so clients with different timeouts on one configuration (Secrets
/// Manager's defaults, DynamoDB's own) do not take turns rebuilding it.
#[derive(Debug)]
pub struct SdkHttpClient {
    tls: rustls::ClientConfig,
    connectors: Mutex<Vec<(Timeouts, SharedHttpConnector)>>,
}

/// What of [`HttpConnectorSettings`] a connector is built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timeouts {
    connect: Option<Duration>,
    read: Option<Duration>,
}

impl SdkHttpClient {
    /// A client trusting what `tls` trusts.
    pub fn new(tls: rustls::ClientConfig) -> Self {
        Self {
            tls,
            connectors: Mutex::new(Vec::new()),
        }
    }
}

impl HttpClient for SdkHttpClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        let timeouts = Timeouts {
            connect: settings.connect_timeout(),
            read: settings.read_timeout(),
        };
        let mut kept = self.connectors.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, connector)) = kept.iter().find(|(built_for, _)| *built_for == timeouts) {
            return connector.clone();
        }
        let connector = SharedHttpConnector::new(Connector::new(&self.tls, timeouts));
        kept.push((timeouts, connector.clone()));
        connector
    }
}

/// One pool of connections, with the connect and read timeouts it was
/// built with.
#[derive(Debug, Clone)]
struct Connector {
    client: Client<HttpsConnector<TcpConnector>, SdkBody>,
    read_timeout: Option<Duration>,
}

impl Connector {
    fn new(tls: &rustls::ClientConfig, timeouts: Timeouts) -> Self {
        let mut tcp = TcpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(timeouts.connect);
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .build(https);
        Self {
            client,
            read_timeout: timeouts.read,
        }
    }
}

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = match request.try_into_http1x() {
            Ok(request) => request,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        let response = self.client.request(request);
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            let response = match read_timeout {
                None => response.await,
                Some(limit) => match tokio::time::timeout(limit, response).await {
                    Ok(response) => response,
                    Err(elapsed) => return Err(ConnectorError::timeout(elapsed.into())),
                },
            };
            let response = response.map_err(connector_error)?;
            HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// The SDK retries I/O errors and timeouts (transient), not the others: a
/// failed connection or a connection the server closed is I/O, as in the
/// SDK's own client.
fn connector_error(e: hyper_util::client::legacy::Error) -> ConnectorError {
    if e.is_connect() {
        return ConnectorError::io(e.into());
    }
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            if hyper.is_timeout() {
                return ConnectorError::timeout(e.into());
            }
            if hyper.is_closed() || hyper.is_incomplete_message() || hyper.is_canceled() {
                return ConnectorError::io(e.into());
            }
        }
        if cause.is::<std::io::Error>() {
            return ConnectorError::io(e.into());
        }
        source = cause.source();
    }
    ConnectorError::other(e.into(), None)
}

#[cfg(test)]
mod tests;
