//! Mutual TLS between nodes: a node presents its certificate (signed by the cluster CA)
//! both as a server and as a client, and accepts only peers whose certificate chains to
//! the same CA. Always rustls on ring, TLS 1.3 (QUIC requires it), ALPN `tollgate/1`.

use crate::cluster::cert::{CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE};
use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The application protocol of the peer port; a peer speaking anything else fails the
/// handshake instead of misreading frames.
pub const ALPN: &[u8] = b"tollgate/1";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} is not valid PEM")]
    Pem {
        what: &'static str,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{what} holds no certificate")]
    NoCertificate { what: &'static str },
    #[error("rustls refused the configuration")]
    Rustls(#[source] rustls::Error),
    #[error("cannot build the client-certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    #[error("the crypto provider lacks the cipher suite QUIC needs")]
    Quic(#[source] NoInitialCipherSuite),
}

/// What a node needs to talk to its peers: the cluster CA certificate it trusts, and its
/// own certificate chain and private key. `Debug` never shows the key.
pub struct NodeIdentity {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for NodeIdentity {
    fn clone(&self) -> Self {
        NodeIdentity {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

fn certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem { what, source })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what });
    }
    Ok(certs)
}

impl NodeIdentity {
    /// From PEM text: the CA certificate, the node's certificate (chain), its key.
    pub fn from_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let mut ca = certs(ca_pem, "the CA certificate")?;
        let chain = certs(cert_pem, "the node certificate")?;
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|source| TlsError::Pem {
                what: "the node key",
                source,
            })?;
        Ok(NodeIdentity {
            ca: ca.swap_remove(0),
            chain,
            key,
        })
    }

    /// From a node directory made by `tollgate cert node`: `ca.pem`, `node.pem`,
    /// `node.key`.
    pub fn load_dir(dir: &Path) -> Result<Self, TlsError> {
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read_to_string(&path).map_err(|source| TlsError::Read { path, source })
        };
        Self::from_pem(
            &read(CA_CERT_FILE)?,
            &read(NODE_CERT_FILE)?,
            &read(NODE_KEY_FILE)?,
        )
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).map_err(TlsError::Rustls)?;
        Ok(Arc::new(roots))
    }

    /// The server side: present the node certificate, require a client certificate that
    /// chains to the cluster CA.
    pub fn server_crypto(&self) -> Result<QuicServerConfig, TlsError> {
        let provider = provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(TlsError::Verifier)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Rustls)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(TlsError::Rustls)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        QuicServerConfig::try_from(config).map_err(TlsError::Quic)
    }

    /// The client side: trust only the cluster CA, present the node certificate.
    pub fn client_crypto(&self) -> Result<QuicClientConfig, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Rustls)?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(TlsError::Rustls)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        QuicClientConfig::try_from(config).map_err(TlsError::Quic)
    }

    /// The key of QUIC stateless resets, derived from the node's private key so that it
    /// survives a restart: a restarted node then resets its peers' stale connections at
    /// their first packet, instead of leaving them to time out.
    pub fn stateless_reset_key(&self) -> ring::hmac::Key {
        ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &self.derive(b"tollgate/quic-stateless-reset/v1"),
        )
    }

    /// The key that signs this node's connection ids, derived like the reset key: a
    /// restarted node must still recognise its old ids as its own, or it drops a stale
    /// peer's packets instead of resetting the connection.
    pub fn connection_id_key(&self) -> u64 {
        let digest = self.derive(b"tollgate/quic-connection-id/v1");
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(first)
    }

    /// SHA-256 of a label and the node's private key: a secret of this node that stays
    /// the same across restarts and reveals nothing of the key.
    fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(label);
        context.update(&[0]);
        context.update(self.key.secret_der());
        let mut out = [0u8; 32];
        out.copy_from_slice(context.finish().as_ref());
        out
    }
}

/// ring, never the process default: tests and embedders need not install a provider.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
