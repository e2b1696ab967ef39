//! Test signing: a fresh self-signed code-signing certificate (openssl) and an
//! Authenticode signature on the driver image (osslsigncode), verified against that
//! certificate.
//!
//! Test-signed drivers load only on machines with test signing enabled
//! (`bcdedit /set testsigning on`); production drivers need Microsoft's attestation or
//! WHQL signature. The private key lives in a scratch directory and is deleted after
//! signing: only the public certificate (`.cer`, DER) is packaged.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

use crate::tools::run;

/// Subject of the generated test certificate.
pub const TEST_CERT_SUBJECT: &str = "/CN=FlushGuard Test Signing (not for production)";

/// A generated certificate and key (PEM), plus the certificate in DER form.
#[derive(Debug, Clone)]
pub struct TestCertificate {
    /// Certificate, PEM (for osslsigncode).
    pub cert_pem: PathBuf,
    /// Private key, PEM (unencrypted; scratch only).
    pub key_pem: PathBuf,
    /// Certificate, DER (`.cer`, what Windows' certutil imports).
    pub cer: PathBuf,
}

/// Generates an RSA-3072 / SHA-256 self-signed certificate valid for 90 days, with
/// `keyUsage=digitalSignature` and `extendedKeyUsage=codeSigning`, in `dir`.
///
/// # Errors
/// openssl is missing or fails.
pub fn make_test_certificate(dir: &Path, cer_name: &str) -> Result<TestCertificate> {
    let cert_pem = dir.join("test-cert.pem");
    let key_pem = dir.join("test-key.pem");
    let cer = dir.join(cer_name);
    let mut request = Command::new("openssl");
    request
        .args([
            "req", "-x509", "-newkey", "rsa:3072", "-sha256", "-days", "90", "-nodes",
        ])
        .args(["-subj", TEST_CERT_SUBJECT])
        .args(["-addext", "keyUsage=critical,digitalSignature"])
        .args(["-addext", "extendedKeyUsage=codeSigning"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key_pem)
        .arg("-out")
        .arg(&cert_pem);
    run(&mut request)?;
    let mut to_der = Command::new("openssl");
    to_der
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert_pem)
        .arg("-out")
        .arg(&cer);
    run(&mut to_der)?;
    Ok(TestCertificate {
        cert_pem,
        key_pem,
        cer,
    })
}

/// Signs `input` into `output` (Authenticode, SHA-256, description "FlushGuard").
///
/// # Errors
/// osslsigncode is missing or fails.
pub fn sign(input: &Path, output: &Path, certificate: &TestCertificate) -> Result<()> {
    let mut command = Command::new("osslsigncode");
    command
        .arg("sign")
        .arg("-certs")
        .arg(&certificate.cert_pem)
        .arg("-key")
        .arg(&certificate.key_pem)
        .args(["-h", "sha256", "-n", "FlushGuard", "-in"])
        .arg(input)
        .arg("-out")
        .arg(output);
    run(&mut command)?;
    Ok(())
}

/// Verifies the Authenticode signature of `image` against the DER certificate `cer`
/// (converted to PEM in `scratch`); returns osslsigncode's report.
///
/// # Errors
/// Verification fails (non-zero exit or no "Signature verification: ok" line).
pub fn verify(image: &Path, cer: &Path, scratch: &Path) -> Result<String> {
    let ca_pem = scratch.join("verify-ca.pem");
    let mut to_pem = Command::new("openssl");
    to_pem
        .args(["x509", "-inform", "DER", "-in"])
        .arg(cer)
        .arg("-out")
        .arg(&ca_pem);
    run(&mut to_pem)?;
    let mut command = Command::new("osslsigncode");
    command
        .args(["verify", "-CAfile"])
        .arg(&ca_pem)
        .arg("-in")
        .arg(image);
    let output = run(&mut command)?;
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    if !report
        .lines()
        .any(|line| line.trim() == "Signature verification: ok")
    {
        bail!("osslsigncode verify did not report 'Signature verification: ok':\n{report}");
    }
    Ok(report)
}
