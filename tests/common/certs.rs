//! Certificates made at run time (rcgen) for the TLS tests: a CA, a server certificate for
//! `localhost` and 127.0.0.1 signed by it, and client certificates with a chosen common name.
//! Written as PEM files into a temporary directory; no private key is ever committed.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate authority that signs server and client certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// PEM of the CA certificate.
    pub pem: String,
}

/// A certificate and its key, in PEM.
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-sign the CA");
        let pem = issuer.pem();
        TestCa { issuer, pem }
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self) -> Issued {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server names");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate whose subject common name is `common_name`.
    pub fn client(&self, common_name: &str) -> Issued {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// The PEM files of a TLS setup in a temporary directory (deleted when dropped).
pub struct TlsFiles {
    /// The directory holding every file.
    pub dir: tempfile::TempDir,
    /// The CA that signed the server (and client) certificates.
    pub ca: TestCa,
    /// `ca.pem`: what clients trust.
    pub ca_path: PathBuf,
    /// `server.pem`.
    pub cert_path: PathBuf,
    /// `server.key`.
    pub key_path: PathBuf,
}

impl TlsFiles {
    /// A new CA and a server certificate signed by it, written out.
    pub fn new() -> TlsFiles {
        let dir = tempfile::tempdir().expect("temp dir for certificates");
        let ca = TestCa::new("NeuroGraph test CA");
        let server = ca.server();
        let ca_path = write(dir.path(), "ca.pem", &ca.pem);
        let cert_path = write(dir.path(), "server.pem", &server.cert_pem);
        let key_path = write(dir.path(), "server.key", &server.key_pem);
        TlsFiles {
            dir,
            ca,
            ca_path,
            cert_path,
            key_path,
        }
    }

    /// Writes `contents` to `name` in the directory and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        write(self.dir.path(), name, contents)
    }

    /// The path of `name` in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write a PEM file");
    path
}
