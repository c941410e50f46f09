//! The roots the upstream TLS connector trusts when `upstream.extra_ca_file` is set: the
//! platform's roots plus the file's certificates, in one PEM bundle built once at startup.
//!
//! Why a bundle file: Pingora's connector takes its roots from one PEM file
//! (`ServerConf::ca_file`), loaded *instead of* the platform roots, once, when the connector is
//! built. The other way in, a per-peer CA (`peer.options.ca`), makes Pingora 0.9 build a root
//! store and a rustls client config on every connection — costly, and each fresh config loses
//! TLS session resumption. So the platform roots (rustls-native-certs: the OS store, or
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` like Pingora's own loader) and the extra certificates are
//! written into one file that both proxy instances' connectors load. A changed extra file is
//! seen on the next start only.

use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use pingora::tls::{RootCertStore, load_ca_file_into_store};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::{self, PemObject as _};
use tempfile::NamedTempFile;

/// A bound on what is read (a path to a device or a log file must not exhaust memory at
/// startup); a system bundle is a few hundred KiB.
const MAX_FILE_BYTES: u64 = 16 << 20;

/// Why `upstream.extra_ca_file` cannot be used. CA certificates are public, so naming the path
/// is fine; the file's content is never echoed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamCaError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a valid PEM file: {problem}", path.display())]
    Pem {
        path: PathBuf,
        problem: &'static str,
    },
    #[error("{} is larger than {} MiB, which no CA bundle is", path.display(), MAX_FILE_BYTES >> 20)]
    TooLarge { path: PathBuf },
    #[error("{} holds no PEM CERTIFICATE", path.display())]
    NoCertificate { path: PathBuf },
    #[error("certificate {position} in {} is not a usable X.509 certificate: {problem}", path.display())]
    Certificate {
        path: PathBuf,
        position: usize,
        problem: String,
    },
    #[error("cannot write the combined CA bundle into {}: {source}", dir.display())]
    Bundle {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the combined CA bundle does not load: {0}")]
    Load(String),
}

/// The combined bundle on disk, for `ServerConf::ca_file`.
///
/// A `NamedTempFile` (mode 0600, in `TMPDIR`), held by every proxy instance through an `Arc`
/// and removed when the last one drops: Pingora 0.9 reads it only while building a connector,
/// but keeping it while connectors live costs nothing and stays right should Pingora read it
/// again later; removal on drop leaves nothing behind from tests that start many apps. The
/// content is public (CA certificates), so a temporary file is no exposure.
pub struct UpstreamRoots {
    /// Held for its `Drop`, which removes the file.
    _file: NamedTempFile,
    /// `_file`'s path as text (Pingora takes a `String`).
    path: String,
    /// How many roots came from the platform and from the extra file.
    pub platform: usize,
    pub extra: usize,
}

impl UpstreamRoots {
    /// The platform roots plus every certificate of `extra_ca_file`, written once.
    pub fn build(extra_ca_file: &Path) -> Result<Self, UpstreamCaError> {
        let extra = read_extra(extra_ca_file)?;
        Self::write(platform_roots(), extra)
    }

    fn write(
        platform: Vec<CertificateDer<'static>>,
        extra: Vec<CertificateDer<'static>>,
    ) -> Result<Self, UpstreamCaError> {
        let dir = std::env::temp_dir();
        let bundle_error = |source| UpstreamCaError::Bundle {
            dir: dir.clone(),
            source,
        };
        let mut text = String::new();
        for cert in platform.iter().chain(&extra) {
            push_pem(cert, &mut text);
        }
        let mut file = tempfile::Builder::new()
            .prefix("gatehouse-upstream-ca-")
            .suffix(".pem")
            .tempfile_in(&dir)
            .map_err(bundle_error)?;
        file.write_all(text.as_bytes()).map_err(bundle_error)?;
        file.flush().map_err(bundle_error)?;
        let path = file
            .path()
            .to_str()
            .ok_or_else(|| bundle_error(io::Error::other("the temporary path is not UTF-8")))?
            .to_owned();
        // Load it the way the connector will: Pingora builds its connector with an `unwrap`,
        // so a bundle it cannot load must fail here, as a startup error, not as a panic.
        load_ca_file_into_store(&path, &mut RootCertStore::empty())
            .map_err(|error| UpstreamCaError::Load(error.to_string()))?;
        Ok(Self {
            _file: file,
            path,
            platform: platform.len(),
            extra: extra.len(),
        })
    }

    /// Where the bundle is.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Every certificate of the file, each one checked the way a root store checks it. Other PEM
/// sections (a private key kept in the same file) are skipped.
fn read_extra(path: &Path) -> Result<Vec<CertificateDer<'static>>, UpstreamCaError> {
    let read_error = |source| UpstreamCaError::Read {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(UpstreamCaError::TooLarge {
            path: path.to_owned(),
        });
    }
    let mut certs = Vec::new();
    for item in CertificateDer::pem_slice_iter(&bytes) {
        let cert = item.map_err(|error| UpstreamCaError::Pem {
            path: path.to_owned(),
            problem: pem_problem(&error),
        })?;
        RootCertStore::empty()
            .add(cert.clone())
            .map_err(|error| UpstreamCaError::Certificate {
                path: path.to_owned(),
                position: certs.len() + 1,
                problem: error.to_string(),
            })?;
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(UpstreamCaError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The rule a PEM error broke, without the offending line (it would echo the file).
fn pem_problem(error: &pem::Error) -> &'static str {
    match error {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a section is not valid base64",
        pem::Error::SectionTooLarge => "a section is larger than 256 MiB",
        _ => "it cannot be parsed",
    }
}

/// The platform's roots that a root store accepts. One unparsable system certificate must not
/// fail the connector (rustls' own `add_parsable_certificates` skips them too).
fn platform_roots() -> Vec<CertificateDer<'static>> {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "could not load some system CA certificates");
    }
    let total = found.certs.len();
    let usable: Vec<_> = found
        .certs
        .into_iter()
        .filter(|cert| RootCertStore::empty().add(cert.clone()).is_ok())
        .collect();
    if usable.len() < total {
        tracing::debug!(
            skipped = total - usable.len(),
            "system CA certificates a root store rejects are left out"
        );
    }
    if usable.is_empty() {
        tracing::warn!(
            "no system CA certificates found: upstream TLS trusts upstream.extra_ca_file only"
        );
    }
    usable
}

/// Append `cert` as one PEM `CERTIFICATE` block, 64 characters a line.
fn push_pem(cert: &CertificateDer<'_>, out: &mut String) {
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    // 48 bytes are exactly 64 base64 characters, so each chunk is one full line.
    for chunk in cert.as_ref().chunks(48) {
        base64::engine::general_purpose::STANDARD.encode_string(chunk, out);
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> rcgen::CertifiedKey<rcgen::KeyPair> {
        rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap()
    }

    fn pem_of(certs: &[&CertificateDer<'_>]) -> String {
        let mut text = String::new();
        for cert in certs {
            push_pem(cert, &mut text);
        }
        text
    }

    fn file_with(contents: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("extra.pem");
        std::fs::write(&path, contents).unwrap();
        (dir, path)
    }

    #[test]
    fn pem_blocks_round_trip_in_64_character_lines() {
        for len in [1, 47, 48, 49, 96, 1000] {
            let der: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let text = pem_of(&[&CertificateDer::from(der.clone())]);
            assert!(text.lines().all(|line| line.len() <= 64), "{text}");
            let parsed: Vec<_> = CertificateDer::pem_slice_iter(text.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(parsed, vec![CertificateDer::from(der)]);
        }
    }

    #[test]
    fn the_bundle_holds_platform_then_extra_roots_and_goes_away_on_drop() {
        let platform = self_signed("platform.example");
        let extra = self_signed("extra.example");
        let key_pem = extra.signing_key.serialize_pem();
        // A key kept in the same file is skipped, not an error.
        let contents = format!("{}{key_pem}", pem_of(&[extra.cert.der()]));
        let (_dir, path) = file_with(contents.as_bytes());

        let roots = UpstreamRoots::write(
            vec![platform.cert.der().clone()],
            read_extra(&path).unwrap(),
        )
        .unwrap();
        assert_eq!((roots.platform, roots.extra), (1, 1));
        let written = std::fs::read(roots.path()).unwrap();
        let certs: Vec<_> = CertificateDer::pem_slice_iter(&written)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            certs,
            vec![platform.cert.der().clone(), extra.cert.der().clone()]
        );
        let mut store = RootCertStore::empty();
        load_ca_file_into_store(roots.path(), &mut store).unwrap();
        assert_eq!(store.len(), 2);

        let bundle = PathBuf::from(roots.path());
        drop(roots);
        assert!(!bundle.exists(), "the bundle is removed with its owner");
    }

    #[test]
    fn the_platform_roots_are_loaded() {
        let extra = self_signed("extra.example");
        let (_dir, path) = file_with(pem_of(&[extra.cert.der()]).as_bytes());
        let roots = UpstreamRoots::build(&path).unwrap();
        assert_eq!(roots.extra, 1);
        let mut store = RootCertStore::empty();
        load_ca_file_into_store(roots.path(), &mut store).unwrap();
        assert_eq!(store.len(), roots.platform + 1);
    }

    #[test]
    fn unusable_files_are_refused_with_their_path() {
        let good = self_signed("good.example");
        let junk_der = CertificateDer::from(b"not a certificate, but valid base64".to_vec());
        let missing = tempfile::tempdir().unwrap().path().join("missing.pem");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"hello, no PEM here\n".to_vec(), "holds no PEM CERTIFICATE"),
            (
                good.signing_key.serialize_pem().into_bytes(),
                "holds no PEM CERTIFICATE",
            ),
            (
                b"-----BEGIN CERTIFICATE-----\n!!! not base64 !!!\n-----END CERTIFICATE-----\n"
                    .to_vec(),
                "is not a valid PEM file: a section is not valid base64",
            ),
            (
                b"-----BEGIN CERTIFICATE-----\nMIIB\n".to_vec(),
                "is not a valid PEM file: a section has no END line",
            ),
            (
                pem_of(&[good.cert.der(), &junk_der]).into_bytes(),
                "certificate 2 in",
            ),
        ];
        for (contents, expected) in cases {
            let (_dir, path) = file_with(&contents);
            let error = read_extra(&path).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
            assert!(error.contains(&path.display().to_string()), "{error}");
            assert!(!error.contains("!!!"), "the content is not echoed: {error}");
        }
        let (_dir, huge) = file_with(&vec![b'#'; (MAX_FILE_BYTES + 1) as usize]);
        let error = read_extra(&huge).unwrap_err();
        assert!(matches!(error, UpstreamCaError::TooLarge { .. }), "{error}");
        let error = read_extra(&missing).unwrap_err();
        assert!(matches!(error, UpstreamCaError::Read { .. }), "{error}");
        assert!(error.to_string().contains("missing.pem"), "{error}");
    }
}
