//! Cluster certificates: `tollgate cert ca` makes the cluster CA, `tollgate cert node`
//! a node certificate signed by it (rcgen, ECDSA P-256). Peers accept only certificates
//! signed by the cluster CA, in both directions (see `transport::tls`).
//!
//! A node directory holds `node.pem`, `node.key` and a copy of the CA's `ca.pem`, which
//! is everything a node needs; the CA key stays in the CA directory.

use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// The CA certificate, in the CA directory and copied into every node directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA private key; only `tollgate cert node` reads it.
pub const CA_KEY_FILE: &str = "ca.key";
/// A node's certificate (used as both TLS server and client certificate).
pub const NODE_CERT_FILE: &str = "node.pem";
/// A node's private key.
pub const NODE_KEY_FILE: &str = "node.key";

/// How long the cluster CA is valid. Rotating a CA means re-issuing every node
/// certificate, so it lives long.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// How long a node certificate is valid; re-issuing one is a single command per node.
pub const NODE_VALIDITY_DAYS: i64 = 825;
/// Certificates start this far in the past so a peer whose clock is a little behind the
/// issuer's still accepts a freshly issued certificate.
pub const BACKDATE_SECONDS: i64 = 3600;
/// Names a node certificate carries when no `--san` is given: enough for a cluster on
/// one machine.
pub const DEFAULT_SANS: &[&str] = &["localhost", "127.0.0.1"];
/// Longest node name (an X.509 common name is at most 64 characters).
pub const MAX_NODE_NAME_CHARS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation failed")]
    Generate(#[source] rcgen::Error),
    #[error("subject alternative name {san:?} is neither an IP address nor a DNS name")]
    InvalidSan {
        san: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("the OS random source failed")]
    Random,
    #[error("node name must be 1..={MAX_NODE_NAME_CHARS} printable characters")]
    InvalidName,
    #[error("{} exists; pass --force to replace it", path.display())]
    Exists { path: PathBuf },
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a usable CA (certificate or key)", dir.display())]
    InvalidCa {
        dir: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertifiedPem {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertifiedPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedPem")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// A random 16-byte serial, positive (top bit clear) as X.509 wants.
fn random_serial() -> Result<SerialNumber, CertError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| CertError::Random)?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

fn validity(params: &mut CertificateParams, now: OffsetDateTime, days: i64) {
    params.not_before = now - Duration::seconds(BACKDATE_SECONDS);
    params.not_after = now + Duration::days(days);
}

/// Makes a new cluster CA: a self-signed certificate that may sign node certificates and
/// nothing else (path length 0).
pub fn generate_ca(now: OffsetDateTime) -> Result<CertifiedPem, CertError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "Tollgate cluster CA");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Tollgate");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial()?);
    validity(&mut params, now, CA_VALIDITY_DAYS);
    let key = KeyPair::generate().map_err(CertError::Generate)?;
    let cert = params.self_signed(&key).map_err(CertError::Generate)?;
    Ok(CertifiedPem {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues a node certificate for `name`, valid for `sans` (IP addresses or DNS names,
/// `DEFAULT_SANS` when empty), usable as both TLS server and client certificate.
pub fn issue_node(
    ca: &CertifiedPem,
    name: &str,
    sans: &[String],
    now: OffsetDateTime,
) -> Result<CertifiedPem, CertError> {
    let name_ok = !name.is_empty()
        && name.chars().count() <= MAX_NODE_NAME_CHARS
        && !name.chars().any(char::is_control);
    if !name_ok {
        return Err(CertError::InvalidName);
    }
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(|source| CertError::InvalidCa {
        dir: PathBuf::new(),
        source,
    })?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(|source| CertError::InvalidCa {
            dir: PathBuf::new(),
            source,
        })?;
    let sans: Vec<String> = if sans.is_empty() {
        DEFAULT_SANS.iter().map(|s| s.to_string()).collect()
    } else {
        sans.to_vec()
    };
    // Parse one by one so an error names the offending entry.
    for san in &sans {
        CertificateParams::new(vec![san.clone()]).map_err(|source| CertError::InvalidSan {
            san: san.clone(),
            source,
        })?;
    }
    let mut params = CertificateParams::new(sans).map_err(CertError::Generate)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Tollgate");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    validity(&mut params, now, NODE_VALIDITY_DAYS);
    let key = KeyPair::generate().map_err(CertError::Generate)?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(CertError::Generate)?;
    Ok(CertifiedPem {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Reads the CA certificate and key from a CA directory.
pub fn read_ca(ca_dir: &Path) -> Result<CertifiedPem, CertError> {
    let read = |file: &str| {
        let path = ca_dir.join(file);
        std::fs::read_to_string(&path).map_err(|source| CertError::Read { path, source })
    };
    Ok(CertifiedPem {
        cert_pem: read(CA_CERT_FILE)?,
        key_pem: read(CA_KEY_FILE)?,
    })
}

/// One file to write: its name, contents, and whether it is a secret (mode 0600).
struct OutFile<'a> {
    name: &'static str,
    contents: &'a str,
    secret: bool,
}

/// Writes every file into `dir` (created if missing), or none of them: without `force`,
/// any existing file (other than one with exactly the same contents) stops the whole
/// write before anything is touched.
fn write_all(dir: &Path, files: &[OutFile<'_>], force: bool) -> Result<Vec<PathBuf>, CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut pending = Vec::new();
    for file in files {
        let path = dir.join(file.name);
        match std::fs::read(&path) {
            Ok(existing) if existing == file.contents.as_bytes() => continue,
            Ok(_) if !force => return Err(CertError::Exists { path }),
            // Exists (and replaced under --force), or absent.
            Ok(_) => pending.push((path, file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => pending.push((path, file)),
            Err(source) => return Err(CertError::Read { path, source }),
        }
    }
    let mut written = Vec::new();
    for (path, file) in pending {
        write_file(&path, file.contents, file.secret, force).map_err(|source| {
            CertError::Write {
                path: path.clone(),
                source,
            }
        })?;
        written.push(path);
    }
    Ok(written)
}

fn write_file(path: &Path, contents: &str, secret: bool, replace: bool) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if replace {
        options.create(true).truncate(true);
    } else {
        // A file that appeared since the check is still not overwritten.
        options.create_new(true);
    }
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    // The mode above applies only to a new file; a replaced one is narrowed before the
    // key is written into it.
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// `tollgate cert ca`: writes `ca.pem` and `ca.key` (0600) into `out`.
pub fn write_ca(out: &Path, force: bool, now: OffsetDateTime) -> Result<Vec<PathBuf>, CertError> {
    let ca = generate_ca(now)?;
    let files = [
        OutFile {
            name: CA_CERT_FILE,
            contents: &ca.cert_pem,
            secret: false,
        },
        OutFile {
            name: CA_KEY_FILE,
            contents: &ca.key_pem,
            secret: true,
        },
    ];
    write_all(out, &files, force)
}

/// `tollgate cert node`: writes `node.pem`, `node.key` (0600) and a copy of `ca.pem`
/// into `out`, signed by the CA in `ca_dir`.
pub fn write_node(
    ca_dir: &Path,
    name: &str,
    sans: &[String],
    out: &Path,
    force: bool,
    now: OffsetDateTime,
) -> Result<Vec<PathBuf>, CertError> {
    let ca = read_ca(ca_dir)?;
    let node = issue_node(&ca, name, sans, now).map_err(|e| match e {
        CertError::InvalidCa { source, .. } => CertError::InvalidCa {
            dir: ca_dir.to_path_buf(),
            source,
        },
        other => other,
    })?;
    let files = [
        OutFile {
            name: NODE_CERT_FILE,
            contents: &node.cert_pem,
            secret: false,
        },
        OutFile {
            name: NODE_KEY_FILE,
            contents: &node.key_pem,
            secret: true,
        },
        OutFile {
            name: CA_CERT_FILE,
            contents: &ca.cert_pem,
            secret: false,
        },
    ];
    write_all(out, &files, force)
}

#[derive(Debug, Args)]
pub struct CertArgs {
    #[command(subcommand)]
    pub command: CertCommand,
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Make the cluster CA: `ca.pem` and `ca.key` (keep the key off the nodes).
    Ca {
        #[arg(long)]
        out: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Make a node certificate signed by the cluster CA: `node.pem`, `node.key` and a
    /// copy of `ca.pem`.
    Node {
        /// The directory holding `ca.pem` and `ca.key`.
        #[arg(long)]
        ca_dir: PathBuf,
        /// The node's name (the certificate's common name).
        #[arg(long)]
        name: String,
        #[arg(long)]
        out: PathBuf,
        /// An IP address or DNS name peers use to reach this node (repeat for more);
        /// without any, `localhost` and `127.0.0.1`.
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

/// Runs `tollgate cert ...` and prints the files written.
pub fn run(args: CertArgs) -> Result<(), CertError> {
    let now = OffsetDateTime::now_utc();
    let written = match args.command {
        CertCommand::Ca { out, force } => write_ca(&out, force, now)?,
        CertCommand::Node {
            ca_dir,
            name,
            out,
            sans,
            force,
        } => write_node(&ca_dir, &name, &sans, &out, force, now)?,
    };
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tollgate-cert-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn ca_and_node_files_are_written_once_with_private_keys_0600() {
        let root = temp_dir("files");
        let (ca_dir, node_dir) = (root.join("ca"), root.join("n1"));
        let now = OffsetDateTime::now_utc();
        assert_eq!(write_ca(&ca_dir, false, now).unwrap().len(), 2);
        let written = write_node(&ca_dir, "n1", &[], &node_dir, false, now).unwrap();
        assert_eq!(written.len(), 3);
        #[cfg(unix)]
        for key in [ca_dir.join(CA_KEY_FILE), node_dir.join(NODE_KEY_FILE)] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", key.display());
        }
        // No overwrite without --force, and nothing changed by the refused attempt.
        let before = std::fs::read(ca_dir.join(CA_KEY_FILE)).unwrap();
        assert!(matches!(
            write_ca(&ca_dir, false, now),
            Err(CertError::Exists { .. })
        ));
        assert!(matches!(
            write_node(&ca_dir, "n1", &[], &node_dir, false, now),
            Err(CertError::Exists { .. })
        ));
        assert_eq!(std::fs::read(ca_dir.join(CA_KEY_FILE)).unwrap(), before);
        // With --force both are replaced.
        assert_eq!(write_ca(&ca_dir, true, now).unwrap().len(), 2);
        assert_ne!(std::fs::read(ca_dir.join(CA_KEY_FILE)).unwrap(), before);
        assert_eq!(
            write_node(&ca_dir, "n1", &[], &node_dir, true, now)
                .unwrap()
                .len(),
            3
        );
        // A node directory inside the CA directory shares the identical ca.pem.
        assert_eq!(
            write_node(&ca_dir, "n2", &[], &ca_dir, false, now)
                .unwrap()
                .len(),
            2
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn node_names_and_sans_are_checked() {
        let ca = generate_ca(OffsetDateTime::now_utc()).unwrap();
        let now = OffsetDateTime::now_utc();
        let check = |name: &str, sans: &[&str], ok: bool| {
            let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
            let result = issue_node(&ca, name, &sans, now);
            assert_eq!(result.is_ok(), ok, "{name} {sans:?}: {result:?}");
        };
        check("n1", &[], true);
        check("n1", &["10.0.0.5", "::1", "node1.cluster.internal"], true);
        check("", &[], false);
        check(&"x".repeat(MAX_NODE_NAME_CHARS + 1), &[], false);
        check("n\u{7}1", &[], false);
        check("n1", &["bad name with spaces é"], false);
    }
}
