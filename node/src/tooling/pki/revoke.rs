//! Revoking a certificate of the development PKI: its CA's revocation list, written
//! anew with the certificate added.

use super::*;
use std::{
    fs,
    path::{Path, PathBuf},
};
use time::{Duration, OffsetDateTime};

/// What [`revoke`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// The revoked certificate's serial number, hexadecimal.
    pub serial: String,
    /// How many certificates the list revokes now.
    pub revoked: usize,
    /// The list's number (one more than the list it replaced).
    pub number: u64,
    /// Whether the certificate was already on the list.
    pub already: bool,
}

/// How long a revocation list written by [`revoke`] says it is current.
const CRL_DAYS: i64 = 30;

fn read_text(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path)
        .map_err(|e| PkiError::Invalid(format!("{}: cannot read: {e}", path.display())))
}

/// The subject, issuer and serial number of the first certificate of a PEM file.
fn names_of(path: &Path) -> Result<(String, String, Vec<u8>), PkiError> {
    use x509_parser::prelude::{FromDer as _, X509Certificate};
    let certs = crate::grpc::tls::load_certs(path).map_err(|e| PkiError::Invalid(e.to_string()))?;
    let (_, cert) = X509Certificate::from_der(&certs[0]).map_err(|e| {
        PkiError::Invalid(format!(
            "{}: is not a valid X.509 certificate: {e}",
            path.display()
        ))
    })?;
    Ok((
        cert.subject().to_string(),
        cert.issuer().to_string(),
        cert.raw_serial().to_vec(),
    ))
}

/// Adds the certificate in `cert` to the revocation list `crl` of the CA in `ca_cert`
/// and `ca_key` (a CA of the development PKI), writing the list anew, signed and
/// numbered after the one it replaces; the list is created when `crl` does not exist.
/// Nodes that name `crl` in `tls.crls` refuse the certificate from their next
/// `adep certs reload`.
pub fn revoke(
    ca_cert: &Path,
    ca_key: &Path,
    cert: &Path,
    crl: &Path,
) -> Result<Revocation, PkiError> {
    use x509_parser::prelude::{CertificateRevocationList, FromDer as _};
    let (ca_subject, _, _) = names_of(ca_cert)?;
    let (_, issuer, serial) = names_of(cert)?;
    if issuer != ca_subject {
        return Err(PkiError::Invalid(format!(
            "{} was issued by {issuer}, not by this CA ({ca_subject})",
            cert.display()
        )));
    }
    let common_name = ca_subject
        .split(", ")
        .find_map(|part| part.strip_prefix("CN="))
        .ok_or_else(|| {
            PkiError::Invalid(format!("{}: the CA has no common name", ca_cert.display()))
        })?;
    let ca = Ca::from_pem(common_name, &read_text(ca_cert)?, &read_text(ca_key)?)?;

    let now = OffsetDateTime::now_utc();
    let mut revoked: Vec<rcgen::RevokedCertParams> = Vec::new();
    let mut number = 1u64;
    if crl.exists() {
        let lists =
            crate::grpc::tls::load_crls(crl).map_err(|e| PkiError::Invalid(e.to_string()))?;
        let bad = |why: String| PkiError::Invalid(format!("{}: {why}", crl.display()));
        let [list] = lists.as_slice() else {
            return Err(bad("holds more than one revocation list".into()));
        };
        if list.issuer != ca_subject {
            return Err(bad(format!(
                "is the list of {}, not of this CA",
                list.issuer
            )));
        }
        let (_, parsed) = CertificateRevocationList::from_der(&list.der)
            .map_err(|e| bad(format!("is not a valid certificate revocation list: {e}")))?;
        number = parsed
            .crl_number()
            .and_then(|n| u64::try_from(n).ok())
            .map_or(1, |n| n.saturating_add(1));
        for entry in parsed.iter_revoked_certificates() {
            revoked.push(rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(entry.raw_serial()),
                revocation_time: OffsetDateTime::from_unix_timestamp(
                    entry.revocation_date.timestamp(),
                )
                .unwrap_or(now),
                reason_code: None,
                invalidity_date: None,
            });
        }
    }
    let already = revoked
        .iter()
        .any(|r| r.serial_number.as_ref() == serial.as_slice());
    if !already {
        revoked.push(rcgen::RevokedCertParams {
            serial_number: rcgen::SerialNumber::from_slice(&serial),
            revocation_time: now,
            reason_code: None,
            invalidity_date: None,
        });
    }
    let listed = revoked.len();
    write_list(&ca, revoked, number, crl)?;
    Ok(Revocation {
        serial: serial.iter().map(|b| format!("{b:02x}")).collect(),
        revoked: listed,
        number,
        already,
    })
}

/// Writes `ca`'s revocation list at `crl`, numbered `number`, revoking `revoked`: in
/// full or not at all, so that a node reloading meanwhile reads the old list or the
/// new one, never half of one. `adep pki init` writes each CA's list empty (number
/// 1), so that the nodes name it in `tls.crls` from the start.
pub(super) fn write_list(
    ca: &Ca,
    revoked: Vec<rcgen::RevokedCertParams>,
    number: u64,
    crl: &Path,
) -> Result<(), PkiError> {
    let now = OffsetDateTime::now_utc();
    let params = rcgen::CertificateRevocationListParams {
        this_update: now - Duration::minutes(5),
        next_update: now + Duration::days(CRL_DAYS),
        crl_number: rcgen::SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let list = params.signed_by(&ca.issuer)?;
    let mut partial = crl.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    write(&partial, &list.pem()?, false)?;
    fs::rename(&partial, crl).map_err(|source| PkiError::Write {
        path: crl.to_owned(),
        cause: source,
    })
}
