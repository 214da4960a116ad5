//! TLS for the two HTTP clients (DynamoDB through the AWS SDK, RunPod
//! through reqwest), with Mozilla's root certificates compiled in.
//!
//! Both clients' defaults read and parse every file in the system
//! certificate directory when they are built (147 files each here, counted
//! with strace): most of a function's cold start (BENCHMARKS.md). AWS's and
//! RunPod's endpoints have public certificates, so the compiled-in roots
//! (webpki-roots, webpki-root-certs: the same Mozilla list, maintained by
//! the rustls project) are enough, and are as current as the build.

use std::sync::Arc;

use aws_sdk_dynamodb::config::SharedHttpClient;
use aws_smithy_http_client::{
    tls::{self, rustls_provider::CryptoMode, TlsContext, TrustStore},
    Builder,
};
use base64::{engine::general_purpose::STANDARD, Engine};

/// reqwest's TLS: the roots as ready-made trust anchors (nothing to parse).
pub fn rustls_config() -> rustls::ClientConfig {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("aws-lc-rs supports TLS 1.2 and 1.3")
    .with_root_certificates(roots)
    .with_no_client_auth()
}

/// The AWS SDK's HTTPS client (its default, but for the trust store). Its
/// trust store takes PEM only, hence the conversion.
pub fn aws_http_client() -> SharedHttpClient {
    let trust = TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(root_pem());
    let context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .expect("a trust store of PEM certificates is a valid TLS context");
    Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https()
}

/// The compiled-in root certificates as one PEM bundle.
fn root_pem() -> Vec<u8> {
    let mut pem = Vec::with_capacity(300_000);
    for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
        pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
        for line in STANDARD.encode(cert.as_ref()).as_bytes().chunks(64) {
            pem.extend_from_slice(line);
            pem.push(b'\n');
        }
        pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
    }
    pem
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::{pem::PemObject, CertificateDer};

    use super::*;

    #[test]
    fn the_pem_bundle_holds_every_compiled_in_root() {
        let pem = root_pem();
        let parsed: Vec<CertificateDer> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(parsed.len(), webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
        assert!(parsed.len() > 100);
        for (p, c) in parsed.iter().zip(webpki_root_certs::TLS_SERVER_ROOT_CERTS) {
            assert_eq!(p.as_ref(), c.as_ref());
        }
    }
}
